"""End to end through the real commands: prepare tiny Shakespeare in GPT-2 tokens, fine-tune a
small local GPT-2 folder, sample, evaluate, resume and export."""

from __future__ import annotations

import json
import math

import pytest
import torch

from nanogpt.checkpoint import load_checkpoint, load_model
from nanogpt.metrics import read_metrics
from tests.conftest import TINY, one_line_error, run_cli

# The CPU fine-tuning preset, shrunk to seconds: a tiny random GPT-2 learns quickly at this rate.
FAST = (
    "experiment=finetune_shakespeare_cpu",
    "dataset.block_size=32",
    "dataset.batch_size=4",
    "gradient_accumulation_steps=1",
    "optimizer.learning_rate=3e-3",
    "max_iters=6",
    "eval_interval=3",
    "eval_iters=2",
    "system.dtype=float32",
)


@pytest.fixture(scope="module")
def data(tmp_path_factory, shakespeare_path):
    folder = tmp_path_factory.mktemp("data")
    proc = run_cli("nanogpt.prepare", "dataset=shakespeare", f"dataset.source={shakespeare_path}", f"dataset.data_dir={folder}")
    assert "shakespeare: 301,966 train / 36,059 val tokens (uint16), vocabulary 50,257" in proc.stdout
    return folder


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory, data, gpt2_folder):
    run_dir = tmp_path_factory.mktemp("runs") / "finetune"
    proc = run_cli("nanogpt.train", *FAST, f"init_from=hf:{gpt2_folder}", f"dataset.data_dir={data}", f"hydra.run.dir={run_dir}")
    return run_dir, proc


def test_finetuning_lowers_val_loss_and_keeps_the_best(finetuned, gpt2_folder):
    run_dir, proc = finetuned
    assert f"loaded hf:{gpt2_folder} weights: 2 layers, 2 heads, 32 wide, vocabulary 50257" in proc.stdout
    evals = [r for r in read_metrics(run_dir / "metrics.jsonl") if r["event"] == "eval"]
    assert [e["iter"] for e in evals] == [0, 3, 6]
    assert evals[0]["val_loss"] == pytest.approx(math.log(50257), abs=0.1)  # a random GPT-2
    assert evals[-1]["val_loss"] < evals[0]["val_loss"] - 0.1
    best = load_checkpoint(run_dir / "ckpt_best.pt")
    assert best["best_val_loss"] == min(e["val_loss"] for e in evals)
    model = json.loads(best["config"])["model"]
    assert (model["n_layer"], model["bias"], model["gelu_approximate"], model["vocab_size"]) == (2, True, "tanh", 50257)
    assert best["model_args"]["block_size"] == 32  # cropped from the folder's 64 positions


def test_sample_prints_text(finetuned):
    run_dir, _ = finetuned
    proc = run_cli("nanogpt.sample", f"run_dir={run_dir}", "num_samples=2", "max_new_tokens=20", "prompt=ROMEO:", "system.device=cpu")
    samples = proc.stdout.split("-" * 40 + "\n")
    assert len(samples) == 2 and all(s.startswith("ROMEO:") and len(s) > len("ROMEO:\n") for s in samples)


def test_resume_continues_the_finetuned_run(tmp_path, finetuned):
    run_dir, _ = finetuned
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("ckpt_last.pt", "ckpt_best.pt", "metrics.jsonl"):
        (copy / name).write_bytes((run_dir / name).read_bytes())
    proc = run_cli("nanogpt.train", "init_from=resume", f"run_dir={copy}", "max_iters=7", "eval_interval=7")
    assert "iter 7/7" in proc.stdout
    assert load_checkpoint(copy / "ckpt_last.pt")["iter_num"] == 7


