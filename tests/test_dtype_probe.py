"""system.dtype=auto on a CPU: chosen by measuring the run's shapes, cached, obeyed when explicit,
kept by a resumed run."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch

from nanogpt import dtype_probe
from nanogpt.dtype_probe import ProbePlan, cache_path, choose_cpu_dtype, measure_step_ms, probe_plan
from tests.conftest import train_here

BUSY_CHECK = dtype_probe.machine_busy  # the real check, before a fixture replaces it
README_MODEL = dict(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128, dropout=0.0, bias=False)
SMALL_MODEL = dict(vocab_size=65, block_size=256, n_layer=6, n_head=6, n_embd=384, dropout=0.2, bias=False)


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("NANOGPT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(dtype_probe, "machine_busy", lambda: None)  # the suite's own load must not matter
    return tmp_path / "cache"


def fake_times(monkeypatch: pytest.MonkeyPatch, float32_ms: float, bfloat16_ms: float) -> list[ProbePlan]:
    calls: list[ProbePlan] = []

    def measure(model_args: dict, plan: ProbePlan) -> dict[str, float]:
        calls.append(plan)
        return {"float32": float32_ms, "bfloat16": bfloat16_ms}

    monkeypatch.setattr(dtype_probe, "measure_step_ms", measure)
    return calls


@pytest.mark.parametrize(
    "float32_ms, bfloat16_ms, expected",
    [(30.0, 15.0, "bfloat16"), (30.0, 60.0, "float32"), (30.0, 29.0, "float32"), (31.5, 30.0, "bfloat16")],
)
def test_the_faster_precision_is_chosen_and_cached(monkeypatch, cache_dir, float32_ms, bfloat16_ms, expected):
    calls = fake_times(monkeypatch, float32_ms, bfloat16_ms)
    probe = choose_cpu_dtype(README_MODEL, 12)
    assert (probe.dtype, probe.float32_ms, probe.bfloat16_ms, probe.cached) == (expected, float32_ms, bfloat16_ms, False)
    assert len(calls) == 1
    again = choose_cpu_dtype(README_MODEL, 12)  # same machine and shapes: no second measurement
    assert (again.dtype, again.cached, len(calls)) == (expected, True, 1)
    choose_cpu_dtype({**README_MODEL, "n_embd": 256}, 12)  # other shapes: measured
    assert len(calls) == 2
    assert "float32" in probe.describe() and f"chose {expected}" in probe.describe()


def test_a_damaged_or_unwritable_cache_only_means_measuring_again(monkeypatch, cache_dir):
    calls = fake_times(monkeypatch, 30.0, 10.0)
    cache_dir.mkdir()
    cache_path().write_text("{not json")
    assert choose_cpu_dtype(README_MODEL, 12).dtype == "bfloat16"
    assert json.loads(cache_path().read_text())["format"] == dtype_probe.CACHE_FORMAT  # replaced by a good one
    monkeypatch.setenv("NANOGPT_CACHE_DIR", "/proc/no-such-place")
    assert choose_cpu_dtype(README_MODEL, 12).dtype == "bfloat16"
    assert len(calls) == 2


def test_a_measurement_on_a_busy_machine_is_provisional_until_a_quiet_start(monkeypatch, cache_dir):
    """A busy machine measures once and reuses that (not at every start, seconds each); the first
    quiet start measures again and keeps that for good."""
    calls = fake_times(monkeypatch, 30.0, 10.0)
    cores = len(os.sched_getaffinity(0))
    monkeypatch.setattr(dtype_probe, "machine_busy", BUSY_CHECK)
    monkeypatch.setattr(os, "getloadavg", lambda: (cores + 3.0, 0.0, 0.0))
    assert dtype_probe.machine_busy() == f"the machine was busy (load {cores + 3.0:.1f} on {cores} cores)"
    first = choose_cpu_dtype(README_MODEL, 12)
    assert first.dtype == "bfloat16" and not first.cached and "kept as provisional" in first.describe()
    again = choose_cpu_dtype(README_MODEL, 12)  # still busy: the provisional measurement serves
    assert again.cached and "measured while the machine was busy" in again.describe() and len(calls) == 1
    monkeypatch.setattr(os, "getloadavg", lambda: (cores + 0.9, 0.0, 0.0))  # this process's own load
    assert dtype_probe.machine_busy() is None
    assert choose_cpu_dtype(README_MODEL, 12).cached is False and choose_cpu_dtype(README_MODEL, 12).cached is True
    assert len(calls) == 2
    monkeypatch.setattr(os, "getloadavg", lambda: (cores + 3.0, 0.0, 0.0))  # busy again: the quiet measurement stands
    assert choose_cpu_dtype(README_MODEL, 12).not_cached == "" and len(calls) == 2


def test_probe_plan_times_the_whole_batch_or_two_sizes_of_full_rows():
    # The README CPU run's micro-batch (12 x 64) is cheap: timed as it is.
    assert probe_plan(README_MODEL, 12) == ProbePlan(seq_len=64, rows=(12,), step_rows=12.0)
    # `small` (64 x 256) is not: full-context rows at two sizes, the step extrapolated.
    plan = probe_plan(SMALL_MODEL, 64)
    assert plan.seq_len == 256 and plan.step_rows == 64.0 and len(plan.rows) == 2 and plan.rows[0] < plan.rows[1] < 64
    # GPT-2's context of 1024 does not fit in the budget: shorter rows, the same token count.
    gpt2 = dict(vocab_size=50304, block_size=1024, n_layer=12, n_head=12, n_embd=768, dropout=0.0, bias=True)
    plan = probe_plan(gpt2, 12)
    assert plan.seq_len == dtype_probe.MIN_TOKENS and plan.step_rows * plan.seq_len == 12 * 1024


def test_two_sizes_are_extrapolated_along_a_line(monkeypatch):
    # A fixed cost (casting the weights) plus a cost per row: the step pays the fixed cost once.
    def best_times(config, plan):
        return {"float32": [0.002 * r for r in plan.rows], "bfloat16": [0.05 + 0.001 * r for r in plan.rows]}

    monkeypatch.setattr(dtype_probe, "_best_times", best_times)
    times = measure_step_ms(SMALL_MODEL, ProbePlan(seq_len=256, rows=(1, 2), step_rows=64.0))
    assert times["float32"] == pytest.approx(128.0) and times["bfloat16"] == pytest.approx(114.0)


def test_a_real_measurement_leaves_the_run_s_random_streams_alone():
    torch.manual_seed(1)
    expected = torch.rand(3)
    torch.manual_seed(1)
    times = measure_step_ms({**README_MODEL, "dropout": 0.1}, ProbePlan(seq_len=16, rows=(1, 2), step_rows=4.0))
    assert torch.equal(torch.rand(3), expected)
    assert all(math.isfinite(t) and t > 0 for t in times.values())


def _start_record(run_dir: Path) -> dict:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if r["event"] == "start"][-1]


def _set_cached_choice(cache_dir: Path, key: str, dtype: str) -> None:
    """A cache whose entry for `key` says `dtype` is faster."""
    times = {"float32_ms": 20.0, "bfloat16_ms": 10.0} if dtype == "bfloat16" else {"float32_ms": 10.0, "bfloat16_ms": 20.0}
    cache = {"format": dtype_probe.CACHE_FORMAT, "entries": {key: {"dtype": dtype, **times}}}
    cache_dir.mkdir(exist_ok=True)
    (cache_dir / "dtype_probe.json").write_text(json.dumps(cache))


def test_training_follows_the_measurement_obeys_an_explicit_dtype_and_a_resume_keeps_its_dtype(tmp_path, data_dir, cache_dir):
    """In this process (the trainer decides; the command only composes its config), with the cache
    in cache_dir."""
    common = [
        f"dataset.data_dir={data_dir}",
        "max_iters=2",
        "eval_interval=2",
        "eval_iters=1",
        "log_interval=1",
        "dataset.batch_size=2",
        "dataset.block_size=16",
        "model.n_layer=1",
        "model.n_head=2",
        "model.n_embd=32",
    ]

    def train(name: str, *extra: str) -> dict:
        train_here(tmp_path / name, *common, *extra)
        return _start_record(tmp_path / name)

    first = train("measured")  # measures (and fills the cache)
    assert first["dtype_probe"]["cached"] is False and first["dtype"] == first["dtype_probe"]["dtype"]
    for dtype in ("bfloat16", "float32"):
        _set_cached_choice(cache_dir, first["dtype_probe"]["key"], dtype)
        start = train(f"cached-{dtype}")
        assert (start["dtype"], start["dtype_probe"]["cached"]) == (dtype, True)
    explicit = train("explicit", "system.dtype=bfloat16")  # the cache says float32 now
    assert explicit["dtype"] == "bfloat16" and "dtype_probe" not in explicit

    # A run that trained in bfloat16 continues in bfloat16, whatever the cache says now.
    train_here(tmp_path / "cached-bfloat16", "init_from=resume", f"run_dir={tmp_path / 'cached-bfloat16'}", "max_iters=4")
    resumed = _start_record(tmp_path / "cached-bfloat16")
    assert resumed["iter"] == 2 and resumed["dtype"] == "bfloat16" and "dtype_probe" not in resumed
