"""`system.dtype=auto` on a CPU: measure, for the run's own shapes, whether bfloat16 autocast
trains faster than float32, and pick float32 unless it does.

A CPU flag is not a measurement: an Intel Xeon with AVX512-BF16 runs this project's bfloat16
steps about 2x *slower* than float32, while an AMD EPYC with the same flag runs them 1.3-2.7x
faster. So the choice times what a training step spends its time on: one transformer block's
forward and backward, and the output head with its loss, each in both precisions, at the run's
width, context and batch (with fewer rows where the full batch would take long). The step's
estimate is n_layer blocks plus one head. The probe takes well under a second; its result is
cached per machine, torch version and shape, so that later runs (and resumes) decide alike.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from nanogpt.files import atomic_write_bytes
from nanogpt.model import Block, GPTConfig
from nanogpt.system import cpu_flags, cpu_model_name

# bfloat16 rounds activations to 8 bits of mantissa: take it only where it is clearly faster.
BF16_MIN_SPEEDUP = 1.05
# Work per timed call (a block and the head, forward + backward): ~20 ms on a 2-core CPU.
PROBE_FLOPS = 3e9
MIN_TOKENS = 32
REPEATS = 2
CACHE_FORMAT = 1


@dataclass(frozen=True)
class ProbePlan:
    """The probe's batches: `seq_len` tokens per row, timed at `rows` rows, and the run's
    micro-batch expressed in such rows (`step_rows`; more than `rows` where the full batch would
    take too long to time: the step is then extrapolated from the two sizes measured)."""

    seq_len: int
    rows: tuple[int, ...]
    step_rows: float


@dataclass(frozen=True)
class DtypeProbe:
    dtype: str  # the choice: "float32" or "bfloat16"
    float32_ms: float  # estimated forward + backward time of one micro-step (not the optimizer)
    bfloat16_ms: float
    cached: bool  # read from the cache instead of measured now
    key: str  # the cache entry's key (machine, torch, threads, shapes)
    seconds: float = 0.0  # what measuring took (0 when cached)
    not_cached: str = ""  # why a measurement is not kept for good ("": it is); of a cached one, that it was taken under load

    @property
    def speedup(self) -> float:
        return self.float32_ms / self.bfloat16_ms

    def describe(self) -> str:
        if self.cached:
            source = f"cached measurement{f' ({self.not_cached})' if self.not_cached else ''}, {cache_path()}"
        else:
            kept = f"not cached: {self.not_cached}" if self.not_cached else f"cached in {cache_path()}"
            source = f"measured in {self.seconds:.2f} s, {kept}; system.dtype=float32 skips the measurement"
        return (
            f"dtype=auto chose {self.dtype}: forward + backward at this run's shapes takes {self.float32_ms:.1f} ms in "
            f"float32, {self.bfloat16_ms:.1f} ms in bfloat16 ({self.speedup:.2f}x; bfloat16 needs {BF16_MIN_SPEEDUP:.2f}x; {source})"
        )

    def record(self) -> dict[str, Any]:
        """The fields of the run's `start` record."""
        return {"dtype_probe": {k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(self).items()}}


def choose_cpu_dtype(model_args: dict[str, Any], batch_size: int) -> DtypeProbe:
    """float32 or bfloat16 for training this model on this CPU, whichever is faster (cached). A
    measurement taken while other work competed for the cores is cached too, as provisional: a
    busy machine reuses it rather than paying the probe at every start, and the next quiet start
    measures again to replace it."""
    plan = probe_plan(model_args, batch_size)
    key = cache_key(model_args, plan)
    cached = _read_cache().get(key)
    busy = machine_busy()
    if cached is not None and (not cached.get("busy") or busy):
        note = f"measured while {cached['busy']}; a quiet start measures again" if cached.get("busy") else ""
        return DtypeProbe(cached["dtype"], cached["float32_ms"], cached["bfloat16_ms"], cached=True, key=key, not_cached=note)
    started = time.perf_counter()
    times = measure_step_ms(model_args, plan)
    dtype = "bfloat16" if times["float32"] >= BF16_MIN_SPEEDUP * times["bfloat16"] else "float32"
    probe = DtypeProbe(dtype, times["float32"], times["bfloat16"], cached=False, key=key, seconds=time.perf_counter() - started)
    entry = {"dtype": dtype, "float32_ms": probe.float32_ms, "bfloat16_ms": probe.bfloat16_ms, "measured": time.time(), "busy": busy}
    failure = _write_cache(key, entry)
    if failure:
        return replace(probe, not_cached=failure)
    return replace(probe, not_cached=f"kept as provisional: {busy}, so the next quiet start measures again") if busy else probe


def machine_busy() -> str | None:
    """Why timings taken now would not stand for this machine (other work competing for its
    cores), or None. Such a measurement still decides this run, but is not kept."""
    try:
        load = os.getloadavg()[0]
    except OSError:
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    # This process itself adds up to 1 to the load average.
    return f"the machine was busy (load {load:.1f} on {cores} cores)" if load > cores + 1 else None


