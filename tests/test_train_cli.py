"""End to end: the real `python -m nanogpt.train` / `nanogpt.sample` commands in subprocesses,
on the real tiny Shakespeare, with a tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nanogpt.checkpoint import load_checkpoint
from nanogpt.metrics import read_metrics
from tests.conftest import TINY, one_line_error, run_cli


def train(run_dir: Path, data_dir: Path, *overrides: str, check: bool = True):
    return run_cli("nanogpt.train", *TINY, f"dataset.data_dir={data_dir}", f"hydra.run.dir={run_dir}", *overrides, check=check)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, data_dir):
    run_dir = tmp_path_factory.mktemp("runs") / "run"
    proc = train(run_dir, data_dir, "max_iters=40", "eval_interval=20", "log_interval=5", "optimizer.warmup_iters=5", "optimizer.learning_rate=3e-3")
    return run_dir, proc


def test_training_leaves_a_complete_run_folder(trained_run):
    run_dir, proc = trained_run
    for name in (".hydra/config.yaml", ".hydra/overrides.yaml", "train.log", "metrics.jsonl", "loss.png", "ckpt_best.pt", "ckpt_last.pt"):
        assert (run_dir / name).is_file(), name
    assert (run_dir / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"run folder: {run_dir}" in proc.stdout and "done: best val loss" in proc.stdout
    assert "system: device=cpu" in proc.stdout and "dtype=float32" in proc.stdout
    assert "tok/s" in proc.stdout and "eta" in proc.stdout


def test_metrics_record_progress_and_falling_loss(trained_run):
    run_dir, _ = trained_run
    records = read_metrics(run_dir / "metrics.jsonl")
    train_iters = [r["iter"] for r in records if r["event"] == "train"]
    evals = [r for r in records if r["event"] == "eval"]
    assert train_iters == list(range(5, 41, 5))
    assert [e["iter"] for e in evals] == [0, 20, 40]
    assert evals[-1]["val_loss"] < evals[0]["val_loss"] - 0.5
    assert evals[0]["val_loss"] == pytest.approx(4.17, abs=0.15)  # ln(65) at initialisation
    assert all(r["tokens"] == r["iter"] * 8 * 32 for r in records)


def test_checkpoint_holds_the_whole_train_state(trained_run):
    run_dir, _ = trained_run
    state = load_checkpoint(run_dir / "ckpt_last.pt")
    assert state["iter_num"] == 40
    assert set(state) >= {"model", "optimizer", "scaler", "rng", "data", "config", "dataset_meta", "versions", "best_val_loss"}
    config = json.loads(state["config"])
    assert config["model"]["n_layer"] == 2 and config["optimizer"]["lr_decay_iters"] == 40
    best = load_checkpoint(run_dir / "ckpt_best.pt")
    assert best["best_val_loss"] == min(r["val_loss"] for r in read_metrics(run_dir / "metrics.jsonl") if r["event"] == "eval")


def test_sample_prints_text_from_the_run(trained_run):
    run_dir, _ = trained_run
    proc = run_cli("nanogpt.sample", f"run_dir={run_dir}", "num_samples=2", "max_new_tokens=50", "prompt=ROMEO:", "system.device=cpu")
    samples = proc.stdout.split("-" * 40 + "\n")
    assert len(samples) == 2
    assert all(s.startswith("ROMEO:") and len(s.rstrip("\n")) >= 50 for s in samples)
    again = run_cli("nanogpt.sample", f"run_dir={run_dir}", "num_samples=2", "max_new_tokens=50", "prompt=ROMEO:", "system.device=cpu")
    assert again.stdout == proc.stdout  # same seed, same text
    other = run_cli("nanogpt.sample", f"run_dir={run_dir}", "num_samples=2", "max_new_tokens=50", "prompt=ROMEO:", "seed=7", "checkpoint=last")
    assert other.stdout != proc.stdout
    assert not list(run_dir.parent.glob("outputs"))


def test_sample_prompt_from_file(trained_run, tmp_path):
    run_dir, _ = trained_run
    (tmp_path / "prompt.txt").write_text("KING:")
    proc = run_cli("nanogpt.sample", f"run_dir={run_dir}", "num_samples=1", "max_new_tokens=5", f"prompt=FILE:{tmp_path / 'prompt.txt'}")
    assert proc.stdout.startswith("KING:")


@pytest.mark.parametrize(
    "overrides, message",
    [
        # A config rule and a data error; every rule's own message is tested in-process
        # (tests/test_config.py, tests/test_validation_rules.py).
        (("model.n_embd=33",), "error: model.n_embd=33 is invalid: must be divisible by model.n_head=2"),
        (("dataset.source=/no/such/file.txt", "dataset.name=shakespeare_char"), "error: dataset.source='/no/such/file.txt': no such file"),
    ],
)
def test_bad_input_gets_one_line_and_writes_nothing(tmp_path, overrides, message):
    data = tmp_path / "data"
    proc = train(tmp_path / "run", data, *overrides, check=False)
    assert one_line_error(proc).startswith(message)
    assert not (tmp_path / "run").exists()


def test_unknown_key_is_hydras_error(tmp_path):
    proc = train(tmp_path / "run", tmp_path / "data", "optimizer.learnig_rate=1", check=False)
    assert proc.returncode != 0 and "learnig_rate" in proc.stderr
    assert not (tmp_path / "run").exists()


def test_corpus_shorter_than_a_block(tmp_path):
    (tmp_path / "tiny.txt").write_text("to be or not " * 10)
    proc = train(tmp_path / "run", tmp_path / "data", f"dataset.source={tmp_path / 'tiny.txt'}", check=False)
    assert "fewer than dataset.block_size+1=33" in one_line_error(proc)


@pytest.mark.parametrize(
    "overrides, message",
    [
        # The sample command's option rules and prompts are refused in one line in
        # tests/test_generate.py (in-process and through the command) and tests/test_free_text.py.
        (("run_dir=/no/such/run",), "error: run_dir='/no/such/run': no such folder"),
    ],
)
def test_sample_bad_input(trained_run, overrides, message):
    run_dir, _ = trained_run
    args = [f"run_dir={run_dir}", *overrides] if not overrides[0].startswith("run_dir") else list(overrides)
    proc = run_cli("nanogpt.sample", *args, check=False)
    assert one_line_error(proc).startswith(message)
