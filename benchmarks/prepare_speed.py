"""Preparing a corpus into GPT-2 token files: ours (streamed, every core) against nanoGPT's
recipe (the whole file read, split 90/10, each part encoded in one process with tiktoken's
encode_ordinary, the ids turned into a uint16 array and written), on the same corpus and machine.

    python benchmarks/prepare_speed.py                       # 200, 1,000 and 2,000 MB
    python benchmarks/prepare_speed.py --sizes 50 --baseline-max-mb 50

The corpus is tiny Shakespeare repeated to the size asked for (real English; repetition changes
nothing for a tokenizer without a cache). Each side runs in a fresh process, which reports its wall
time and peak resident memory (VmHWM: ru_maxrss would also count the memory of the process that
started it, which vfork() and exec() pass on); ours adds that of its largest worker process,
times the number of workers (an upper bound on their sum: the forked workers share most of it). Both sides' token files are compared byte for byte. The
baseline's memory grows with the corpus (a list of Python ints: about 12 bytes of RSS per byte of
text), so it runs only up to --baseline-max-mb. Prints a table and appends JSON to
benchmarks/results/prepare_speed.json.
"""

from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
from pathlib import Path

from harness import RESULTS, append_json, machine, markdown_table, run_command

from nanogpt.data.bundled import read_bundled
from nanogpt.data.encoding import worker_count

# nanoGPT's data/shakespeare/prepare.py, with GPT-2's encoding built from the package's ranks (the
# same tokens as tiktoken.get_encoding("gpt2"), offline).
BASELINE = """
import sys, time
import numpy as np
from nanogpt.data import gpt2_encoding
enc = gpt2_encoding()
start = time.perf_counter()
with open(sys.argv[1], "r", encoding="utf-8") as f:
    data = f.read()
n = len(data)
train_data, val_data = data[: int(n * 0.9)], data[int(n * 0.9) :]
train_ids, val_ids = enc.encode_ordinary(train_data), enc.encode_ordinary(val_data)
np.array(train_ids, dtype=np.uint16).tofile(sys.argv[2] + "/train.bin")
np.array(val_ids, dtype=np.uint16).tofile(sys.argv[2] + "/val.bin")
seconds = time.perf_counter() - start
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(seconds, hwm * 1024, 0, 0)
"""

OURS = """
import logging, resource, sys, time
logging.basicConfig(level=logging.WARNING)
from nanogpt.data import prepare
start = time.perf_counter()
prepare("corpus", sys.argv[2], sys.argv[1], 0.1, tokenizer="gpt2", force=True)
seconds = time.perf_counter() - start
from nanogpt.data.encoding import worker_count
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(seconds, hwm * 1024, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024, worker_count())
"""


def measure(script: str, corpus: Path, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    _, stdout = run_command([sys.executable, "-c", script, str(corpus), str(out)])
    seconds, own, worker, workers = stdout.split()[-4:]
    peak = int(own) + int(workers) * int(worker)
    return {
        "seconds": float(seconds),
        "peak_rss_bytes": peak,
        "process_rss_bytes": int(own),
        "worker_rss_bytes": int(worker),
        "workers": int(workers),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[200, 1000, 2000], help="corpus sizes, MB")
    parser.add_argument("--baseline-max-mb", type=int, default=1000, help="largest corpus the baseline runs on (about 12 GB of RSS per 1,000 MB)")
    parser.add_argument("--out", type=Path, default=RESULTS / "prepare_speed.json")
    args = parser.parse_args()

    text = read_bundled("tinyshakespeare.txt").decode()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size_mb in args.sizes:
            corpus = Path(tmp) / f"corpus{size_mb}.txt"
            with open(corpus, "w", encoding="utf-8") as f:
                for _ in range(-(-size_mb * 10**6 // len(text))):
                    f.write(text)
            mb = corpus.stat().st_size / 1e6
            row: dict = {"corpus_mb": round(mb, 1), "ours": measure(OURS, corpus, Path(tmp) / "ours")}
            if size_mb <= args.baseline_max_mb:
                row["baseline"] = measure(BASELINE, corpus, Path(tmp) / "base")
                same = all(
                    filecmp.cmp(Path(tmp) / "ours" / "corpus" / f"{s}.bin", Path(tmp) / "base" / f"{s}.bin", shallow=False) for s in ("train", "val")
                )
                row["identical_token_files"] = same
            for side in ("ours", "baseline"):
                if side in row:
                    row[side]["mb_per_s"] = mb / row[side]["seconds"]
            rows.append(row)
            corpus.unlink()

    print(f"\nPreparing GPT-2 token files: {machine()}, {worker_count()} workers\n")
    header = ["corpus", "nanoGPT recipe, 1 process", "ours, streamed", "speed-up", "peak RSS, nanoGPT recipe", "peak RSS, ours", "same files"]
    table = []
    for row in rows:
        ours, base = row["ours"], row.get("baseline")
        gb = lambda b: f"{b / 1e9:.2f} GB"  # noqa: E731
        table.append(
            [
                f"{row['corpus_mb']:,.0f} MB",
                f"{base['mb_per_s']:.1f} MB/s" if base else "not run",
                f"{ours['mb_per_s']:.1f} MB/s",
                f"{ours['mb_per_s'] / base['mb_per_s']:.2f}x" if base else "-",
                gb(base["peak_rss_bytes"]) if base else "-",
                gb(ours["peak_rss_bytes"]),
                row.get("identical_token_files", "-"),
            ]
        )
    print(markdown_table(header, table, align="lllllll"))
    append_json(args.out, {"rows": rows})
    print(f"\nappended to {args.out}")


if __name__ == "__main__":
    main()
