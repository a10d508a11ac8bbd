"""Sweeps on a real SLURM cluster through submitit (started by scripts/slurm/start-local-cluster.sh
in CI), preemption with requeue, and the sweep's return values."""

from __future__ import annotations

import pickle
import shutil
import subprocess
import sys
import time

import pytest

from nanogpt.metrics import read_metrics
from tests.conftest import ROOT, TINY, cli_env, one_line_error, run_cli, state_digest
from tests.test_distributed import torchrun
from tests.test_multinode import RUN as TWO_RANK_RUN
from tests.test_multinode import assert_one_writer_and_the_reference_state


def _cluster_up() -> bool:
    if shutil.which("sbatch") is None:
        return False
    out = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=30)
    return out.returncode == 0 and any(state.startswith(("idle", "mix", "alloc")) for state in out.stdout.split())


pytestmark = [
    pytest.mark.skipif(not _cluster_up(), reason="no SLURM cluster here (CI starts one with scripts/slurm/start-local-cluster.sh)"),
    # One pytest-xdist worker runs them in turn: their jobs share the one-node cluster's CPUs.
    pytest.mark.xdist_group("slurm"),
]
LAUNCHER = ("hydra/launcher=slurm_cpu", "hydra.launcher.timeout_min=20")
RUN = (*TINY, "eval_interval=10", "log_interval=5", "optimizer.warmup_iters=5")
# The multi-node launcher on this one-node cluster: jobs of one node with two tasks, on its CPUs.
MULTINODE = (
    "hydra/launcher=slurm_multinode",
    "hydra.launcher.nodes=1",
    "hydra.launcher.tasks_per_node=2",
    "hydra.launcher.gpus_per_node=null",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.timeout_min=20",
)


@pytest.mark.slow
def test_sweep_on_slurm_writes_runs_summary_and_returns_best_val_losses(data_dir, tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_cli(
        "nanogpt.train",
        "-m",
        *LAUNCHER,
        "optimizer.learning_rate=1e-3,3e-3",
        *RUN,
        "max_iters=20",
        f"dataset.data_dir={data_dir}",
        f"hydra.sweep.dir={sweep}",
    )
    assert "sweep summary:" in proc.stdout
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert [j.name for j in jobs] == ["optimizer.learning_rate=0.001", "optimizer.learning_rate=0.003"]
    for job in jobs:
        assert (job / "ckpt_last.pt").is_file() and (job / "metrics.jsonl").is_file()
    assert (sweep / "summary.md").is_file() and (sweep / "sweep.png").is_file()

    # What each SLURM job returned to the launcher (submitit's result pickles, written by our
    # own jobs): the run's best val loss, for sweepers to optimise.
    results = sorted(sweep.glob(".submitit/*/*_result.pkl"))
    assert len(results) == 2
    returned = sorted(pickle.loads(p.read_bytes())[1].return_value for p in results)
    best = sorted(min(r["val_loss"] for r in read_metrics(j / "metrics.jsonl") if r["event"] == "eval") for j in jobs)
    assert returned == pytest.approx(best)


@pytest.mark.slow
def test_preempted_job_is_requeued_and_ends_bitwise_equal(data_dir, tmp_path):
    run = (*RUN, "max_iters=300", "eval_interval=20", "log_interval=20")
    reference = tmp_path / "reference"
    run_cli("nanogpt.train", *run, f"dataset.data_dir={data_dir}", f"hydra.run.dir={reference}")

    sweep = tmp_path / "sweep"
    proc = subprocess.Popen(
        [sys.executable, "-m", "nanogpt.train", "-m", *LAUNCHER, *run, f"dataset.data_dir={data_dir}", f"hydra.sweep.dir={sweep}"],
        cwd=ROOT,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    job_dir = sweep / "0"  # a sweep of one job: named by its number
    deadline = time.monotonic() + 300
    while not (job_dir / "ckpt_last.pt").exists():
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()[0][-3000:]
        time.sleep(0.2)
    [job_id] = {p.name.split("_")[0] for p in (sweep / ".submitit").iterdir() if p.name[0].isdigit()}
    # What SLURM does before a preemption or the time limit (submitit's signal): USR2.
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]

    records = read_metrics(job_dir / "metrics.jsonl")
    starts = [r for r in records if r["event"] == "start"]
    assert len(starts) == 2 and 0 < starts[1]["iter"] < 300  # it was stopped, requeued and resumed
    assert records[-1]["status"] == "finished" and records[-1]["iter"] == 300
    restarts = subprocess.run(["sacct", "-n", "-X", "-j", job_id, "-o", "state"], capture_output=True, text=True).stdout
    assert state_digest(job_dir / "ckpt_last.pt") == state_digest(reference / "ckpt_last.pt"), restarts


def test_unknown_partition_gets_one_line(tmp_path):
    proc = run_cli("nanogpt.train", "-m", *LAUNCHER, "hydra.launcher.partition=nope", f"hydra.sweep.dir={tmp_path / 's'}", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: hydra.launcher.partition='nope' does not exist on this cluster (partitions: debug)"


def test_unknown_launcher_option_is_one_line_with_the_closest_key(tmp_path):
    proc = run_cli("nanogpt.train", "-m", *LAUNCHER, "hydra.launcher.gpus_per_nod=1", f"hydra.sweep.dir={tmp_path / 's'}", check=False)
    assert one_line_error(proc) == "error: hydra.launcher.gpus_per_nod is not a config key; did you mean hydra.launcher.gpus_per_node?"
    assert not (tmp_path / "s").exists()


@pytest.mark.slow
def test_two_slurm_tasks_form_one_ddp_group_that_trains_like_torchrun(data_dir, tmp_path):
    """hydra/launcher=slurm_multinode's path: each task of the job derives its rank and the
    group's address from SLURM's variables; task 0 alone writes the job's folder, and the run
    equals a torchrun of two processes bit for bit."""
    run = (*TWO_RANK_RUN, f"dataset.data_dir={data_dir}")
    reference = tmp_path / "reference"
    proc = torchrun(*run, f"hydra.run.dir={reference}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    sweep = tmp_path / "sweep"
    run_cli("nanogpt.train", "-m", *MULTINODE, *run, f"hydra.sweep.dir={sweep}")
    assert len(list(sweep.glob(".submitit/*/*_log.out"))) == 2  # submitit's log of each task
    assert_one_writer_and_the_reference_state(sweep / "0", reference)


def test_more_nodes_than_the_partition_has_get_one_line_before_submission(tmp_path):
    proc = run_cli(
        "nanogpt.train",
        "-m",
        *MULTINODE,
        "hydra.launcher.nodes=2",
        "gradient_accumulation_steps=4",
        f"hydra.sweep.dir={tmp_path / 's'}",
        check=False,
    )
    assert one_line_error(proc) == (
        "error: hydra.launcher.nodes=2 is more than partition 'debug' has (1); "
        "ask for at most 1, or choose a larger partition with hydra.launcher.partition"
    )
    assert not (tmp_path / "s").exists()
