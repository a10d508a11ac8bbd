"""dataset=hf: Hugging Face datasets streamed through `datasets`, from local copies made on the
fly (parquet files, a JSON lines file, a save_to_disk folder), and the refusals (a missing text
field, a split or config that is not there, a hub name offline)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from nanogpt.data import DataError, HubSource, dataset_dir, gpt2_tokenizer, load_tokenizer, prepare, read_meta
from nanogpt.data.preparation import _val_records
from tests.conftest import TINY, one_line_error, run_cli

datasets = pytest.importorskip("datasets", reason="dataset=hf needs Hugging Face datasets (pip install -e '.[dev]')")

EOT = 50256


def pages(count: int) -> list[str]:
    return [f"page {i}: " + "the quick brown fox jumps. " * (i % 13 + 1) for i in range(count)]


@pytest.fixture
def parquet_folder(tmp_path):
    """A folder of two parquet files with a text column and another column, as the hub serves them."""
    folder = tmp_path / "parquet"
    folder.mkdir()
    docs = pages(400)
    for part in range(2):
        chunk = docs[part * 200 : (part + 1) * 200]
        datasets.Dataset.from_dict({"text": chunk, "id": list(range(len(chunk)))}).to_parquet(str(folder / f"part-{part}.parquet"))
    return folder, docs


def split_documents(folder, split) -> list[str]:
    ids = np.fromfile(folder / f"{split}.bin", dtype=np.uint16)
    cuts = np.flatnonzero(ids == EOT)
    bounds = zip(np.concatenate([[0], cuts + 1]), np.concatenate([cuts, [len(ids)]]))
    return [gpt2_tokenizer().decode(ids[a:b].tolist()) for a, b in bounds]


def test_a_local_parquet_folder_prepares_with_a_seeded_document_split(tmp_path, parquet_folder):
    folder, docs = parquet_folder
    meta = prepare("pq", tmp_path / "data", None, 0.05, tokenizer="gpt2", hub=HubSource(str(folder)), workers=2)
    out = dataset_dir(tmp_path / "data", "pq")
    assert read_meta(out) == meta and (meta["hf_path"], meta["hf_split"], meta["text_field"]) == (str(folder), "train", "text")
    train, val = split_documents(out, "train"), split_documents(out, "val")
    # One record in every 20, at a seeded place in each stretch of 20; the rest in order in train.
    chosen = [is_val for is_val, _ in zip(_val_records(0.05), docs)]
    assert val == [d for d, v in zip(docs, chosen) if v] and len(val) == 20
    assert train == [d for d, v in zip(docs, chosen) if not v]
    assert [i for i, v in enumerate(chosen) if v][:3] != [19, 39, 59]  # not simply every 20th
    # Prepared once: the same files are not prepared again; a changed file is.
    mtime = (out / "train.bin").stat().st_mtime_ns
    assert prepare("pq", tmp_path / "data", None, 0.05, tokenizer="gpt2", hub=HubSource(str(folder)))["source_sha256"] == meta["source_sha256"]
    assert (out / "train.bin").stat().st_mtime_ns == mtime
    datasets.Dataset.from_dict({"text": ["new"]}).to_parquet(str(folder / "part-2.parquet"))
    assert prepare("pq", tmp_path / "data", None, 0.05, tokenizer="gpt2", hub=HubSource(str(folder)))["source_sha256"] != meta["source_sha256"]


@pytest.mark.slow
def test_dataset_hf_trains_from_a_local_copy_with_a_bpe_of_its_own(tmp_path, parquet_folder):
    folder, _ = parquet_folder
    run_dir = tmp_path / "run"
    proc = run_cli(
        "nanogpt.train", *TINY, "dataset=hf", "dataset.name=pages", f"dataset.hf_path={folder}", "dataset.tokenizer=bpe",
        "dataset.vocab_size=400", "dataset.val_fraction=0.1", f"dataset.data_dir={tmp_path / 'data'}", "max_iters=40", "eval_interval=40",
        "optimizer.learning_rate=3e-3", f"hydra.run.dir={run_dir}",
    )  # fmt: skip
    meta = read_meta(dataset_dir(tmp_path / "data", "pages"))
    assert (meta["tokenizer"], meta["vocab_size"], meta["dtype"]) == ("bpe", 400, "uint16")
    assert "prepared pages:" in proc.stdout
    evals = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [e for e in evals if e["event"] == "eval"]
    assert evals[-1]["val_loss"] < evals[0]["val_loss"] - 1.0, evals
    sample = run_cli("nanogpt.sample", f"run_dir={run_dir}", "prompt=page", "num_samples=1", "max_new_tokens=10", "system.device=cpu")
    assert sample.stdout.strip().startswith("page")


def test_a_save_to_disk_folder_and_a_jsonl_file(tmp_path):
    docs = pages(60)
    saved = tmp_path / "saved"
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_dict({"body": docs}), "test": datasets.Dataset.from_dict({"body": ["held out"] * 5})}
    ).save_to_disk(str(saved))
    meta = prepare("saved", tmp_path / "data", None, 0.1, tokenizer="gpt2", hub=HubSource(str(saved), split="train", text_field="body"))
    out = dataset_dir(tmp_path / "data", "saved")
    assert sorted(split_documents(out, "train") + split_documents(out, "val")) == sorted(docs)
    assert meta["text_field"] == "body"
    with pytest.raises(DataError, match=r"dataset.hf_split='validation' is not in .* \(its splits: train, test\); set dataset.hf_split"):
        prepare("saved", tmp_path / "data", None, 0.1, tokenizer="gpt2", hub=HubSource(str(saved), split="validation", text_field="body"))
    jsonl = tmp_path / "pages.jsonl"
    jsonl.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    meta = prepare("jsonl", tmp_path / "data", None, 0.1, tokenizer="gpt2", hub=HubSource(str(jsonl)))
    assert meta["train_tokens"] + meta["val_tokens"] == sum(len(gpt2_tokenizer().encode(d)) for d in docs) + 58  # 2 splits: 58 separators
    assert load_tokenizer(meta).decode([0]) == "!"


def test_a_missing_text_field_is_one_line_and_leaves_nothing(tmp_path, parquet_folder):
    folder, _ = parquet_folder
    proc = run_cli(
        "nanogpt.prepare", "dataset=hf", "dataset.name=pq", f"dataset.hf_path={folder}", "dataset.text_field=content",
        f"dataset.data_dir={tmp_path / 'data'}", check=False,
    )  # fmt: skip
    assert one_line_error(proc) == (
        f"error: dataset.text_field='content' is not a field of {folder}, split train (its fields: text, id); set dataset.text_field"
    )
    out = dataset_dir(tmp_path / "data", "pq")
    assert not (out / "meta.json").exists() and not list(out.glob(".*.tmp")) and not (out / "train.bin").exists()


def test_a_config_or_split_that_is_not_there(tmp_path, parquet_folder):
    folder, _ = parquet_folder
    with pytest.raises(DataError, match=r"dataset.hf_path=.*BuilderConfig 'nope' not found.*; set dataset.hf_config"):
        prepare("pq", tmp_path / "data", None, 0.1, tokenizer="gpt2", hub=HubSource(str(folder), config="nope"))
    with pytest.raises(DataError, match=r"Bad split: validation.*; set dataset.hf_split"):
        prepare("pq", tmp_path / "data", None, 0.1, tokenizer="gpt2", hub=HubSource(str(folder), split="validation"))


@pytest.mark.parametrize("offline", ["1", "0"])
def test_a_hub_dataset_offline_is_one_line_within_seconds(tmp_path, offline):
    """HF_HUB_OFFLINE=1, or no network at all (the tests' machines reach no hub): one line naming
    the key and the way out (a local copy), in seconds rather than after the client's retries."""
    start = time.monotonic()
    proc = run_cli(
        "nanogpt.prepare", "dataset=openwebtext", f"dataset.data_dir={tmp_path / 'data'}", check=False,
        env={"HF_HUB_OFFLINE": offline, "HF_DATASETS_OFFLINE": offline, "HF_ENDPOINT": "http://127.0.0.1:9"},
    )  # fmt: skip
    line = one_line_error(proc)
    assert line.startswith("error: dataset.hf_path='Skylion007/openwebtext'") and "a local copy works offline" in line
    assert ("HF_HUB_OFFLINE=1" in line) == (offline == "1")
    assert time.monotonic() - start < 20
    assert not (tmp_path / "data" / "openwebtext" / "meta.json").exists()


def test_a_record_without_text_is_refused(tmp_path):
    jsonl = tmp_path / "mixed.jsonl"
    jsonl.write_text(json.dumps({"text": "fine"}) + "\n" + json.dumps({"text": 42}) + "\n")
    with pytest.raises(DataError, match=r"dataset.text_field='text': record 1 of .*mixed.jsonl, split train holds int, not text"):
        prepare("mixed", tmp_path / "data", None, 0.1, tokenizer="gpt2", hub=HubSource(str(jsonl)))
