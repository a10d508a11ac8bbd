#!/usr/bin/env bash
# GPU checks that benchmarks/gpu.py does not time: the resume of a GPU run (how far from an
# uninterrupted run it ends: bitwise only up to float rounding on a GPU), a 1-GPU torchrun (NCCL),
# and the GPU test files. Run after `bash benchmarks/gpu_run.sh --prepare`, beside the suite:
#
#   OUT=/tmp/out bash benchmarks/gpu_checks.sh            # on the GPU machine
#   OUT=/tmp/out SMOKE=1 bash benchmarks/gpu_checks.sh    # here, on the CPU at tiny sizes
#
# Each check's output goes to $OUT/checks/<name>.log and a line of $OUT/checks/summary.txt; a
# failing check does not stop the others.
set -uo pipefail
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to the folder that receives checks/}"
export PYTHONPATH="$PWD/.gpu_site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled
mkdir -p "$OUT/checks"
work=$(mktemp -d)
summary="$OUT/checks/summary.txt"

if [[ "${SMOKE:-0}" == 1 ]]; then
    run=(model.n_layer=2 model.n_head=2 model.n_embd=32 dataset.block_size=32 dataset.batch_size=8 system.device=cpu eval_iters=2)
    iters=(20 30)
else
    # compile off: the suite times compiled runs; these check what a resume and torchrun do.
    run=(experiment=shakespeare_char eval_iters=20 system.compile=false)
    iters=(200 300)
fi

check() {  # check NAME COMMAND...: run it, log it, record its exit status and seconds
    local name=$1 started=$SECONDS
    shift
    "$@" > "$OUT/checks/$name.log" 2>&1
    local rc=$?
    echo "$name rc=$rc seconds=$((SECONDS - started))" | tee -a "$summary"
}

# Resume: half the run, resumed to the end, against the whole run in one go (same seed).
check resume_first python -m nanogpt.train "${run[@]}" max_iters="${iters[0]}" eval_interval="${iters[0]}" \
    "hydra.run.dir=$work/split"
check resume_rest python -m nanogpt.train init_from=resume "run_dir=$work/split" max_iters="${iters[1]}"
check resume_straight python -m nanogpt.train "${run[@]}" max_iters="${iters[1]}" eval_interval="${iters[0]}" \
    "hydra.run.dir=$work/straight"
check resume_compare python - "$work/split" "$work/straight" <<'EOF'
import json, sys
from pathlib import Path
import torch
from nanogpt.checkpoint import load_checkpoint
from nanogpt.metrics import read_metrics

split, straight = sys.argv[1:]
a, b = load_checkpoint(Path(split, "ckpt_last.pt")), load_checkpoint(Path(straight, "ckpt_last.pt"))
weights = max((a["model"][k].float() - b["model"][k].float()).abs().max().item() for k in a["model"])
def losses(run):
    return {r["iter"]: r["loss"] for r in read_metrics(Path(run, "metrics.jsonl")) if r["event"] == "train"}
la, lb = losses(split), losses(straight)
common = sorted(set(la) & set(lb))
after = [i for i in common if i > a["iter_num"] // 2]
print(json.dumps({
    "iters": [a["iter_num"], b["iter_num"]],
    "max_weight_diff": weights,
    "max_train_loss_diff": max(abs(la[i] - lb[i]) for i in common),
    "max_train_loss_diff_after_resume": max((abs(la[i] - lb[i]) for i in after), default=None),
    "bitwise": weights == 0.0,
}))
EOF

# A 1-GPU torchrun: NCCL on a GPU (gloo on the CPU), the same run folder layout.
check torchrun python -m torch.distributed.run --standalone --nproc_per_node=1 -m nanogpt.train "${run[@]}" \
    max_iters="${iters[0]}" eval_interval="${iters[0]}" "hydra.run.dir=$work/torchrun"
grep -h '"event": "start"' "$work/torchrun/metrics.jsonl" > "$OUT/checks/torchrun_start.json" 2>/dev/null

# The test files whose claims are about the GPU paths (they run on the CPU elsewhere).
if python -c "import pytest" 2>/dev/null; then
    check gpu_tests python -m pytest -p no:cacheprovider -o addopts="" -q tests/test_gpu_paths.py tests/test_system.py
else
    echo "gpu_tests skipped: no pytest on this machine" | tee -a "$summary"
fi
for run_dir in split straight torchrun; do
    cp "$work/$run_dir/metrics.jsonl" "$OUT/checks/$run_dir.metrics.jsonl" 2>/dev/null
done
rm -rf "$work"