def test_eval_only_of_a_pretrained_model(tmp_path, data, gpt2_folder):
    run_dir = tmp_path / "eval"
    proc = run_cli(
        "nanogpt.train",
        f"init_from=hf:{gpt2_folder}",
        "dataset=shakespeare",
        "eval_only=true",
        "eval_iters=2",
        "dataset.block_size=64",
        "dataset.batch_size=2",
        "system.device=cpu",
        f"dataset.data_dir={data}",
        f"hydra.run.dir={run_dir}",
    )
    result = json.loads((run_dir / "eval.json").read_text())
    assert result["init_from"] == f"hf:{gpt2_folder}" and result["dataset"] == "shakespeare" and result["eval_iters"] == 2
    assert result["val_perplexity"] == pytest.approx(math.exp(result["val_loss"]))
    assert f"val loss {result['val_loss']:.4f} (perplexity {result['val_perplexity']:.2f})" in proc.stdout
    assert not list(run_dir.glob("ckpt_*.pt"))


def test_eval_only_of_a_checkpoint_on_another_dataset(tmp_path, finetuned, data):
    run_dir, _ = finetuned
    (tmp_path / "mine.txt").write_text("My own words, to measure the model on. " * 40)
    overrides = (
        "init_from=resume",
        f"run_dir={run_dir}",
        "eval_only=true",
        "dataset=text",
        f"dataset.source={tmp_path / 'mine.txt'}",
        f"dataset.data_dir={tmp_path / 'data'}",
    )
    proc = run_cli("nanogpt.train", *overrides, "dataset.tokenizer=char", check=False)
    assert proc.returncode == 2 and "is tokenized differently from the data this checkpoint was trained on" in proc.stderr
    run_cli("nanogpt.train", *overrides, "dataset.tokenizer=gpt2")
    result = json.loads((run_dir / "eval.json").read_text())
    assert result["dataset"] == "text" and result["block_size"] == 32 and result["iter"] == 6


def test_export_loads_in_transformers_with_the_same_logits(tmp_path, finetuned):
    from transformers import GPT2LMHeadModel

    run_dir, _ = finetuned
    out = tmp_path / "exported"
    proc = run_cli("nanogpt.export", f"run_dir={run_dir}", f"out={out}")
    assert f"exported {run_dir / 'ckpt_best.pt'} to {out}" in proc.stdout
    ours, _, _ = load_model(run_dir, "best", "cpu")
    idx = torch.randint(0, 50257, (2, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = (GPT2LMHeadModel.from_pretrained(out)(idx).logits - ours(idx, idx)[0]).abs().max().item()
    assert diff < 1e-5, diff
    again = run_cli("nanogpt.export", f"run_dir={run_dir}", f"out={out}", check=False)
    assert again.returncode == 2 and "pass overwrite=true" in again.stderr


def test_from_scratch_on_bpe_pads_the_vocabulary(tmp_path, data):
    run_dir = tmp_path / "scratch"
    proc = run_cli(
        "nanogpt.train", *TINY, "dataset=shakespeare", "max_iters=2", "eval_interval=2", f"dataset.data_dir={data}", f"hydra.run.dir={run_dir}"
    )
    assert "vocabulary 50304" in proc.stdout
    assert load_checkpoint(run_dir / "ckpt_last.pt")["model_args"]["vocab_size"] == 50304
    # Sampling the padded model prints text (test_model checks that padding ids are never picked).
    proc = run_cli("nanogpt.sample", f"run_dir={run_dir}", "num_samples=4", "max_new_tokens=50", "temperature=2.0", "top_k=null")
    assert proc.stdout.startswith("\n")


@pytest.mark.parametrize(
    "content, message",
    # A corpus refused while the train command prepares it; the other refusals of a corpus are
    # tested in-process (tests/test_text_data.py) and a corpus shorter than a block through the
    # command too (tests/test_train_cli.py).
    [
        (b"\x7fELF\x02\x01\x01\x00\x00\x00", "corpus.txt is not a text file"),
    ],
)
def test_bad_corpus_via_the_cli(tmp_path, content, message):
    (tmp_path / "corpus.txt").write_bytes(content)
    proc = run_cli(
        "nanogpt.train",
        "dataset=text",
        f"dataset.source={tmp_path / 'corpus.txt'}",
        "dataset.tokenizer=gpt2",
        "dataset.block_size=32",
        f"dataset.data_dir={tmp_path / 'data'}",
        f"hydra.run.dir={tmp_path / 'run'}",
        "system.device=cpu",
        check=False,
    )
    assert message in one_line_error(proc)
    assert not (tmp_path / "run").exists()
