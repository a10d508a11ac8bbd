"""Preparing a dataset: its text split into train and val, tokenized on every core and written as
token files, with meta.json written last. Processes take turns on a lock file.

Text files (your own, and tiny Shakespeare) are read twice as a stream: once to check them, count
their characters and fit the tokenizer (a char vocabulary, or a BPE trained on them), once to
encode them. Their last val_fraction of characters is the val split, as nanoGPT cuts tiny
Shakespeare. A Hugging Face dataset is streamed record by record, and one record in every
1/val_fraction, drawn at random (seeded), goes to val. Within a split, documents are joined by the
tokenizer's document separator. Memory stays bounded whatever the corpus size: text is handled a
megabyte at a time, and ids are appended to temp files that are renamed into place at the end.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import logging
import math
import os
import re
import socket
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from nanogpt.data.encoding import PIECE_CHARS, SEPARATOR, ParallelEncoder, Unit, pieces, worker_count
from nanogpt.data.hub import HubSource
from nanogpt.data.progress import Progress
from nanogpt.data.sources import Corpus, source_files, source_fingerprint
from nanogpt.data.tokenizers import CharTokenizer, HFTokenizer, Tokenizer, gpt2_tokenizer, tokenizer_from_file, train_bpe
from nanogpt.data.tokens import DTYPES, TokenWriter, token_dtype
from nanogpt.errors import DataError, storage_error, storage_fault
from nanogpt.files import atomic_write_bytes, remove_temp_files

log = logging.getLogger(__name__)

# 2: token files may be uint32 ("dtype"), tokenizers may be bpe or file. 1 (uint16 only) still reads.
META_FORMAT = 2
READABLE_META_FORMATS = (1, 2)

# The built-in datasets and their tokenizers; every other name is a corpus of your own.
BUILTIN_TOKENIZERS = {"shakespeare_char": "char", "shakespeare": "gpt2", "openwebtext": "gpt2"}
NAMED_TOKENIZERS = ("char", "gpt2", "bpe")
# dataset.tokenizer=bpe without dataset.vocab_size.
DEFAULT_BPE_VOCAB_SIZE = 8192
# The tokenizer of a bpe or file dataset, saved beside its token files.
TOKENIZER_FILE = "tokenizer.json"
# What a dataset name may be: one path component that is not hidden, "." or "..".
PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
# Seed of the random choice of val records of a Hugging Face dataset (nanoGPT's split seed).
SPLIT_SEED = 2357


def dataset_dir(data_dir: str | os.PathLike, name: str) -> Path:
    """The folder of dataset `name` under data_dir. The name is a plain folder name, whatever it came
    from (the command line, or a checkpoint's stored config): never a path that could lead outside."""
    if not PLAIN_NAME.fullmatch(str(name)):
        raise DataError(
            f"dataset.name={name!r} is invalid: a dataset name is a plain folder name (letters, digits, '.', '_', '-'; "
            f"no '/', not starting with '.'); to read files elsewhere use dataset.source"
        )
    return Path(data_dir).expanduser() / name


def read_meta(folder: Path) -> dict | None:
    """The dataset's meta.json (with its tokenizer.json, if it has one, as "tokenizer_json") if the
    folder holds a complete prepared dataset, else None."""
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        if not _well_formed(meta) or meta.get("format") not in READABLE_META_FORMATS:
            return None
        meta.setdefault("dtype", "uint16")  # format 1 wrote uint16 only
        itemsize = DTYPES[meta["dtype"]].itemsize
        for split in ("train", "val"):
            if (folder / f"{split}.bin").stat().st_size != itemsize * meta[f"{split}_tokens"]:
                return None
        if "tokenizer_file" in meta:
            meta["tokenizer_json"] = (folder / meta["tokenizer_file"]).read_text(encoding="utf-8")
        return meta
    except (OSError, ValueError, KeyError):
        return None


# The keys every meta.json holds, and their types: a file of another shape (valid JSON, but
# written by hand or by something else) is no prepared dataset, which is then prepared again.
META_KEYS = {"format": int, "dataset": str, "tokenizer": str, "vocab_size": int, "train_tokens": int, "val_tokens": int}
META_OPTIONAL_KEYS = {"dtype": str, "tokenizer_file": str, "itos": list, "source": str, "source_sha256": str}


def _well_formed(meta: Any) -> bool:
    if not isinstance(meta, dict):
        return False
    required = all(type(meta.get(key)) is kind for key, kind in META_KEYS.items())
    optional = all(type(meta[key]) is kind for key, kind in META_OPTIONAL_KEYS.items() if meta.get(key) is not None)
    return required and optional and all(isinstance(ch, str) for ch in meta.get("itos") or [])


def prepare_config(dataset: Any, force: bool = False) -> dict:
    """prepare() for a `dataset` config group (DatasetConfig)."""
    hub = None
    if dataset.hf_path is not None:
        hub = HubSource(str(dataset.hf_path), dataset.hf_config, dataset.hf_split, dataset.text_field)
    return prepare(
        dataset.name, dataset.data_dir, dataset.source, dataset.val_fraction, force=force,
        tokenizer=dataset.tokenizer, vocab_size=dataset.vocab_size, hub=hub, wait_s=dataset.prepare_wait_s,
    )  # fmt: skip


def prepare(
    name: str,
    data_dir: str | os.PathLike,
    source: str | None,
    val_fraction: float,
    force: bool = False,
    tokenizer: str | None = None,
    vocab_size: int | None = None,
    hub: HubSource | None = None,
    workers: int | None = None,
    wait_s: float | None = None,
) -> dict:
    """Prepare dataset `name` unless a valid prepared copy (from the same source, with the same
    tokenizer and split) is there already. Safe to call from several processes at once: they take
    turns on a lock file. `workers`: processes that tokenize (None: every core this process may use);
    `wait_s`: how long to wait for another process's preparation of the same dataset (None: no limit)."""
    kind = _tokenizer_kind(name, source, tokenizer, vocab_size, hub)
    given_tokenizer = tokenizer_from_file(str(tokenizer)) if kind == "file" else None
    recipe: dict[str, Any] = {"tokenizer": kind, "val_fraction": val_fraction}
    if kind == "bpe":
        recipe["bpe_vocab_size"] = vocab_size or DEFAULT_BPE_VOCAB_SIZE
    if given_tokenizer is not None:
        recipe["tokenizer_sha256"] = given_tokenizer.sha256
    folder = dataset_dir(data_dir, name)
    _check_is_own(folder, name)
    # A prepared dataset is read without the lock (meta.json lands last, atomically), so a dataset on
    # a read-only disk, or one another process is re-preparing, is usable as it is.
    meta = _prepared(folder, recipe, force, source, hub)
    if meta is not None:
        return meta
    created = not folder.exists()
    try:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _cannot_write(exc, folder) from None
        with _locked(folder / LOCK_FILE, name, wait_s):
            # Under the lock no other process is writing here: temp files are what a kill left behind.
            for path in remove_temp_files(folder):
                log.info("removed %s, left by an interrupted preparation", path)
            meta = _prepared(folder, recipe, force, source, hub)  # another process may have just prepared it
            if meta is not None:
                return meta
            return _prepare_now(name, folder, kind, recipe, given_tokenizer, source, hub, workers)
    finally:
        if created and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()  # a refused first preparation leaves no folder behind


def _check_is_own(folder: Path, name: str) -> None:
    """Refuse a folder that holds another dataset's preparation (copied or renamed into place): its
    tokens would be trained on under this name, or, prepared again, a copy someone made on purpose
    would be overwritten."""
    meta = read_meta(folder)
    if meta is not None and meta["dataset"] != name:
        raise DataError(
            f"{folder} holds the prepared dataset {meta['dataset']!r} (from {meta.get('source', '?')}), not {name!r}: "
            f"use dataset.name={meta['dataset']}, or move that folder away and prepare {name} anew"
        )


def _prepared(folder: Path, recipe: dict, force: bool, source: str | None, hub: HubSource | None) -> dict | None:
    """The prepared dataset in `folder` if it is there, complete, and made by this recipe from this source."""
    meta = read_meta(folder)
    if meta is None or force or any(meta.get(key) != value for key, value in recipe.items()):
        return None
    if source is None and hub is None:
        return meta  # a built-in dataset prepared before; without an explicit source there is nothing to compare
    fingerprint = hub.fingerprint() if hub is not None else source_fingerprint(source_files(meta["dataset"], folder, source))
    return meta if meta.get("source_sha256") == fingerprint else None


def _prepare_now(
    name: str, folder: Path, kind: str, recipe: dict, given: HFTokenizer | None, source: str | None, hub: HubSource | None, workers: int | None
) -> dict:
    files = [] if hub is not None else source_files(name, folder, source)
    fingerprint = hub.fingerprint() if hub is not None else source_fingerprint(files)
    where = hub.describe() if hub is not None else source if source is not None else str(files[0])
    log.info("preparing dataset %s from %s into %s", name, where, folder)
    job = _Preparation(name, folder, kind, recipe, given, workers or worker_count())
    if hub is not None:
        meta = job.from_hub(hub)
    else:
        meta = job.from_files(files, where, strict=name in BUILTIN_TOKENIZERS)
    meta.update(format=META_FORMAT, dataset=name, source=where, source_sha256=fingerprint, **recipe)
    on_disk = {key: value for key, value in meta.items() if key != "tokenizer_json"}
    atomic_write_bytes(folder / "meta.json", json.dumps(on_disk, indent=1, ensure_ascii=False).encode())
    log.info(
        "prepared %s: %s train / %s val tokens (%s), vocabulary %s",
        name, f"{meta['train_tokens']:,}", f"{meta['val_tokens']:,}", meta["dtype"], f"{meta['vocab_size']:,}",
    )  # fmt: skip
    return meta


def _tokenizer_kind(name: str, source: str | None, tokenizer: str | None, vocab_size: int | None, hub: HubSource | None) -> str:
    """char, gpt2, bpe or file: a built-in dataset's own tokenizer, or the one asked for."""
    builtin = BUILTIN_TOKENIZERS.get(name)
    if builtin is not None:
        if tokenizer not in (None, builtin):
            raise DataError(
                f"dataset.tokenizer={tokenizer!r} is invalid for dataset {name}, which is tokenized with {builtin} "
                f"(for other tokenizations of its text give it another dataset.name)"
            )
        tokenizer = builtin
    elif source is None and hub is None:
        raise DataError(
            f"dataset.name={name!r} is not a built-in dataset ({', '.join(BUILTIN_TOKENIZERS)}); for your own text pass "
            f"dataset.source=<a file, folder or glob of .txt/.jsonl files>, or dataset.hf_path=<a Hugging Face dataset>"
        )
    if source is not None and hub is not None:
        raise DataError("dataset.source and dataset.hf_path are both set: a dataset reads text files or a Hugging Face dataset; set one to null")
    if tokenizer is None:
        raise DataError("dataset.tokenizer is not set: your own text needs char, gpt2, bpe, or a tokenizer.json file or folder")
    kind = tokenizer if tokenizer in NAMED_TOKENIZERS else "file"
    if vocab_size is not None and kind != "bpe":
        raise DataError(f"dataset.vocab_size={vocab_size} is only for dataset.tokenizer=bpe (the size of the BPE to train); set it to null")
    return kind


class _Preparation:
    """One preparation of a dataset into `folder`: the tokenizer, the two passes, the files."""

    def __init__(self, name: str, folder: Path, kind: str, recipe: dict, given: HFTokenizer | None, workers: int):
        self.name, self.folder, self.kind, self.recipe, self.workers = name, folder, kind, recipe, workers
        self.tokenizer: Tokenizer | None = gpt2_tokenizer() if kind == "gpt2" else given

    def from_files(self, files: list[Path], where: str, strict: bool) -> dict:
        corpus = Corpus(files, strict)
        # Pass 1 reads and checks everything before the folder is touched: refused input leaves it as it was.
        with Progress(f"{'training a BPE on' if self.kind == 'bpe' else 'reading'} {self.name}", corpus.bytes) as progress:
            blocks = _counted(corpus.scan(), progress)
            if self.kind == "bpe":
                self.tokenizer = train_bpe(blocks, self.recipe["bpe_vocab_size"])
            elif self.kind == "char":
                self.tokenizer = _char_tokenizer(blocks)
            else:
                for _ in blocks:
                    pass
        if not corpus.documents_found:
            raise DataError(f"dataset.source={where!r}: the corpus is empty; point it at a file or folder that holds text")
        if self.kind == "char" and corpus.documents_found > 1 and "\n" not in self.tokenizer.stoi:
            self.tokenizer = CharTokenizer(sorted([*self.tokenizer.itos, "\n"]))  # the separator of documents
        bytes_per_char = corpus.bytes / max(corpus.characters, 1)
        cut = int(corpus.characters * (1 - self.recipe["val_fraction"]))
        units = _tail_split_units(corpus.documents(), cut)
        with Progress(f"tokenizing {self.name}", corpus.bytes) as progress:
            return self._write(units, lambda unit: progress.update(unit.chars * bytes_per_char))

    def from_hub(self, hub: HubSource) -> dict:
        if self.kind == "char":
            raise DataError("dataset.tokenizer=char is for text files; a Hugging Face dataset needs gpt2, bpe, or a tokenizer.json")
        if self.kind == "bpe":
            records, count = hub.records()
            with Progress(f"training a BPE on {self.name}", count, unit="docs") as progress:
                self.tokenizer = train_bpe(_counted(records, progress, per_item=True), self.recipe["bpe_vocab_size"])
        records, count = hub.records()
        units = _document_split_units(records, self.recipe["val_fraction"])
        with Progress(f"tokenizing {self.name}", count, unit="docs") as progress:
            meta = self._write(units, lambda unit: progress.update(unit.size))
        meta.update(hf_path=hub.path, hf_config=hub.config, hf_split=hub.split, text_field=hub.text_field)
        return meta

    def _write(self, units: Iterable[Unit], advance: Any) -> dict:
        """Encode the units into temp token files; only once both are complete, replace the old
        dataset (meta.json first, so that the folder never looks prepared in between)."""
        tokenizer = self.tokenizer
        assert tokenizer is not None
        dtype = token_dtype(tokenizer.vocab_size)
        encoder = ParallelEncoder(tokenizer, dtype, self.workers)
        with TokenWriter(self.folder / "train.bin", dtype) as train, TokenWriter(self.folder / "val.bin", dtype) as val:
            writers = {"train": train, "val": val}
            for unit, ids in encoder.map(units):
                writers[unit.split].append(ids)
                advance(unit)
            for split, writer in writers.items():
                if not writer.tokens:
                    raise DataError(
                        f"dataset {self.name}: the {split} split is empty (dataset.val_fraction={self.recipe['val_fraction']}); "
                        f"use a larger corpus or another dataset.val_fraction"
                    )
            (self.folder / "meta.json").unlink(missing_ok=True)
            meta: dict[str, Any] = {"train_tokens": train.commit(), "val_tokens": val.commit()}
        meta.update(vocab_size=tokenizer.vocab_size, dtype=dtype)
        if isinstance(tokenizer, CharTokenizer):
            meta["itos"] = tokenizer.itos
        if isinstance(tokenizer, HFTokenizer):
            atomic_write_bytes(self.folder / TOKENIZER_FILE, tokenizer.json.encode())
            meta.update(tokenizer_file=TOKENIZER_FILE, tokenizer_json=tokenizer.json, eot_name=tokenizer.eot_name)
            meta.setdefault("tokenizer_sha256", tokenizer.sha256)
        return meta


def _counted(items: Iterator[str], progress: Progress, per_item: bool = False) -> Iterator[str]:
    for item in items:
        yield item
        progress.update(1 if per_item else len(item))


def _char_tokenizer(blocks: Iterable[str]) -> CharTokenizer:
    """The sorted distinct characters of the text, counted in numpy (a few hundred MB/s)."""
    seen = np.zeros(0, dtype=bool)
    for block in blocks:
        points = np.frombuffer(block.encode("utf-32-le"), dtype=np.uint32)
        counts = np.bincount(points)
        if len(counts) > len(seen):
            seen = np.concatenate([seen, np.zeros(len(counts) - len(seen), dtype=bool)])
        seen[: len(counts)] |= counts > 0
    return CharTokenizer([chr(point) for point in np.flatnonzero(seen)])


def _tail_split_units(documents: Iterator[Iterator[str]], cut: int) -> Iterator[Unit]:
    """Work units of the documents: their first `cut` characters in train, the rest in val (the
    document at the cut is split in two). Within a split, SEPARATOR between two documents."""
    split, unit, seen, first_in_split = "train", Unit("train"), 0, True
    for document in documents:
        starting = True
        for piece in pieces(document):
            if split == "train" and seen + len(piece) > cut:
                head, piece = piece[: cut - seen], piece[cut - seen :]
                if head:
                    if starting and not first_in_split:
                        unit.add(SEPARATOR)
                    unit.add(head)
                    starting = False
                if unit.parts:
                    yield unit
                split, unit, seen, first_in_split = "val", Unit("val"), cut, True
            if starting and not first_in_split:
                unit.add(SEPARATOR)
            unit.add(piece)
            seen += len(piece)
            starting = first_in_split = False
            if unit.chars >= PIECE_CHARS:
                yield unit
                unit = Unit(split)
    if unit.parts:
        yield unit


def _document_split_units(records: Iterator[str], val_fraction: float) -> Iterator[Unit]:
    """Work units of the records: one in every 1/val_fraction (at a seeded random place in each
    such stretch) goes to val, the others to train. Within a split, SEPARATOR between two records.
    A unit's size is the number of records it finishes."""
    units = {"train": Unit("train"), "val": Unit("val")}
    started = {"train": False, "val": False}
    for record, is_val in zip(records, _val_records(val_fraction)):
        split = "val" if is_val else "train"
        unit = units[split]
        if started[split]:
            unit.add(SEPARATOR)
        started[split] = True
        for piece in pieces([record]):
            unit.add(piece)
        unit.size += 1
        if unit.chars >= PIECE_CHARS:
            yield unit
            units[split] = Unit(split)
    for unit in units.values():
        if unit.parts:
            yield unit


def _val_records(val_fraction: float) -> Iterator[bool]:
    """For record 0, 1, 2, ...: whether it goes to val. The records are cut into stretches of
    1/val_fraction (stretch k ends before record ceil((k+1)/val_fraction)); one record of each, at a
    seeded random place, is val. So val holds val_fraction of the records to within one, spread over
    the whole dataset, and the same records on every run."""
    rng = np.random.default_rng(SPLIT_SEED)
    for k in itertools.count():
        start, end = math.ceil(k / val_fraction), math.ceil((k + 1) / val_fraction)
        chosen = start + int(rng.integers(end - start))
        for index in range(start, end):
            yield index == chosen


def _cannot_write(exc: OSError, folder: Path) -> Exception:
    """A dataset folder that cannot be written: a disk fault (exit 3) or, say, a file in the way (exit 2)."""
    fault = storage_fault(exc)
    if fault is not None:
        return storage_error(fault, folder)
    return DataError(f"cannot create the dataset folder {folder} ({exc.strerror}); choose another dataset.data_dir")


# Preparations of one dataset take turns on this file in its folder; it exists only while held.
LOCK_FILE = ".prepare.lock"
# How often a process waiting for another one's preparation says it is still waiting.
WAIT_NOTICE_S = 60.0


@contextmanager
def _locked(path: Path, name: str, wait_s: float | None) -> Iterator[None]:
    """Hold the preparation lock of a dataset. The holder writes its host and pid into the file, and
    removes the file before letting go, so no lock file outlives a preparation; a process that was
    waiting on the removed file notices (another inode at the path, or none) and tries again. A wait
    is said once, naming the holder, then every minute; after `wait_s` seconds (None: no limit) it
    gives up with one line."""
    start = time.monotonic()
    said = start - WAIT_NOTICE_S
    while True:
        try:
            f = open(path, "a+")
        except OSError as exc:
            raise _cannot_write(exc, path.parent) from None
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            waited = time.monotonic() - start
            if wait_s is not None and waited >= wait_s:
                raise DataError(
                    f"dataset {name}: {holder} has been preparing {path.parent} for {waited:.0f} s; gave up after "
                    f"dataset.prepare_wait_s={wait_s:g} (let it finish, or stop it and run again)"
                ) from None
            if time.monotonic() - said >= WAIT_NOTICE_S:
                log.info("dataset %s: waiting for %s, which is preparing %s (%.0f s so far)", name, holder, path.parent, waited)
                said = time.monotonic()
            time.sleep(0.2)
            continue
        try:
            if not path.exists() or os.stat(path).st_ino != os.fstat(f.fileno()).st_ino:
                continue  # the holder we waited for removed this file on its way out: take a fresh one
            f.truncate(0)
            f.write(f"{socket.gethostname()} pid {os.getpid()}")
            f.flush()
            try:
                yield
            finally:
                path.unlink(missing_ok=True)
        finally:
            f.close()
        return
