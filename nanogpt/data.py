"""Datasets: prepare raw text into token files once, then draw random training batches from them.

A prepared dataset is a folder `<data_dir>/<name>/` holding `train.bin` and `val.bin` (uint16
token ids) and `meta.json` (tokenizer, vocabulary, token counts). `meta.json` is written last,
atomically, so a folder with a valid `meta.json` always has complete token files beside it.

Built-in datasets: `shakespeare_char` (tiny Shakespeare, one token per character),
`shakespeare` (tiny Shakespeare, GPT-2 BPE) and `openwebtext` (GPT-2 BPE, see openwebtext.py).
Any other `dataset.name` is your own text, read from `dataset.source` (a file, a folder or a
glob of .txt and .jsonl files) and tokenized with `dataset.tokenizer` (char or gpt2).
"""

from __future__ import annotations

import base64
import fcntl
import functools
import glob
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

import numpy as np
import tiktoken
from tiktoken_ext.openai_public import r50k_pat_str
import torch

from nanogpt.bundled import read_bundled
from nanogpt.checkpoint import default_file_mode
from nanogpt.errors import DataError

log = logging.getLogger(__name__)

META_FORMAT = 1


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


# tiktoken's name for GPT-2's BPE: its 50,257 tokens and merges are byte-for-byte those of
# get_encoding("gpt2"), which tiktoken builds from OpenAI's two original files. The package ships
# this encoding's ranks file, so GPT-2's tokenizer never needs a network or a cache.
GPT2_ENCODING = "r50k_base"
GPT2_VOCAB_SIZE = 50257
END_OF_TEXT = "<|endoftext|>"


def gpt2_encoding() -> tiktoken.Encoding:
    """GPT-2's BPE as a tiktoken Encoding, built from the shipped ranks file (each line: a
    token's bytes in base64, then its rank)."""
    ranks = {}
    for line in read_bundled(f"{GPT2_ENCODING}.tiktoken").splitlines():
        token, rank = line.split()
        ranks[base64.b64decode(token)] = int(rank)
    return tiktoken.Encoding(
        name=GPT2_ENCODING,
        pat_str=r50k_pat_str,  # how GPT-2 splits text into pieces before BPE: tiktoken's own regex
        mergeable_ranks=ranks,
        special_tokens={END_OF_TEXT: GPT2_VOCAB_SIZE - 1},
        explicit_n_vocab=GPT2_VOCAB_SIZE,
    )


class GPT2Tokenizer:
    """GPT-2's byte-level BPE. "<|endoftext|>" inside a text is encoded as plain text: the
    end-of-text token only ever enters as a document separator, never from what a file says."""

    def __init__(self) -> None:
        self.encoding = gpt2_encoding()
        self.eot_token = self.encoding.eot_token

    @property
    def vocab_size(self) -> int:
        return self.encoding.n_vocab

    def encode(self, text: str) -> list[int]:
        return self.encoding.encode_ordinary(text)

    def decode(self, ids: list[int]) -> str:
        return self.encoding.decode(ids)


@functools.cache
def gpt2_tokenizer() -> GPT2Tokenizer:
    """One shared instance: loading the BPE ranks takes a moment, and worker processes that
    tokenize in parallel reach it by this module-level name instead of pickling it."""
    return GPT2Tokenizer()


def load_tokenizer(meta: dict) -> Tokenizer:
    if meta.get("tokenizer") == "char":
        return CharTokenizer(meta["itos"])
    if meta.get("tokenizer") == "gpt2":
        return gpt2_tokenizer()
    raise DataError(f"unknown tokenizer {meta.get('tokenizer')!r} in the dataset's meta.json")


def same_tokenizer(meta: dict, other: dict) -> bool:
    """Whether two prepared datasets map text to the same ids."""
    return meta["tokenizer"] == other["tokenizer"] and meta.get("itos") == other.get("itos")


