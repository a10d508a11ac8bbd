"""Training across nodes: torchrun started once per node and joined by a c10d rendezvous (here two
one-process "nodes" on this machine, each started in a directory of its own, as on separate
machines), and the environment a multi-node SLURM job gives its tasks. One run folder, written
by global rank 0 alone, and the same training as one torchrun of two processes, bit for bit."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch.distributed as dist
from hydra import compose, initialize_config_dir

from nanogpt import distributed
from nanogpt.cli.run_folders import SWEEP_KEYS_ENV
from nanogpt.cli.slurm import task_problem
from nanogpt.metrics import read_metrics
from tests.conftest import TINY, cli_env, state_digest
from tests.test_config import CONF
from tests.test_distributed import torchrun

RUN = (*TINY, "max_iters=6", "eval_interval=3", "log_interval=1", "optimizer.warmup_iters=2", "gradient_accumulation_steps=2")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun_node(args: tuple[str, ...], cwd: Path, port: int) -> subprocess.Popen:
    """One node's torchrun of a 2-node job: one process, ranked by the rendezvous at port."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nnodes=2",
            "--nproc_per_node=1",
            "--rdzv_backend=c10d",
            f"--rdzv_endpoint=127.0.0.1:{port}",
            "--rdzv_id=multinode-test",
            "-m",
            "nanogpt.train",
            *args,
        ],
        cwd=cwd,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def assert_one_writer_and_the_reference_state(run: Path, reference: Path) -> None:
    """A RUN trained by 2 ranks (torchrun on two nodes, or a SLURM job's tasks): rank 0 alone
    logged it, one metrics record per event and per training iteration, and it ends with the
    weights and optimizer state of the reference run, bit for bit."""
    log = (run / "train.log").read_text()
    assert log.count("[INFO] run folder:") == 1 and "2 ranks" in log
    events = [r["event"] for r in read_metrics(run / "metrics.jsonl")]
    assert events.count("start") == 1 and events.count("end") == 1 and events.count("train") == 6
    assert state_digest(run / "ckpt_last.pt") == state_digest(reference / "ckpt_last.pt")


@pytest.mark.slow
def test_two_nodes_train_in_one_run_folder_bit_for_bit_like_two_processes_on_one_node(data_dir, tmp_path):
    reference = tmp_path / "reference"
    proc = torchrun(*RUN, f"dataset.data_dir={data_dir}", f"hydra.run.dir={reference}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    # No hydra.run.dir: each node would name outputs/<date>/<time>/ in its own directory. The
    # process with LOCAL_RANK 0 on the second node is global rank 1, and must write nothing.
    homes = [tmp_path / "node_a", tmp_path / "node_b"]
    port = free_port()
    nodes = []
    for home in homes:
        home.mkdir()
        nodes.append(torchrun_node((*RUN, f"dataset.data_dir={data_dir}"), home, port))
    outputs = [node.communicate(timeout=600)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], "\n".join(out[-3000:] for out in outputs)

    # The rendezvous, not the start order, decides which node holds rank 0: one of them has the
    # run folder, the other nothing at all.
    runs = [folder for home in homes for folder in home.glob("outputs/*/*")]
    assert len(runs) == 1, runs
    run = runs[0]
    [other] = [home for home in homes if home not in run.parents]
    assert list(other.iterdir()) == []
    assert (run / ".hydra" / "config.yaml").is_file()
    assert_one_writer_and_the_reference_state(run, reference)


def test_a_task_of_a_two_node_slurm_job_takes_torchs_variables_from_slurms(monkeypatch):
    """Task 4 of 8 is the first task of the second node (SLURM_LOCALID 0): LOCAL_RANK 0, but not
    rank 0. The shell that submitted the job exported its own MASTER_ADDR, which sbatch passes on."""
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_PORT", "MASTER_ADDR", "SUBMITIT_LOCAL_NTASKS"):
        monkeypatch.setenv(key, "")  # so that monkeypatch restores what export_submitit_env sets
        monkeypatch.delenv(key)
    monkeypatch.setenv("MASTER_ADDR", "login1")
    job = {
        "SUBMITIT_EXECUTOR": "slurm",
        "SLURM_JOB_ID": "4242",
        "SLURM_JOB_NODELIST": "gpu[07-08]",
        "SLURM_JOB_NUM_NODES": "2",
        "SLURM_NTASKS": "8",
        "SLURM_PROCID": "4",
        "SLURM_LOCALID": "0",
        "SLURM_NODEID": "1",
    }
    for key, value in job.items():
        monkeypatch.setenv(key, value)
    assert distributed.wants_distributed() and distributed.env_rank() == 4  # before any process group

    opened: list[str] = []
    monkeypatch.setattr(dist, "is_initialized", lambda: bool(opened))
    monkeypatch.setattr(dist, "init_process_group", lambda backend: opened.append(os.environ["MASTER_ADDR"]))
    monkeypatch.setattr(dist, "get_rank", lambda: int(os.environ["RANK"]))
    monkeypatch.setattr(dist, "get_world_size", lambda: int(os.environ["WORLD_SIZE"]))
    world = distributed.init()
    assert (world.rank, world.local_rank, world.world_size, world.is_main) == (4, 0, 8, False)
    assert opened == ["gpu07"]  # the job's first node, where task 0 runs
    assert os.environ["LOCAL_WORLD_SIZE"] == "4"
    port = os.environ["MASTER_PORT"]

    # Task 0, on the first node, finds the same rendezvous.
    for key in ("RANK", "MASTER_PORT"):
        monkeypatch.delenv(key)
    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.setenv("SLURM_NODEID", "0")
    distributed.export_submitit_env()
    assert (os.environ["RANK"], os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"]) == ("0", "gpu07", port)


def launcher_config(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=["hydra/launcher=slurm_multinode", *overrides], return_hydra_config=True)


@pytest.mark.parametrize(
    "overrides, problem",
    [
        (["gradient_accumulation_steps=16"], None),  # the preset: 2 nodes x 8 tasks, one per GPU
        (
            ["gradient_accumulation_steps=16", "hydra.launcher.tasks_per_node=4"],
            "hydra.launcher.tasks_per_node=4 does not match "
            "hydra.launcher.gpus_per_node=8: training runs one task per GPU; set both to the number of GPUs a node has",
        ),
        (["gradient_accumulation_steps=16", "hydra.launcher.nodes=0"], "hydra.launcher.nodes=0 is invalid: must be at least 1"),
        (
            ["gradient_accumulation_steps=8"],
            "gradient_accumulation_steps=8 is invalid: must be divisible by the world size 16 "
            "(hydra.launcher.nodes=2 x hydra.launcher.tasks_per_node=8); set it to a multiple of 16",
        ),
    ],
    ids=["preset", "tasks-not-gpus", "no-nodes", "accumulation"],
)
def test_multinode_launcher_settings_that_cannot_form_one_group_are_named_before_submission(monkeypatch, overrides, problem):
    monkeypatch.setenv(SWEEP_KEYS_ENV, "")
    assert task_problem(launcher_config(*overrides)) == problem


def test_a_swept_accumulation_is_left_to_each_job(monkeypatch):
    monkeypatch.setenv(SWEEP_KEYS_ENV, "optimizer.learning_rate,gradient_accumulation_steps")
    assert task_problem(launcher_config("gradient_accumulation_steps=8")) is None
