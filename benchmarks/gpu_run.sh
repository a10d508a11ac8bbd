#!/usr/bin/env bash
# The one command of the GPU machine, which has torch but not hydra, omegaconf or submitit, and no
# network. Two uses, both from anywhere in the checkout:
#
#   bash benchmarks/gpu_run.sh --prepare         # here: build .gpu_site/ and .anchors/nanoGPT, to be carried
#   OUT=/tmp/out bash benchmarks/gpu_run.sh [gpu.py options]    # there: the suite, results into $OUT
#
# --prepare copies the pure-Python packages that `import nanogpt.train` needs and the GPU image
# lacks (hydra, its submitit launcher plugin, omegaconf, antlr4, submitit, tokenizers) from this machine's
# site-packages into .gpu_site/, and nanoGPT's reference scripts (../shared/anchors/nanoGPT) into
# .anchors/nanoGPT; both are listed in .git/info/exclude, so they travel only when carried.
# wandb is left out: nanogpt imports it only when logging to it.
#
# The run puts .gpu_site/ and the checkout on PYTHONPATH, prints nvidia-smi once, and runs
# benchmarks/gpu.py with its output into $OUT (gpu.json, gpu.md, logs/) and the console in $OUT/gpu.log.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "--prepare" ]]; then
    rm -rf .gpu_site
    python3 - <<'EOF'
import importlib.util
import shutil
from pathlib import Path

# hydra_plugins is a namespace package: merge every folder it spans.
# tokenizers is compiled, but for CPython's stable ABI (abi3): the same build runs on the image's Python.
for name in ("hydra", "hydra_plugins", "omegaconf", "antlr4", "submitit", "tokenizers"):
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"{name} is not installed here: pip install -e '.[dev]' first")
    for location in spec.submodule_search_locations:
        shutil.copytree(location, Path(".gpu_site") / name, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
EOF
    anchor=../shared/anchors/nanoGPT
    [[ -d "$anchor" ]] || { echo "no $anchor to copy" >&2; exit 1; }
    rm -rf .anchors/nanoGPT
    mkdir -p .anchors
    cp -r "$anchor" .anchors/nanoGPT
    chmod -R u+w .anchors
    exclude=$(git rev-parse --git-path info/exclude)
    mkdir -p "$(dirname "$exclude")"
    for entry in /.gpu_site/ /.anchors/; do
        grep -qxF "$entry" "$exclude" 2>/dev/null || echo "$entry" >> "$exclude"
    done
    # What a run may carry is 64 MiB in all, the working tree included.
    size_kib=$(du -sk .gpu_site .anchors | awk '{s += $1} END {print s}')
    du -sh .gpu_site .anchors
    if (( size_kib > 60 * 1024 )); then
        echo "error: .gpu_site and .anchors take ${size_kib} KiB, over 60 MiB" >&2
        exit 1
    fi
    echo "ready: carry [\".gpu_site\", \".anchors\"]"
    exit 0
fi

: "${OUT:?set OUT to the folder that receives gpu.json, gpu.md, gpu.log and logs/}"
export PYTHONPATH="$PWD/.gpu_site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
nvidia-smi || echo "nvidia-smi: not available"
python3 benchmarks/gpu.py --out "$OUT" "$@" 2>&1 | tee "$OUT/gpu.log"
