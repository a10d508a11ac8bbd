import hashlib
import json
import os
import socket

import numpy as np
import pytest
import torch

from nanogpt.data import CharTokenizer, DataError, TokenFile, bundled, dataset_dir, load_tokenizer, prepare, read_meta
from tests.conftest import TINY_SHAKESPEARE_SHA256


def test_real_tiny_shakespeare_split(data_dir, shakespeare_path):
    meta = read_meta(dataset_dir(data_dir, "shakespeare_char"))
    assert meta["source_sha256"] == TINY_SHAKESPEARE_SHA256
    assert (meta["train_tokens"], meta["val_tokens"], meta["vocab_size"]) == (1_003_854, 111_540, 65)
    text = shakespeare_path.read_text()
    tokenizer = load_tokenizer(meta)
    train = np.fromfile(dataset_dir(data_dir, "shakespeare_char") / "train.bin", dtype=np.uint16)
    assert tokenizer.decode(train[:200].tolist()) == text[:200]
    assert meta["itos"][0] == "\n" and "".join(meta["itos"]).endswith("z")


def test_char_round_trip_and_unknown_characters():
    tok = CharTokenizer(sorted(set("hello world\n")))
    assert tok.decode(tok.encode("hello\nworld")) == "hello\nworld"
    with pytest.raises(DataError, match="outside this model's vocabulary: 'Z'"):
        tok.encode("helloZ")


def test_prepare_is_idempotent(tmp_path):
    src = tmp_path / "input.txt"
    src.write_text("abcdefghij" * 100)
    meta = prepare("shakespeare_char", tmp_path / "d", str(src), 0.1)
    bins = dataset_dir(tmp_path / "d", "shakespeare_char") / "train.bin"
    mtime = bins.stat().st_mtime_ns
    assert prepare("shakespeare_char", tmp_path / "d", str(src), 0.1) == meta
    assert prepare("shakespeare_char", tmp_path / "d", None, 0.1) == meta  # no source needed once prepared
    assert bins.stat().st_mtime_ns == mtime
    src.write_text("a different corpus " * 100)
    assert prepare("shakespeare_char", tmp_path / "d", str(src), 0.1)["source_sha256"] != meta["source_sha256"]


def test_half_written_dataset_is_never_trusted(tmp_path):
    src = tmp_path / "input.txt"
    src.write_text("abcdefghij" * 100)
    folder = dataset_dir(tmp_path, "shakespeare_char")
    prepare("shakespeare_char", tmp_path, str(src), 0.1)
    # A crash after the bins were replaced but before meta.json: the meta no longer matches.
    with open(folder / "train.bin", "r+b") as f:
        f.truncate(10)
    assert read_meta(folder) is None
    prepare("shakespeare_char", tmp_path, str(src), 0.1)
    assert read_meta(folder) is not None and (folder / "train.bin").stat().st_size == 2 * 900
    # No temp files are left behind.
    assert not [p for p in os.listdir(folder) if p.endswith(".tmp")]


def test_missing_source_file_names_the_key(tmp_path):
    with pytest.raises(DataError, match=r"dataset.source='/no/such/input.txt': no such file"):
        prepare("shakespeare_char", tmp_path, "/no/such/input.txt", 0.1)


def test_tiny_shakespeare_comes_from_the_package_without_a_network(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    meta = prepare("shakespeare_char", tmp_path, None, 0.1)
    text = (tmp_path / "shakespeare_char" / "input.txt").read_bytes()
    assert hashlib.sha256(text).hexdigest() == TINY_SHAKESPEARE_SHA256
    assert meta["source_sha256"] == TINY_SHAKESPEARE_SHA256
    assert meta["train_tokens"] + meta["val_tokens"] == 1_115_394 and meta["vocab_size"] == 65


def test_a_damaged_packaged_copy_is_refused(tmp_path, monkeypatch):
    real = bundled.gzip.decompress
    monkeypatch.setattr(bundled.gzip, "decompress", lambda payload: real(payload)[:-1] + b"?")
    with pytest.raises(DataError, match=r"packaged copy of tinyshakespeare.txt is damaged \(its sha256 differs\); reinstall nanogpt"):
        prepare("shakespeare_char", tmp_path, None, 0.1)
    assert not (tmp_path / "shakespeare_char" / "input.txt").exists()


def test_non_utf8_source_is_refused(tmp_path):
    src = tmp_path / "input.txt"
    src.write_bytes(b"abc\xff\xfe" * 10)
    with pytest.raises(DataError, match="not UTF-8"):
        prepare("shakespeare_char", tmp_path / "d", str(src), 0.1)


def test_corpus_shorter_than_a_block_is_refused(tmp_path):
    src = tmp_path / "input.txt"
    src.write_text("short text here " * 5)
    prepare("shakespeare_char", tmp_path, str(src), 0.1)
    with pytest.raises(DataError, match=r"val.bin holds 8 tokens, fewer than dataset.block_size\+1=65"):
        TokenFile(dataset_dir(tmp_path, "shakespeare_char") / "val.bin", 64, "cpu")


def test_batches_are_shifted_windows_within_bounds(tmp_path):
    path = tmp_path / "tokens.bin"
    np.arange(1000, dtype=np.uint16).tofile(path)
    tokens = TokenFile(path, block_size=16, device="cpu")
    g = torch.Generator().manual_seed(0)
    seen_max = 0
    for _ in range(200):
        x, y = tokens.batch(8, g)
        assert x.shape == y.shape == (8, 16) and x.dtype == torch.long
        assert torch.equal(y, x + 1)  # targets are the inputs shifted by one
        assert torch.equal(x[:, 1:] - x[:, :-1], torch.ones(8, 15, dtype=torch.long))
        seen_max = max(seen_max, int(y.max()))
    assert seen_max <= 999 and seen_max > 990  # the last token is reachable, nothing past it


def test_same_generator_state_same_batches(tmp_path):
    path = tmp_path / "tokens.bin"
    np.arange(5000, dtype=np.uint16).tofile(path)
    tokens = TokenFile(path, block_size=8, device="cpu")
    g = torch.Generator().manual_seed(3)
    tokens.batch(4, g)
    state = g.get_state()
    a = tokens.batch(4, g)
    g2 = torch.Generator()
    g2.set_state(state)
    assert torch.equal(a[0], tokens.batch(4, g2)[0])


def test_meta_is_json_not_pickle(data_dir):
    folder = dataset_dir(data_dir, "shakespeare_char")
    assert json.loads((folder / "meta.json").read_text())["tokenizer"] == "char"
    assert not list(folder.glob("*.pkl"))