def probe_plan(model_args: dict[str, Any], batch_size: int) -> ProbePlan:
    """Rows of the run's context length, as many as about PROBE_FLOPS of work allows (the whole
    micro-batch where it fits). Fewer rows than the run's must be two sizes: a bfloat16 step pays
    a fixed cost (casting the weights) that a small batch would overstate."""
    n_embd, block_size, vocab = model_args["n_embd"], model_args["block_size"], model_args["vocab_size"]
    flops_per_token = 6 * (12 * n_embd * n_embd + n_embd * vocab)  # forward + backward of a block and the head
    budget_tokens = max(MIN_TOKENS, int(PROBE_FLOPS // flops_per_token))
    seq_len = min(block_size, budget_tokens)
    step_rows = batch_size * block_size / seq_len
    rows = max(1, budget_tokens // seq_len)
    if rows >= step_rows == int(step_rows):
        return ProbePlan(seq_len, (int(step_rows),), step_rows)
    rows = max(2, rows)
    return ProbePlan(seq_len, (rows // 2, rows), step_rows)


def measure_step_ms(model_args: dict[str, Any], plan: ProbePlan) -> dict[str, float]:
    """Estimated milliseconds of a micro-step's forward + backward in each precision:
    n_layer x block + head with its loss, at plan.step_rows rows (a line through the two sizes
    measured, where there are two). Each size is timed REPEATS times, the best kept, precisions
    interleaved so that a burst of other load on the machine hits both."""
    with torch.random.fork_rng(devices=[]):  # the run's own weights and dropout draw from the global stream
        torch.manual_seed(0)
        best = _best_times(GPTConfig(**model_args), plan)
    estimates = {}
    for dtype, times in best.items():
        if len(plan.rows) == 1:
            estimates[dtype] = times[0]
        else:
            (r1, r2), (t1, t2) = plan.rows, times
            per_row = max(0.0, (t2 - t1) / (r2 - r1))  # never below zero, whatever the noise
            estimates[dtype] = t2 + per_row * (plan.step_rows - r2)
    return {dtype: seconds * 1000 for dtype, seconds in estimates.items()}


def _best_times(config: GPTConfig, plan: ProbePlan) -> dict[str, list[float]]:
    generator = torch.Generator().manual_seed(0)
    block = Block(config).train()
    head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
    x = torch.randn(max(plan.rows), plan.seq_len, config.n_embd, generator=generator)
    targets = torch.randint(config.vocab_size, (max(plan.rows) * plan.seq_len,), generator=generator)

    def timed(dtype: str, rows: int) -> float:
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if dtype == "bfloat16" else contextlib.nullcontext()
        inputs = x[:rows].detach().requires_grad_()
        start = time.perf_counter()
        with autocast:
            out = block(inputs)
        out.float().sum().backward()
        middle = time.perf_counter()
        with autocast:
            logits = head(inputs)
        F.cross_entropy(logits.float().view(-1, config.vocab_size), targets[: rows * plan.seq_len]).backward()
        end = time.perf_counter()
        block.zero_grad(set_to_none=True)
        head.zero_grad(set_to_none=True)
        return config.n_layer * (middle - start) + (end - middle)

    best = {"float32": [float("inf")] * len(plan.rows), "bfloat16": [float("inf")] * len(plan.rows)}
    for dtype in best:  # warm-up: first calls allocate and pick kernels
        timed(dtype, max(plan.rows))
    for _ in range(REPEATS):
        for dtype, times in best.items():
            for i, rows in enumerate(plan.rows):
                times[i] = min(times[i], timed(dtype, rows))
    return best


def cache_key(model_args: dict[str, Any], plan: ProbePlan) -> str:
    """What the measurement depends on: the CPU, the torch build, the threads and the shapes."""
    wanted = sorted(f for f in cpu_flags() if f.startswith(("avx", "amx", "fma")))
    machine = [cpu_model_name(), platform.machine(), wanted, torch.__version__, torch.get_num_threads()]
    shapes = [sorted(model_args.items()), asdict(plan)]
    return hashlib.sha256(json.dumps([machine, shapes], default=str).encode()).hexdigest()[:24]


def cache_path() -> Path:
    """NANOGPT_CACHE_DIR, else $XDG_CACHE_HOME/nanogpt, else ~/.cache/nanogpt."""
    folder = os.environ.get("NANOGPT_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "nanogpt"
    return Path(folder) / "dtype_probe.json"


def _read_cache() -> dict[str, Any]:
    try:
        cache = json.loads(cache_path().read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(cache, dict) or cache.get("format") != CACHE_FORMAT:
        return {}
    return {k: v for k, v in cache.get("entries", {}).items() if isinstance(v, dict) and v.get("dtype") in ("float32", "bfloat16")}


def _write_cache(key: str, entry: dict[str, Any]) -> str | None:
    """Add an entry; None, or why the cache could not be written (which only means measuring again
    next time)."""
    path = cache_path()
    entries = {**_read_cache(), key: entry}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, json.dumps({"format": CACHE_FORMAT, "entries": entries}, indent=1).encode())
    except OSError as exc:
        return f"{path} cannot be written ({exc.strerror or type(exc).__name__})"
    return None