def padded_vocab_size(meta: dict) -> int:
    """Embedding rows for a model trained from scratch on this dataset. GPT-2's 50,257 tokens are
    rounded up to 50,304, a multiple of 64, because GPU matmuls are markedly faster on such sizes;
    the extra rows never occur as targets, and sampling never picks them. A character vocabulary
    is too small for the padding to matter and stays exact."""
    if meta["tokenizer"] == "gpt2":
        return -(-meta["vocab_size"] // 64) * 64
    return meta["vocab_size"]


# ----------------------------------------------------------------------------- preparation

# The built-in datasets and their tokenizers; every other name is a corpus of your own.
BUILTIN_TOKENIZERS = {"shakespeare_char": "char", "shakespeare": "gpt2", "openwebtext": "gpt2"}
TINY_SHAKESPEARE_DATASETS = ("shakespeare_char", "shakespeare")
# The files read from a dataset.source folder: your own text, or a local copy of openwebtext.
CORPUS_SUFFIXES = (".txt", ".jsonl")
OPENWEBTEXT_SUFFIXES = (".jsonl", ".json", ".parquet")


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


def prepare(
    name: str,
    data_dir: str | os.PathLike,
    source: str | None,
    val_fraction: float,
    force: bool = False,
    tokenizer: str | None = None,
) -> dict:
    """Prepare dataset `name` unless a valid prepared copy (from the same source, with the same
    tokenizer and split) is there already. Safe to call from several processes at once: they take
    turns on a lock file."""
    tokenizer = _tokenizer_name(name, source, tokenizer)
    folder = dataset_dir(data_dir, name)
    folder.mkdir(parents=True, exist_ok=True)
    with _locked(folder / ".prepare.lock"):
        meta = read_meta(folder)
        same_recipe = bool(meta) and not force and meta.get("val_fraction") == val_fraction and meta.get("tokenizer") == tokenizer
        if same_recipe and source is None:
            return meta  # prepared before; without an explicit source there is nothing to compare
        files = _source_files(name, folder, source)
        fingerprint = _fingerprint(files)
        if same_recipe and meta.get("source_sha256") == fingerprint:
            return meta
        where = source if source is not None else str(files[0]) if files else None
        log.info("preparing dataset %s from %s into %s", name, where or "the Hugging Face hub", folder)
        # Read (and so check) the text before touching the folder: refused input leaves it as it was.
        documents = [] if name == "openwebtext" else _read_documents(files, strict=name in BUILTIN_TOKENIZERS)
        if name != "openwebtext" and not documents:
            raise DataError(f"dataset.source={where!r}: the corpus is empty; point it at a file or folder that holds text")
        # Remove the old meta first: from here until the new one lands, the folder is "not prepared".
        (folder / "meta.json").unlink(missing_ok=True)
        if name == "openwebtext":
            from nanogpt.openwebtext import prepare_openwebtext  # needs the optional `datasets` package

            meta = prepare_openwebtext(files, folder, val_fraction)
        else:
            meta = _tokenize_documents(documents, folder, val_fraction, tokenizer)
        meta.update(format=META_FORMAT, dataset=name, source=where, source_sha256=fingerprint, val_fraction=val_fraction)
        _atomic_write_bytes(folder / "meta.json", json.dumps(meta, indent=1, ensure_ascii=False).encode())
        log.info("prepared %s: %d train / %d val tokens, vocabulary %d", name, meta["train_tokens"], meta["val_tokens"], meta["vocab_size"])
        return meta


def _tokenizer_name(name: str, source: str | None, tokenizer: str | None) -> str:
    """The tokenizer of dataset `name`: a built-in dataset's own, or the one asked for."""
    builtin = BUILTIN_TOKENIZERS.get(name)
    if builtin is not None:
        if tokenizer not in (None, builtin):
            raise DataError(
                f"dataset.tokenizer={tokenizer!r} is invalid for dataset {name}, which is tokenized with {builtin} "
                f"(for other tokenizations of its text give it another dataset.name)"
            )
        return builtin
    if source is None:
        raise DataError(
            f"dataset.name={name!r} is not a built-in dataset ({', '.join(BUILTIN_TOKENIZERS)}); "
            f"for your own text pass dataset.source=<a file, folder or glob of .txt/.jsonl files>"
        )
    if tokenizer not in ("char", "gpt2"):
        raise DataError(f"dataset.tokenizer={tokenizer!r} is invalid: your own text needs dataset.tokenizer=char or gpt2")
    return tokenizer


def _source_files(name: str, folder: Path, source: str | None) -> list[Path]:
    """The raw text files: tiny Shakespeare's (dataset.source, the cached copy or the packaged one), or
    those that dataset.source names. An empty list means openwebtext from the Hugging Face hub."""
    if name in TINY_SHAKESPEARE_DATASETS:
        return [_tiny_shakespeare(name, folder, source)]
    if source is None:
        return []
    path = Path(source).expanduser()
    if any(ch in source for ch in "*?["):
        files = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
        if not files:
            raise DataError(f"dataset.source={source!r}: no file matches this pattern")
    elif path.is_dir():
        suffixes = OPENWEBTEXT_SUFFIXES if name == "openwebtext" else CORPUS_SUFFIXES
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in suffixes)
        if not files:
            raise DataError(f"dataset.source={source!r}: the folder holds no file of type {', '.join(suffixes)}")
    elif path.is_file():
        files = [path]
    else:
        raise DataError(f"dataset.source={source!r}: no such file or folder")
    return files


