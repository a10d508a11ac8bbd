"""Text datasets: tiny Shakespeare in GPT-2 tokens, and your own text files (char and gpt2)."""

import json
import logging

import numpy as np
import pytest

from nanogpt.data import DataError, dataset_dir, load_tokenizer, prepare, read_meta
from tests.conftest import TINY_SHAKESPEARE_SHA256

EOT = 50256


def tokens(folder, split):
    return np.fromfile(folder / f"{split}.bin", dtype=np.uint16)


def test_shakespeare_bpe_matches_nanogpt(bpe_data_dir, shakespeare_path):
    folder = dataset_dir(bpe_data_dir, "shakespeare")
    meta = read_meta(folder)
    assert (meta["train_tokens"], meta["val_tokens"]) == (301_966, 36_059)
    assert (meta["tokenizer"], meta["vocab_size"], meta["source_sha256"]) == ("gpt2", 50257, TINY_SHAKESPEARE_SHA256)
    # nanoGPT's recipe: cut the text at 90% of its characters, then encode each part.
    text = shakespeare_path.read_text()
    cut = int(len(text) * 0.9)
    tokenizer = load_tokenizer(meta)
    assert tokenizer.decode(tokens(folder, "train").tolist()) == text[:cut]
    assert tokenizer.decode(tokens(folder, "val").tolist()) == text[cut:]


def test_builtin_datasets_keep_their_tokenizer(tmp_path, shakespeare_path):
    with pytest.raises(DataError, match="dataset.tokenizer='char' is invalid for dataset shakespeare, which is tokenized with gpt2"):
        prepare("shakespeare", tmp_path, str(shakespeare_path), 0.1, tokenizer="char")


@pytest.fixture
def corpus(tmp_path):
    """Several files: UTF-8, Latin-1, empty, JSON lines, and a file that is not .txt/.jsonl."""
    folder = tmp_path / "corpus"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("First document, in UTF-8: naïve.\n" * 30, encoding="utf-8")
    (folder / "sub" / "b.txt").write_bytes("Caf\u00e9 cr\u00e8me, d\u00e9j\u00e0 vu.\n".encode("latin-1") * 30)
    (folder / "empty.txt").write_bytes(b"")
    (folder / "c.jsonl").write_text(
        json.dumps({"text": "a JSON document \u2028 with a line separator"}) + "\n\n" + json.dumps({"text": "another"}) + "\n"
    )
    (folder / "notes.md").write_text("NOT PART OF THE CORPUS")
    return folder


def expected_documents():
    return ["First document, in UTF-8: naïve.\n" * 30, "a JSON document \u2028 with a line separator", "another", "Café crème, déjà vu.\n" * 30]


@pytest.mark.parametrize("tokenizer", ["char", "gpt2"])
def test_own_text_from_a_folder(tmp_path, corpus, caplog, tokenizer):
    with caplog.at_level(logging.INFO):
        meta = prepare("books", tmp_path / "data", str(corpus), 0.1, tokenizer=tokenizer)
    folder = dataset_dir(tmp_path / "data", "books")
    assert read_meta(folder) == meta and meta["tokenizer"] == tokenizer
    assert f"{corpus / 'sub' / 'b.txt'} is not UTF-8" in caplog.text and "read as Latin-1" in caplog.text
    assert f"{corpus / 'empty.txt'} is empty: skipped" in caplog.text
    decode = load_tokenizer(meta).decode
    train, val = decode(tokens(folder, "train").tolist()), decode(tokens(folder, "val").tolist())
    docs = expected_documents()
    if tokenizer == "char":
        joined = "\n".join(docs)  # documents in path order, one newline between two
        assert meta["vocab_size"] == len(set(joined)) and 0 < meta["val_tokens"] < meta["train_tokens"]
        assert train + val == joined
    else:
        assert meta["vocab_size"] == 50257
        # GPT-2's end-of-text token separates the documents; the cut splits the last one.
        ids = np.concatenate([tokens(folder, "train"), tokens(folder, "val")])
        assert (ids == EOT).sum() == len(docs) - 1
        assert decode(tokens(folder, "train")[tokens(folder, "train") != EOT].tolist()) + val == "".join(docs)
    assert "NOT PART" not in train + val


def test_own_text_from_a_glob_and_a_single_file(tmp_path, corpus):
    meta = prepare("glob", tmp_path / "data", str(corpus / "**" / "*.txt"), 0.1, tokenizer="char")
    assert meta["train_tokens"] + meta["val_tokens"] == len("\n".join([expected_documents()[0], expected_documents()[3]]))
    single = prepare("single", tmp_path / "data", str(corpus / "a.txt"), 0.2, tokenizer="gpt2")
    assert single["val_fraction"] == 0.2 and single["train_tokens"] > 3 * single["val_tokens"]


def test_own_text_is_prepared_once_and_again_when_it_changes(tmp_path, corpus):
    meta = prepare("books", tmp_path, str(corpus), 0.1, tokenizer="char")
    train_bin = dataset_dir(tmp_path, "books") / "train.bin"
    mtime = train_bin.stat().st_mtime_ns
    assert prepare("books", tmp_path, str(corpus), 0.1, tokenizer="char") == meta
    assert train_bin.stat().st_mtime_ns == mtime
    assert prepare("books", tmp_path, str(corpus), 0.1, tokenizer="gpt2")["tokenizer"] == "gpt2"
    (corpus / "a.txt").write_text("changed")
    changed = prepare("books", tmp_path, str(corpus), 0.1, tokenizer="gpt2")
    assert changed["source_sha256"] != meta["source_sha256"]
    # Refused input leaves the prepared dataset as it was.
    (corpus / "z.txt").write_bytes(b"\x00\x01binary")
    with pytest.raises(DataError, match="z.txt is not a text file"):
        prepare("books", tmp_path, str(corpus), 0.1, tokenizer="gpt2")
    assert read_meta(dataset_dir(tmp_path, "books")) == changed


@pytest.mark.parametrize(
    "files, source, message",
    [
        ({"image.txt": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"}, "image.txt", "image.txt is not a text file (it holds NUL bytes"),
        ({"utf16.txt": "hello".encode("utf-16")}, "utf16.txt", "utf16.txt is not a text file"),
        ({"a.txt": b"", "b.jsonl": b"\n"}, ".", "the corpus is empty"),
        ({"bad.jsonl": b'{"text": "ok"}\n{"body": "no text field"}\n'}, "bad.jsonl", 'bad.jsonl:2: not a JSON object with a "text" string'),
        ({"a.md": b"text"}, ".", "the folder holds no file of type .txt, .jsonl"),
        ({}, "*.txt", "no file matches this pattern"),
        ({}, "missing", "no such file or folder"),
    ],
)
def test_bad_corpus_is_one_line_naming_the_file(tmp_path, files, source, message):
    for name, payload in files.items():
        (tmp_path / name).write_bytes(payload)
    with pytest.raises(DataError) as err:
        prepare("mine", tmp_path / "data", str(tmp_path / source), 0.1, tokenizer="char")
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not (dataset_dir(tmp_path / "data", "mine") / "meta.json").exists()


def test_own_text_needs_a_source_and_a_tokenizer(tmp_path):
    with pytest.raises(DataError, match=r"dataset.name='shakespear' is not a built-in dataset .*dataset.source="):
        prepare("shakespear", tmp_path, None, 0.1)
    (tmp_path / "a.txt").write_text("text")
    with pytest.raises(DataError, match="dataset.tokenizer is not set: your own text needs char, gpt2, bpe, or a tokenizer.json"):
        prepare("mine", tmp_path, str(tmp_path / "a.txt"), 0.1)
