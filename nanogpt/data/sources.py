"""The raw text of a dataset: the files that dataset.source names (a file, a folder or a glob),
tiny Shakespeare (the packaged copy unless a source is given), the documents those files hold,
and the fingerprint that tells whether the source changed since the dataset was prepared."""

from __future__ import annotations

import glob
import hashlib
import json
import logging
from pathlib import Path

from nanogpt.bundled import read_bundled
from nanogpt.data.files import atomic_write_bytes
from nanogpt.errors import DataError

log = logging.getLogger(__name__)

# The built-in datasets read from tiny Shakespeare.
TINY_SHAKESPEARE_DATASETS = ("shakespeare_char", "shakespeare")
# The files read from a dataset.source folder: your own text, or a local copy of openwebtext.
CORPUS_SUFFIXES = (".txt", ".jsonl")
OPENWEBTEXT_SUFFIXES = (".jsonl", ".json", ".parquet")


def source_files(name: str, folder: Path, source: str | None) -> list[Path]:
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
        atomic_write_bytes(cached, read_bundled("tinyshakespeare.txt"))
    return cached


def read_documents(files: list[Path], strict: bool) -> list[str]:
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


def source_fingerprint(files: list[Path]) -> str | None:
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


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
