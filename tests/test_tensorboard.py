"""logger=tensorboard: event files read back with TensorBoard's own reader, alone and beside wandb,
across a kill and resume; and the one-line refusals (package missing, unknown logger)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nanogpt.checkpoint import load_checkpoint
from nanogpt.cli.launch import run_or_exit
from nanogpt.metrics import read_metrics
from tests.conftest import ROOT, TINY, cli_env, one_line_error, run_cli, train_here
from tests.wandb_offline import history

RUN = (*TINY, "log_interval=2", "eval_interval=4", "optimizer.warmup_iters=2")


def events(run_dir: Path, subdir: str = "tensorboard"):
    """What TensorBoard shows of a run: its event files as TensorBoard's reader loads them."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir / subdir))
    accumulator.Reload()
    return accumulator


def scalars(run_dir: Path, subdir: str = "tensorboard") -> dict[str, list[tuple[int, float]]]:
    acc = events(run_dir, subdir)
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def samples(run_dir: Path) -> list[tuple[int, str]]:
    return [(e.step, e.tensor_proto.string_val[0].decode()) for e in events(run_dir).Tensors("sample/text_summary")]


def local_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """metrics.jsonl's train and eval records as the trackers are sent them: "train/loss", ..."""
    out: dict[str, list[tuple[int, float]]] = {}
    for record in read_metrics(run_dir / "metrics.jsonl"):
        if record["event"] in ("train", "eval"):
            for key, value in record.items():
                if key not in ("event", "iter", "tokens", "time") and value is not None:
                    out.setdefault(f"{record['event']}/{key}", []).append((record["iter"], value))
    return out


def assert_same(logged: dict[str, list[tuple[int, float]]], expected: dict[str, list[tuple[int, float]]]) -> None:
    assert logged.keys() == expected.keys()
    for tag, points in expected.items():
        assert [step for step, _ in logged[tag]] == [step for step, _ in points], tag
        # TensorBoard keeps float32
        assert [value for _, value in logged[tag]] == pytest.approx([value for _, value in points], rel=1e-6), tag


def test_tensorboard_logs_the_scalars_of_metrics_jsonl_and_text_samples(data_dir, tmp_path):
    run_dir = tmp_path / "run"
    train_here(run_dir, *RUN, "max_iters=8", "logger=tensorboard", "tensorboard.sample_tokens=20", f"dataset.data_dir={data_dir}")
    logged = scalars(run_dir)
    assert {"train/loss", "train/lr", "train/grad_norm", "train/tokens_per_sec", "train/mfu", "eval/val_loss"} <= logged.keys()
    assert_same(logged, local_scalars(run_dir))
    shown = samples(run_dir)
    assert [step for step, _ in shown] == [0, 4, 8]
    # 20 characters of the character model, indented as a Markdown code block (shown verbatim)
    assert all(line.startswith("    ") for _, text in shown for line in text.split("\n"))
    assert all(len(text.replace("\n", "").replace("    ", "")) <= 20 for _, text in shown)
    assert not (run_dir / "wandb").exists()


def test_wandb_and_tensorboard_at_once_log_the_same_scalars(data_dir, tmp_path):
    run_dir = tmp_path / "run"
    # Hydra's list of options, through the command line (WANDB_MODE=offline: cli_env)
    run_cli(
        "nanogpt.train",
        *RUN,
        "max_iters=8",
        "logger=[wandb,tensorboard]",
        "wandb.sample_tokens=20",
        "tensorboard.sample_tokens=20",
        f"dataset.data_dir={data_dir}",
        f"hydra.run.dir={run_dir}",
    )
    [wandb_file] = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    from_wandb: dict[str, list[tuple[int, float]]] = {}
    for row in history(wandb_file):
        for key, value in row.items():
            if key.startswith(("train/", "eval/")):
                from_wandb.setdefault(key, []).append((row["_step"], value))
    assert_same(scalars(run_dir), from_wandb)
    assert_same(scalars(run_dir), local_scalars(run_dir))
    assert [step for step, _ in samples(run_dir)] == [r["_step"] for r in history(wandb_file) if "sample/_type" in r] == [0, 4, 8]


