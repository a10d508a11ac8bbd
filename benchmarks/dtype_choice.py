"""Is system.dtype=auto right on this CPU? The probe's choice against the real training speed.

    python benchmarks/dtype_choice.py                       # README CPU run, cpu_fast preset, small model
    python benchmarks/dtype_choice.py --iters 100 --presets readme

For each preset, three runs of the real training command, interleaved: system.dtype=auto with an
empty probe cache (so the probe measures; its figures and time come from the start record), then
float32 and bfloat16 explicitly. Each run's ms/iter is the median of its log lines after the first
--warmup iterations. The choice is right when it is the precision whose real steps were faster
(or within 5%: the probe leaves ties to float32). Prints a table and writes JSON to
benchmarks/results/dtype_choice.json.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from harness import RESULTS, machine, markdown_table, run_training, write_json

PRESETS = {
    "readme": [],
    "cpu_fast": ["experiment=shakespeare_char_cpu_fast", "time_budget_s=null"],
    "small": ["model=small", "dataset.batch_size=64", "dataset.block_size=256"],
}
ITERS = {"readme": 150, "cpu_fast": 80, "small": 8}


def train(overrides: list[str], iters: int, warmup: int, data_dir: Path, env: dict[str, str]) -> dict:
    """Run the training command; the start record and the median ms/iter after the warm-up."""
    with tempfile.TemporaryDirectory() as run_dir:
        log_interval = max(1, min(10, iters // 8))
        timed = [
            f"max_iters={iters}",
            f"eval_interval={iters + 1}",
            "eval_iters=1",
            "eval_at_start=false",
            "always_save_checkpoint=false",
            f"log_interval={log_interval}",
            f"dataset.data_dir={data_dir}",
        ]
        records, _ = run_training([*overrides, *timed], Path(run_dir), env=env)
    start = next(r for r in records if r["event"] == "start")
    steps = [r["ms_per_iter"] for r in records if r["event"] == "train" and r["iter"] > warmup]
    return {"start": start, "ms_per_iter": statistics.median(steps)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", choices=list(PRESETS), default=list(PRESETS))
    parser.add_argument("--iters", type=int, help="iterations per run (default: per preset)")
    parser.add_argument("--out", type=Path, default=RESULTS / "dtype_choice.json")
    args = parser.parse_args()

    cpu = machine()
    print(f"CPU: {cpu}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        for name in args.presets:
            iters = args.iters or ITERS[name]
            warmup = max(1, iters // 4)
            env = {"NANOGPT_CACHE_DIR": str(Path(tmp) / f"cache-{name}")}
            auto = train(PRESETS[name], iters, warmup, data_dir, env)
            real = {d: train([*PRESETS[name], f"system.dtype={d}"], iters, warmup, data_dir, env)["ms_per_iter"] for d in ("float32", "bfloat16")}
            probe = auto["start"]["dtype_probe"]
            faster = "bfloat16" if real["float32"] >= 1.05 * real["bfloat16"] else "float32"
            rows.append(
                {
                    "preset": name,
                    "choice": probe["dtype"],
                    "probe_s": probe["seconds"],
                    "probe_float32_ms": probe["float32_ms"],
                    "probe_bfloat16_ms": probe["bfloat16_ms"],
                    "real_float32_ms": real["float32"],
                    "real_bfloat16_ms": real["bfloat16"],
                    "auto_ms": auto["ms_per_iter"],
                    "right": probe["dtype"] == faster or abs(real["float32"] / real["bfloat16"] - 1) < 0.05,
                }
            )
            print(f"  {name}: done", flush=True)

    header = ["preset", "probe: float32 / bfloat16 ms", "probe time", "choice", "real ms/iter float32 / bfloat16", "auto ms/iter", "right"]
    table = [
        [
            r["preset"],
            f"{r['probe_float32_ms']:.1f} / {r['probe_bfloat16_ms']:.1f}",
            f"{r['probe_s']:.2f} s",
            r["choice"],
            f"{r['real_float32_ms']:.1f} / {r['real_bfloat16_ms']:.1f}",
            f"{r['auto_ms']:.1f}",
            "yes" if r["right"] else "NO",
        ]
        for r in rows
    ]
    print("\n" + markdown_table(header, table, align="lrrlrrl"))
    write_json(args.out, {"cpu": cpu, "rows": rows})
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
