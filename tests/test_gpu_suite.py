"""benchmarks/gpu.py --smoke: every section of the GPU suite runs on the CPU at tiny sizes and
records numbers, so that the one GPU run it is written for does not fail on a typo."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


def number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@pytest.mark.slow
def test_gpu_suite_smoke(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--smoke", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    result = json.loads((tmp_path / "gpu.json").read_text())
    assert result["suite"]["finished"] and result["suite"]["smoke"]
    for section in ("toolchain", "shakespeare_char", "gpt2_step", "sampling", "time_to_loss", "memory"):
        assert result[section]["status"] == "ok", (section, result[section])

    assert result["toolchain"]["torch"] and number(result["toolchain"]["compile_s"])

    a = result["shakespeare_char"]
    sides = [a["ours"]] + ([a["nanogpt"]] if result["suite"]["anchor"] else [])
    for side in sides:
        assert side["status"] == "ok", side
        for key in ("ms_per_iter", "tokens_per_sec", "first_iter_s", "val_loss", "mfu_device", "wall_s"):
            assert number(side[key]), (key, side)
    assert number(a["ours"]["peak_memory_mb"]) and a["ours"]["recompiles"] == 0
    if not result["suite"]["anchor"]:
        assert a["nanogpt"]["status"] == "skipped" and "nanoGPT" in a["nanogpt"]["reason"]

    for variant in ("compile", "no_compile"):
        part = result["gpt2_step"][variant]
        assert part["nanogpt"]["status"] == "skipped" and "CUDA" in part["nanogpt"]["reason"]
        assert all(number(part["ours"][key]) for key in ("ms_per_iter", "tokens_per_sec", "mfu_device", "peak_memory_mb"))

    sampling = result["sampling"]
    assert [row["batch"] for row in sampling["rows"]] == [1, 8]
    assert all(number(row["kv_tokens_per_s"]) and number(row["naive_tokens_per_s"]) for row in sampling["rows"])
    assert isinstance(sampling["greedy"]["identical"], bool) and number(sampling["greedy"]["matching_leading_tokens"])
    assert sampling["checkpoint"].startswith("ours-shakespeare_char")  # (a)'s model, not the fallback

    fast = result["time_to_loss"]
    assert number(fast["final_val_loss"]) and fast["target"] is None and fast["reached"] is None and fast["evals"]

    runs = {row["run"] for row in result["memory"]["rows"]}
    assert {"shakespeare_char.ours", "gpt2_step.compile.ours", "gpt2_step.no_compile.ours", "time_to_loss"} <= runs

    table = (tmp_path / "gpu.md").read_text()
    for heading in ("(a) shakespeare_char", "(c) GPT-2", "(d) Sampling", "(b) Time to val loss", "(e) Peak memory"):
        assert heading in table
    assert table in proc.stdout  # the table is printed at the end