def _tiny_shakespeare(name: str, folder: Path, source: str | None) -> Path:
    """Tiny Shakespeare from (in order) dataset.source, the cached folder/input.txt, or the copy
    shipped inside the package (written to folder/input.txt): no download is ever needed."""
    if source is not None:
        path = Path(source).expanduser()
        if not path.is_file():
            raise DataError(f"dataset.source={source!r}: no such file (pass the path of a text file, or source=null for the packaged copy)")
        return path
    cached = folder / "input.txt"
    if not cached.is_file():
        log.info("dataset %s: tiny Shakespeare from the packaged copy", name)
        _atomic_write_bytes(cached, read_bundled("tinyshakespeare.txt"))
    return cached


def _read_documents(files: list[Path], strict: bool) -> list[str]:
    """The documents of the corpus, in file order: a .txt file is one document, each line of a
    .jsonl file one document (its "text"). Empty files are skipped with a note."""
    documents = []
    for path in files:
        text = _read_text(path) if strict else _read_corpus_file(path)
        found = _jsonl_documents(path, text) if path.suffix == ".jsonl" else [text]
        found = [doc for doc in found if doc]
        if not found:
            log.warning("%s is empty: skipped", path)
        documents.extend(found)
    return documents


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _read_corpus_file(path: Path) -> str:
    """A file of your own corpus as text. UTF-8 is expected; a file that is not valid UTF-8 (older
    text is often Latin-1 or Windows-1252) is read as Latin-1, which maps every byte to a character,
    with a warning naming it. A NUL byte means the file is not text at all (binary, or UTF-16)."""
    try:
        payload = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read it ({exc.strerror})") from None
    if b"\0" in payload:
        raise DataError(
            f"{path} is not a text file (it holds NUL bytes: binary data, or UTF-16 text); "
            f"remove it from dataset.source, or convert it to UTF-8"
        )
    try:
        return payload.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        log.warning("%s is not UTF-8 (%s at byte %d): read as Latin-1", path, exc.reason, exc.start)
        return payload.decode("latin-1")


def _jsonl_documents(path: Path, text: str) -> list[str]:
    documents = []
    # Split on newlines only: JSON strings may hold raw U+2028 and other characters that
    # str.splitlines() would also treat as line breaks.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise DataError(f'{path}:{number}: not a JSON object with a "text" string, as every line of a .jsonl file must be')
        documents.append(record["text"])
    return documents


