"""Tracking: wandb (offline, read back), metrics.jsonl, gradient health, and reports."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nanogpt.analysis.report import report
from nanogpt.checkpoint import load_checkpoint
from nanogpt.metrics import read_metrics
from tests.conftest import ROOT, TINY, cli_env, copy_run, run_cli, train_here
from tests.wandb_offline import history, run_info

RUN = (*TINY, "log_interval=2", "eval_interval=4", "optimizer.warmup_iters=2")


def wandb_files(run_dir: Path) -> list[Path]:
    return sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb"))


def test_wandb_offline_logs_config_metrics_samples_and_resume_continues_the_run(data_dir, tmp_path):
    run_dir = tmp_path / "run"
    common = (f"dataset.data_dir={data_dir}", "wandb.sample_tokens=20", "wandb.tags=a", "wandb.tags=b")
    run_cli("nanogpt.train", *RUN, "logger=wandb", "max_iters=8", *common, f"hydra.run.dir={run_dir}")
    [first] = wandb_files(run_dir)
    info = run_info(first)
    assert info["config"]["model"]["n_layer"] == 2 and info["tags"] == ["a", "b"]
    rows = history(first)
    keys = set().union(*rows)
    assert {"train/loss", "train/lr", "train/grad_norm", "train/tokens_per_sec", "train/mfu", "eval/val_loss", "sample/_type"} <= keys
    html = [r["sample/path"] for r in rows if "sample/path" in r]
    assert html and (first.parent / "files" / html[-1]).read_text().startswith("<pre>")
    logged = [r["train/loss"] for r in rows if "train/loss" in r]
    local = [r["loss"] for r in read_metrics(run_dir / "metrics.jsonl") if r["event"] == "train"]
    assert logged == pytest.approx(local)
    assert load_checkpoint(run_dir / "ckpt_last.pt")["wandb_run_id"] == info["id"]

    run_cli("nanogpt.train", "init_from=resume", f"run_dir={run_dir}", "max_iters=12", *common)
    files = wandb_files(run_dir)
    assert len(files) == 2 and {run_info(f)["id"] for f in files} == {info["id"]}
    steps = [r["_step"] for r in history(files[-1]) if "train/loss" in r]
    assert min(steps) > 8


def test_without_a_login_wandb_logs_offline_into_the_run_folder(tmp_path, monkeypatch, caplog):
    """No WANDB_MODE, no wandb.mode, no API key and no ~/.netrc: the run logs offline instead of
    failing on wandb's 'No API key configured' (in-process: the CLI tests set WANDB_MODE=offline)."""
    import wandb
    from omegaconf import OmegaConf

    from nanogpt.config import WandbConfig
    from nanogpt.training.tracking import WandbRun

    for key in ("WANDB_MODE", "WANDB_API_KEY"):
        monkeypatch.delenv(key, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("NETRC", str(home / ".netrc"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    caplog.set_level("INFO", logger="nanogpt.training.tracking")
    run = WandbRun(OmegaConf.structured(WandbConfig), {"max_iters": 8}, run_dir, None, None)
    run.log({"train/loss": 2.5}, step=1)
    run.finish()
    wandb.teardown()  # wait for wandb's writer, as the end of a training process does
    assert f"wandb: not logged in, logging offline to {run_dir}/wandb (upload later with `wandb sync`)" in caplog.messages
    [logged] = wandb_files(run_dir)  # <run_dir>/wandb/offline-run-<time>-<id>/run-<id>.wandb
    assert logged.parent.name.endswith(f"-{run.id}") and run_info(logged)["id"] == run.id
    assert [r["train/loss"] for r in history(logged) if "train/loss" in r] == [2.5]


def test_metrics_hold_gradient_health_and_an_end_record(data_dir, tmp_path):
    run_dir = tmp_path / "run"
    train_here(run_dir, *RUN, "max_iters=8", "optimizer.grad_clip=0.5", f"dataset.data_dir={data_dir}")  # the trainer's records
    records = read_metrics(run_dir / "metrics.jsonl")
    assert records[0]["event"] == "start" and records[0]["startup_s"] > 0
    train = [r for r in records if r["event"] == "train"]
    assert all(r["grad_norm"] > 0 and 0 <= r["clip_fraction"] <= 1 for r in train)
    assert any(r["clip_fraction"] > 0 for r in train)  # a 0.5 clip bites on a fresh model
    assert records[-1] == {**records[-1], "event": "end", "status": "finished", "iter": 8}
    assert not (run_dir / ".running").exists()


def test_divergence_stops_with_one_line_and_keeps_the_last_good_checkpoint(finished_run, data_dir, tmp_path):
    run_dir = copy_run(finished_run, tmp_path / "run")  # 8 iterations
    before = hashlib.sha256((run_dir / "ckpt_last.pt").read_bytes()).hexdigest()
    proc = run_cli(
        "nanogpt.train",
        "init_from=resume",
        f"run_dir={run_dir}",
        "max_iters=40",
        "optimizer.learning_rate=1e4",
        "optimizer.min_lr=1e4",
        "optimizer.grad_clip=0",
        f"dataset.data_dir={data_dir}",
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: training diverged by iter") and f"kept in {run_dir / 'ckpt_last.pt'}" in proc.stderr
    assert hashlib.sha256((run_dir / "ckpt_last.pt").read_bytes()).hexdigest() == before
    assert read_metrics(run_dir / "metrics.jsonl")[-1]["status"] == "failed"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, data_dir):
    sweep_dir = tmp_path_factory.mktemp("sweep") / "sweep"
    proc = run_cli(
        "nanogpt.train",
        "-m",
        "optimizer.learning_rate=3e-3,1e-3,-1",
        *RUN,
        "max_iters=8",
        f"dataset.data_dir={data_dir}",
        f"hydra.sweep.dir={sweep_dir}",
        check=False,
    )
    assert proc.returncode == 1, proc.stderr  # every job ran; one failed, so the sweep says so
    return sweep_dir, proc


def test_multirun_writes_the_sweep_report(sweep):
    sweep_dir, proc = sweep
    assert "sweep summary:" in proc.stdout
    rows = list(csv.reader((sweep_dir / "summary.csv").open()))
    header, body = rows[0], rows[1:]
    assert header[:2] == ["run", "optimizer.learning_rate"] and header[-1] == "status"
    assert [r[1] for r in body] == ["0.003", "0.001", "-1"]  # sorted by best val loss; the failure last
    losses = [float(r[header.index("best val loss")]) for r in body[:2]]
    assert losses == sorted(losses)
    assert [r[-1] for r in body] == ["finished", "finished", "failed"]
    assert "| optimizer.learning_rate |" in (sweep_dir / "summary.md").read_text()
    [failed] = sweep_dir.glob("*/error.txt")
    assert failed.read_text().startswith("optimizer.learning_rate=-1.0 is invalid")
    # Job folders are named by their overrides, so a person can tell them apart.
    assert failed.parent.name == "optimizer.learning_rate=-1"


def test_report_pngs_are_valid_images(sweep):
    import matplotlib.image

    sweep_dir, _ = sweep
    for png in [sweep_dir / "sweep.png", *sweep_dir.glob("*/loss.png")]:
        image = matplotlib.image.imread(png)
        assert image.shape[0] > 300 and image.shape[1] > 500


def test_report_shows_crashed_and_running_runs_and_skips_cut_lines(sweep, tmp_path):
    sweep_dir, _ = sweep
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(sweep_dir, root)
    jobs = sorted(p for p in root.iterdir() if p.is_dir())
    crashed, running, failed = [next(j for j in jobs if j.name.endswith(f"learning_rate={lr}")) for lr in ("0.003", "0.001", "-1")]
    lines = (crashed / "metrics.jsonl").read_text().splitlines()
    (crashed / "metrics.jsonl").write_text("\n".join(lines[:-2]) + "\n" + lines[-2][: len(lines[-2]) // 2])
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    (crashed / ".running").write_text(json.dumps({"host": os.uname().nodename, "pid": int(dead)}))
    lines = (running / "metrics.jsonl").read_text().splitlines()
    (running / "metrics.jsonl").write_text("\n".join(lines[:-1]) + "\n")
    (running / ".running").write_text(json.dumps({"host": os.uname().nodename, "pid": os.getpid()}))
    text = report(root)
    status = {line.split()[1]: line.split()[-1] for line in text.splitlines()[1:]}
    assert status == {"0.003": "crashed", "0.001": "running", "-1": "failed"}


def test_report_cli_errors(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "nanogpt.report", str(tmp_path)], cwd=ROOT, env=cli_env(), capture_output=True, text=True)
    assert (
        proc.returncode == 2 and proc.stderr == f"error: {tmp_path} holds no runs (no metrics.jsonl below it); pass a run folder or a sweep folder\n"
    )
    proc = subprocess.run([sys.executable, "-m", "nanogpt.report", str(tmp_path / "nope")], cwd=ROOT, env=cli_env(), capture_output=True, text=True)
    assert proc.returncode == 2 and "no such folder" in proc.stderr


def test_report_on_mixed_datasets_says_so(sweep, tmp_path):
    sweep_dir, _ = sweep
    import shutil

    root = tmp_path / "mixed"
    finished = sorted(p.parent for p in sweep_dir.glob("*/ckpt_last.pt"))
    shutil.copytree(finished[0], root / "a")
    shutil.copytree(finished[1], root / "b")
    config = root / "b" / ".hydra" / "config.yaml"
    config.write_text(config.read_text().replace("name: shakespeare_char", "name: other"))
    text = report(root)
    assert "dataset" in text.splitlines()[0]
    assert "different datasets (other, shakespeare_char)" in text
