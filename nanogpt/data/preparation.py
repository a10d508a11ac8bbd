"""Preparing a dataset: its raw text split into train and val, tokenized, and written as uint16
token files beside a meta.json that is written last. Processes take turns on a lock file."""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from nanogpt.data.files import atomic_write_bytes
from nanogpt.data.sources import read_documents, source_files, source_fingerprint
from nanogpt.data.tokenizers import CharTokenizer, gpt2_tokenizer
from nanogpt.errors import DataError

log = logging.getLogger(__name__)

META_FORMAT = 1

# The built-in datasets and their tokenizers; every other name is a corpus of your own.
BUILTIN_TOKENIZERS = {"shakespeare_char": "char", "shakespeare": "gpt2", "openwebtext": "gpt2"}


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
        files = source_files(name, folder, source)
        fingerprint = source_fingerprint(files)
        if same_recipe and meta.get("source_sha256") == fingerprint:
            return meta
        where = source if source is not None else str(files[0]) if files else None
        log.info("preparing dataset %s from %s into %s", name, where or "the Hugging Face hub", folder)
        # Read (and so check) the text before touching the folder: refused input leaves it as it was.
        documents = [] if name == "openwebtext" else read_documents(files, strict=name in BUILTIN_TOKENIZERS)
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
        atomic_write_bytes(folder / "meta.json", json.dumps(meta, indent=1, ensure_ascii=False).encode())
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
        atomic_write_bytes(folder / f"{split}.bin", np.array(split_ids, dtype=np.uint16).tobytes())
        meta[f"{split}_tokens"] = len(split_ids)
    return meta


@contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    with open(lock_path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