def _split_documents(documents: list[str], val_fraction: float) -> tuple[list[str], list[str]]:
    """Cut the corpus (its documents one after another) after (1 - val_fraction) of its
    characters, as nanoGPT cuts tiny Shakespeare; the document at the cut is split in two."""
    cut = int(sum(len(doc) for doc in documents) * (1 - val_fraction))
    train, val, seen = [], [], 0
    for doc in documents:
        if seen + len(doc) <= cut:
            train.append(doc)
        elif seen >= cut:
            val.append(doc)
        else:
            train.append(doc[: cut - seen])
            val.append(doc[cut - seen :])
        seen += len(doc)
    return train, val


def _tokenize_documents(documents: list[str], folder: Path, val_fraction: float, tokenizer: str) -> dict:
    """Split, tokenize and write the corpus. Within a split, documents are joined by a newline
    (characters) or GPT-2's end-of-text token (BPE), so that one never runs into the next."""
    splits = dict(zip(("train", "val"), _split_documents(documents, val_fraction)))
    meta: dict = {"tokenizer": tokenizer}
    if tokenizer == "char":
        chars = sorted(set("\n".join(documents)))
        if len(chars) > 2**16:
            raise DataError(f"the corpus holds {len(chars):,} distinct characters, more than the 65,536 a uint16 token file can hold; use dataset.tokenizer=gpt2")
        char_tokenizer = CharTokenizer(chars)
        ids = {split: char_tokenizer.encode("\n".join(docs)) for split, docs in splits.items()}
        meta.update(vocab_size=len(chars), itos=chars)
    else:
        bpe = gpt2_tokenizer()
        ids = {}
        for split, docs in splits.items():
            ids[split] = []
            for i, doc in enumerate(docs):
                if i:
                    ids[split].append(bpe.eot_token)
                ids[split].extend(bpe.encode(doc))
        meta.update(vocab_size=bpe.vocab_size)
    for split, split_ids in ids.items():
        _atomic_write_bytes(folder / f"{split}.bin", np.array(split_ids, dtype=np.uint16).tobytes())
        meta[f"{split}_tokens"] = len(split_ids)
    return meta


def _fingerprint(files: list[Path]) -> str | None:
    """What identifies the source: one file's sha256 (comparable with a published checksum), or
    a digest of every file's name and sha256; None for a download from the hub."""
    if len(files) == 1:
        return _sha256(files[0])
    if not files:
        return None
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path}\0{_sha256(path)}\n".encode())
    return digest.hexdigest()


@contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """A temp path in the same folder to write; once the block ends, it is fsynced and renamed
    over `path`, so readers see the old file or the new one, never a part. Removed on error."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, default_file_mode())
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _atomic_write_bytes(path: Path, payload: bytes) -> None:
    with atomic_file(path) as tmp:
        tmp.write_bytes(payload)


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

    def draw_offsets(self, count: int, generator: torch.Generator) -> torch.Tensor:
        """`count` random window starts from `generator` (a CPU generator, so the stream of
        batches depends only on its seed and state, never on the device)."""
        return torch.randint(len(self.tokens) - self.block_size, (count,), generator=generator)

    def batch(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return self.windows(self.draw_offsets(batch_size, generator))

    def windows(self, starts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets) for windows at `starts`; targets are the inputs shifted by one."""
        windows = torch.from_numpy(self.tokens[starts.numpy()[:, None] + self._window].astype(np.int64))
        if self.device.type == "cuda":
            windows = windows.pin_memory().to(self.device, non_blocking=True)
        elif self.device.type != "cpu":
            windows = windows.to(self.device)
        return windows[:, :-1], windows[:, 1:]


def open_splits(folder: Path, block_size: int, device: str) -> dict[str, TokenFile]:
    return {split: TokenFile(folder / f"{split}.bin", block_size, device) for split in ("train", "val")}