def test_a_killed_run_resumed_shows_each_step_once(data_dir, tmp_path):
    run_dir = tmp_path / "run"
    train = (*TINY, "log_interval=1", "eval_interval=20", "max_iters=1000", "logger=tensorboard", "tensorboard.sample_tokens=10")
    proc = subprocess.Popen(
        [sys.executable, "-m", "nanogpt.train", *train, f"dataset.data_dir={data_dir}", f"hydra.run.dir={run_dir}"],
        cwd=ROOT,
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # Kill it a few steps after its first checkpoint (iter 20), which the loop writes before step 21.
    deadline = time.monotonic() + 120
    while not any(r["event"] == "train" and r["iter"] >= 24 for r in read_metrics(run_dir / "metrics.jsonl")):
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    resumed_at = load_checkpoint(run_dir / "ckpt_last.pt")["iter_num"]
    killed = scalars(run_dir)["train/loss"]
    assert killed[-1][0] > resumed_at  # the event files hold steps that the resume trains again

    train_here(run_dir, "init_from=resume", f"run_dir={run_dir}", f"max_iters={resumed_at + 10}", f"dataset.data_dir={data_dir}")
    logged = scalars(run_dir)
    assert [step for step, _ in logged["train/loss"]] == list(range(1, resumed_at + 11))
    assert_same(logged, local_scalars(run_dir))  # metrics.jsonl holds each iteration once, the resumed run's
    assert [step for step, _ in samples(run_dir)] == list(range(0, resumed_at + 1, 20)) + [resumed_at + 10]
    assert len(list((run_dir / "tensorboard").glob("events.out.tfevents.*"))) == 2  # one log dir, continued


def test_a_resume_in_the_same_second_as_the_run_it_continues_is_read_after_it(tmp_path):
    """TensorBoard reads event files in name order (seconds, host, pid): a resume whose file would
    sort before the killed run's (same second, another host or a lower pid) must not be."""
    from omegaconf import OmegaConf

    from nanogpt.config import TensorBoardConfig
    from nanogpt.training.tracking import TensorBoardRun

    cfg = OmegaConf.structured(TensorBoardConfig)
    killed = TensorBoardRun(cfg, tmp_path, purge_step=0)
    for step in range(1, 6):
        killed.log({"train/loss": float(step)}, step)
    killed.finish()
    [written] = tmp_path.iterdir()
    seconds = written.name.split(".")[3]
    written.rename(tmp_path / f"events.out.tfevents.{seconds}.zz-other-host.99999.0")  # sorts after this process's files
    resumed = TensorBoardRun(cfg, tmp_path, purge_step=4)  # the checkpoint was at step 3
    for step in range(4, 8):
        resumed.log({"train/loss": 10.0 * step}, step)
    resumed.finish()
    assert scalars(tmp_path, subdir="")["train/loss"] == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0), (5, 50.0), (6, 60.0), (7, 70.0)]


def test_logger_on_resume_switches_the_trackers():
    from nanogpt.config.resume import override_keys, resumed_config
    from tests.test_config import compose_train

    saved = compose_train("logger=wandb")
    for overrides, wandb, tensorboard in (
        ([], True, False),
        (["logger=[wandb,tensorboard]"], True, True),
        (["logger=tensorboard"], False, True),
        (["tensorboard.enabled=true"], True, True),
        (["logger=none"], False, False),
    ):
        cfg = resumed_config(saved, compose_train("init_from=resume", *overrides), override_keys(overrides))
        assert (cfg.wandb.enabled, cfg.tensorboard.enabled) == (wandb, tensorboard), overrides


def test_without_the_tensorboard_package_the_run_is_refused_in_one_line(tmp_path, monkeypatch, capsys):
    # An import that fails as it does where tensorboard is not installed
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    data = tmp_path / "data"
    data.mkdir()
    with pytest.raises(SystemExit) as exit:
        run_or_exit(lambda: train_here(tmp_path / "run", *RUN, "max_iters=8", "logger=tensorboard", f"dataset.data_dir={data}"))
    assert exit.value.code == 2
    assert (
        capsys.readouterr().err
        == 'error: logger=tensorboard needs the tensorboard package, which is not installed: pip install "nanogpt[tensorboard]"\n'
    )
    assert list(data.iterdir()) == [] and list((tmp_path / "run").iterdir()) == []  # refused before the data was prepared


def test_an_unknown_logger_is_refused_in_one_line(tmp_path):
    proc = run_cli("nanogpt.train", "logger=[wandb,tensorbord]", f"hydra.run.dir={tmp_path / 'run'}", check=False)
    assert (
        one_line_error(proc) == "error: logger=tensorbord: no such logger; the options are none, tensorboard, wandb; did you mean logger=tensorboard?"
    )
