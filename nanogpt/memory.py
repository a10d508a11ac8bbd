"""What a run or a sampling batch will need in memory, estimated from its sizes before anything is
allocated, and refused in one line where the machine (or the container's cgroup, or the GPU) does
not have it: the kernel's OOM killer would otherwise end the process mid-way, with no message and
its lock files left (`system.check_memory=false` tries anyway).

The estimates count what dominates and round up: the weights, gradients and optimizer state (16
bytes a parameter for float32 training with AdamW), the activations kept for the backward pass
(about 18 numbers per token per layer, and one attention score per pair of positions per head),
the logits and their gradient, and for sampling the KV cache. docs/benchmarks.md ("Memory
estimates") holds them against measured peaks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nanogpt.errors import ConfigError

GIB = 2**30
# torch, its libraries and the interpreter, before the first tensor.
PROCESS_BYTES = GIB // 2


@dataclass
class Estimate:
    """Bytes by what needs them, and how to need less of the largest."""

    parts: dict[str, int] = field(default_factory=dict)
    fixes: dict[str, str] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    def describe(self) -> str:
        shown = [f"{name} {gib(size)}" for name, size in sorted(self.parts.items(), key=lambda item: -item[1]) if size >= 0.05 * GIB]
        return ", ".join(shown) or "all small"


def gib(size: float) -> str:
    return f"{size / GIB:.1f} GiB"


def parameter_count(args: dict[str, Any]) -> int:
    """The parameters of a GPT with these GPTConfig arguments, counted without building it."""
    c, layers, vocab = args["n_embd"], args["n_layer"], args["vocab_size"]
    bias = bool(args.get("bias", False))
    norm = c * (2 if bias and args.get("norm", "layernorm") == "layernorm" else 1)  # RMSNorm has no bias
    per_layer = 12 * c * c + (9 * c if bias else 0) + 2 * norm  # attention and MLP matrices, their biases, two norms
    count = vocab * c + layers * per_layer + norm  # token embedding, blocks, final norm
    if args.get("position", "learned") == "learned":
        count += args["block_size"] * c
    if not args.get("tie_embeddings", True):
        count += vocab * c
    return count


def element_bytes(dtype: str) -> int:
    return 2 if dtype in ("bfloat16", "float16") else 4


def training(args: dict[str, Any], batch_size: int, accumulation: int, dtype: str, shards: int = 1, eval_only: bool = False) -> Estimate:
    """A training run's memory on one rank: `shards` ranks share the weights and their state (FSDP)."""
    params = parameter_count(args)
    tokens, c, e = batch_size * args["block_size"], args["n_embd"], element_bytes(dtype)
    smaller_batch = "lower dataset.batch_size (raising gradient_accumulation_steps keeps the batch)"
    if eval_only:
        return Estimate(
            {"weights": 4 * params, "logits": 4 * tokens * args["vocab_size"], "process": PROCESS_BYTES},
            {"weights": "choose a smaller model", "logits": smaller_batch},
        )
    attention = batch_size * args["n_head"] * args["block_size"] ** 2
    activations = f"activations of a micro-batch of {batch_size} x {args['block_size']}"
    return Estimate(
        {
            "weights, gradients and optimizer state": 16 * params // shards,
            activations: args["n_layer"] * (18 * c * tokens + attention) * e,
            "logits and their gradient": 3 * 4 * tokens * args["vocab_size"],
            "batch offsets": 8 * batch_size * accumulation,
            "process": PROCESS_BYTES,
        },
        {
            "weights, gradients and optimizer state": "choose a smaller model (or shard it: system.strategy=fsdp on several ranks)",
            activations: smaller_batch,
            "logits and their gradient": smaller_batch,
            "batch offsets": "lower gradient_accumulation_steps",
        },
    )


def sampling(args: dict[str, Any], num_samples: int, length: int, cache_dtype: str) -> Estimate:
    """Generating `num_samples` texts of up to `length` tokens: the KV cache, the logits, the ids."""
    c, e = args["n_embd"], element_bytes(cache_dtype)
    parts = {
        f"the KV cache of {num_samples} samples": 2 * args["n_layer"] * num_samples * args["block_size"] * c * e,
        "logits": 3 * 4 * num_samples * args["vocab_size"],
        "token ids": 2 * 8 * num_samples * length,
    }
    return Estimate(parts, {name: "lower num_samples" for name in parts})


def available(device: str) -> tuple[int, str] | None:
    """The bytes this process may still allocate on `device`, and where that figure comes from; None
    where it cannot tell (Apple's GPU shares the system's memory in ways no call reports)."""
    if device.startswith("cuda"):
        import torch

        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return free, f"free on {device}"
    if device != "cpu":
        return None
    found = [(size, "available on this machine") for size in [_meminfo_available()] if size is not None]
    found += [(size, "left in this container's memory limit") for size in [_cgroup_left()] if size is not None]
    return min(found, default=None)


def check(estimate: Estimate, device: str, what: str) -> None:
    """Refuse (ConfigError) `what` where its estimate exceeds what `device` has available, saying how
    to need less of its largest part."""
    have = available(device)
    if have is None or estimate.total <= have[0]:
        return
    largest = max(estimate.parts, key=lambda name: estimate.parts[name])
    fix = estimate.fixes.get(largest, "ask for less")
    raise ConfigError(
        f"{what} needs about {gib(estimate.total)} ({estimate.describe()}), more than the {gib(have[0])} {have[1]}; "
        f"{fix}, or set system.check_memory=false to try anyway"
    )


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_left() -> int | None:
    """The memory limit of this process's cgroup (v2, else v1) less what it uses, or None without one."""
    for limit_file, usage_file in (("memory.max", "memory.current"), ("memory.limit_in_bytes", "memory.usage_in_bytes")):
        for root in _cgroup_folders():
            try:
                limit = (root / limit_file).read_text().strip()
                usage = int((root / usage_file).read_text().strip())
            except (OSError, ValueError):
                continue
            if limit == "max" or int(limit) >= 2**60:  # unlimited
                return None
            return max(0, int(limit) - usage)
    return None


def _cgroup_folders() -> list[Path]:
    """This process's cgroup folders under /sys/fs/cgroup (v2's one path, or v1's memory controller)."""
    folders = []
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if controllers == "" or "memory" in controllers.split(","):
                base = Path("/sys/fs/cgroup") / ("" if controllers == "" else "memory")
                folders.append(base / path.lstrip("/"))
    except (OSError, ValueError):
        pass
    return [folder for folder in folders if folder.is_dir()] + [Path("/sys/fs/cgroup")]
