"""Datasets: prepare raw text into token files once, then draw random training batches from them.

A prepared dataset is a folder `<data_dir>/<name>/` holding `train.bin` and `val.bin` (uint16
token ids) and `meta.json` (tokenizer, vocabulary, token counts). `meta.json` is written last,
atomically, so a folder with a valid `meta.json` always has complete token files beside it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

log = logging.getLogger(__name__)

TINY_SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
META_FORMAT = 1


class DataError(RuntimeError):
    """Missing, unreadable or unusable data; printed as one line."""


# ----------------------------------------------------------------------------- tokenizers


class Tokenizer(Protocol):
    """Text to token ids and back. decode() of ids that end inside a character (a byte-level BPE
    can split one) ends with U+FFFD, the replacement character, like bytes.decode(errors="replace")."""

    @property
    def vocab_size(self) -> int: ...

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


class CharTokenizer:
    """One token per character of a fixed vocabulary (sorted characters of the corpus)."""

    def __init__(self, itos: list[str]):
        self.itos = itos
        self.stoi = {ch: i for i, ch in enumerate(itos)}

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> list[int]:
        unknown = sorted(set(text) - self.stoi.keys())
        if unknown:
            shown = ", ".join(repr(c) for c in unknown[:5])
            raise DataError(f"the text holds {len(unknown)} character(s) outside this model's vocabulary: {shown}")
        return [self.stoi[ch] for ch in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(self.itos[i] for i in ids)


def load_tokenizer(meta: dict) -> Tokenizer:
    if meta.get("tokenizer") == "char":
        return CharTokenizer(meta["itos"])
    raise DataError(f"unknown tokenizer {meta.get('tokenizer')!r} in the dataset's meta.json")


# ----------------------------------------------------------------------------- preparation


def dataset_dir(data_dir: str | os.PathLike, name: str) -> Path:
    return Path(data_dir).expanduser() / name


def read_meta(folder: Path) -> dict | None:
    """The dataset's meta.json if the folder holds a complete prepared dataset, else None."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
        if meta.get("format") != META_FORMAT:
            return None
        for split in ("train", "val"):
            if (folder / f"{split}.bin").stat().st_size != 2 * meta[f"{split}_tokens"]:
                return None
        return meta
    except (OSError, ValueError, KeyError):
        return None


def prepare(name: str, data_dir: str | os.PathLike, source: str | None, val_fraction: float, force: bool = False) -> dict:
    """Prepare dataset `name` unless a valid prepared copy (from the same source) is there already.
    Safe to call from several processes at once: they take turns on a lock file."""
    if name not in PREPARERS:
        raise DataError(f"dataset.name={name!r} is unknown: known datasets are {', '.join(sorted(PREPARERS))}")
    folder = dataset_dir(data_dir, name)
    folder.mkdir(parents=True, exist_ok=True)
    with _locked(folder / ".prepare.lock"):
        meta = read_meta(folder)
        if meta and not force and meta.get("val_fraction") == val_fraction and source is None:
            return meta  # prepared before; without an explicit source there is nothing to compare
        text_path = _find_source(name, folder, source)
        source_hash = _sha256(text_path)
        if meta and not force and meta.get("val_fraction") == val_fraction and meta.get("source_sha256") == source_hash:
            return meta
        log.info("preparing dataset %s from %s into %s", name, text_path, folder)
        # Remove the old meta first: from here until the new one lands, the folder is "not prepared".
        (folder / "meta.json").unlink(missing_ok=True)
        meta = PREPARERS[name](text_path, folder, val_fraction)
        meta.update(format=META_FORMAT, dataset=name, source=str(text_path), source_sha256=source_hash, val_fraction=val_fraction)
        _atomic_write_bytes(folder / "meta.json", json.dumps(meta, indent=1, ensure_ascii=False).encode())
        log.info("prepared %s: %d train / %d val tokens, vocabulary %d", name, meta["train_tokens"], meta["val_tokens"], meta["vocab_size"])
        return meta


def _prepare_shakespeare_char(text_path: Path, folder: Path, val_fraction: float) -> dict:
    text = _read_text(text_path)
    chars = sorted(set(text))
    tokenizer = CharTokenizer(chars)
    ids = np.array(tokenizer.encode(text), dtype=np.uint16)
    n_train = int(len(ids) * (1 - val_fraction))
    _write_tokens(folder / "train.bin", ids[:n_train])
    _write_tokens(folder / "val.bin", ids[n_train:])
    return {"tokenizer": "char", "vocab_size": len(chars), "itos": chars, "train_tokens": n_train, "val_tokens": len(ids) - n_train}


PREPARERS = {"shakespeare_char": _prepare_shakespeare_char}
DOWNLOAD_URLS = {"shakespeare_char": TINY_SHAKESPEARE_URL}


def _find_source(name: str, folder: Path, source: str | None) -> Path:
    """The raw text, from (in order) dataset.source, the cached folder/input.txt, or a download."""
    if source is not None:
        path = Path(source).expanduser()
        if not path.is_file():
            raise DataError(f"dataset.source={source!r}: no such file (pass the path of a text file, or source=null to download)")
        return path
    cached = folder / "input.txt"
    if cached.is_file():
        return cached
    url = DOWNLOAD_URLS[name]
    log.info("downloading %s", url)
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            payload = response.read()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DataError(
            f"dataset {name}: no local copy at {cached} and the download from {url} failed ({reason}); "
            f"put the text at {cached} or pass dataset.source=/path/to/input.txt"
        ) from None
    _atomic_write_bytes(cached, payload)
    return cached


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _write_tokens(path: Path, ids: np.ndarray) -> None:
    _atomic_write_bytes(path, ids.astype(np.uint16).tobytes())


def _atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write to a temp file in the same folder, fsync, then rename over the target."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    with open(lock_path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# ----------------------------------------------------------------------------- batches


class TokenFile:
    """The tokens of one split, memory-mapped, with random (input, target) windows drawn from it."""

    def __init__(self, path: Path, block_size: int, device: str):
        self.path = path
        self.tokens = np.memmap(path, dtype=np.uint16, mode="r")
        self.block_size = block_size
        self.device = torch.device(device)
        if len(self.tokens) < block_size + 1:
            raise DataError(
                f"{path} holds {len(self.tokens)} tokens, fewer than dataset.block_size+1={block_size + 1}; "
                f"use a smaller dataset.block_size or a larger corpus"
            )
        self._window = np.arange(block_size + 1)

    def batch(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """batch_size windows at offsets drawn from `generator` (a CPU generator, so the stream of
        batches depends only on its seed and state, never on the device)."""
        starts = torch.randint(len(self.tokens) - self.block_size, (batch_size,), generator=generator).numpy()
        windows = torch.from_numpy(self.tokens[starts[:, None] + self._window].astype(np.int64))
        if self.device.type == "cuda":
            windows = windows.pin_memory().to(self.device, non_blocking=True)
        elif self.device.type != "cpu":
            windows = windows.to(self.device)
        return windows[:, :-1], windows[:, 1:]


def open_splits(folder: Path, block_size: int, device: str) -> dict[str, TokenFile]:
    return {split: TokenFile(folder / f"{split}.bin", block_size, device) for split in ("train", "val")}
