"""The raw text of a dataset: the files that dataset.source names (a file, a folder or a glob),
tiny Shakespeare (the packaged copy unless a source is given), the documents those files hold
(read as a stream, never whole), and the fingerprint that tells whether the source changed since
the dataset was prepared. Hugging Face datasets are the other kind of source: nanogpt/data/hub.py."""

from __future__ import annotations

import codecs
import glob
import hashlib
import itertools
import json
import logging
from collections.abc import Iterator
from pathlib import Path

from nanogpt.data.bundled import read_bundled
from nanogpt.errors import DataError
from nanogpt.files import atomic_write_bytes, file_sha256

log = logging.getLogger(__name__)

# The built-in datasets read from tiny Shakespeare.
TINY_SHAKESPEARE_DATASETS = ("shakespeare_char", "shakespeare")
# The files read from a dataset.source folder.
CORPUS_SUFFIXES = (".txt", ".jsonl")


def source_files(name: str, folder: Path, source: str | None) -> list[Path]:
    """The raw text files: tiny Shakespeare's (dataset.source, the cached copy or the packaged one), or
    those that dataset.source names."""
    if name in TINY_SHAKESPEARE_DATASETS:
        return [_tiny_shakespeare(name, folder, source)]
    path = Path(str(source)).expanduser()
    if any(ch in source for ch in "*?["):
        files = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
        if not files:
            raise DataError(f"dataset.source={source!r}: no file matches this pattern")
    elif path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in CORPUS_SUFFIXES)
        if not files:
            raise DataError(f"dataset.source={source!r}: the folder holds no file of type {', '.join(CORPUS_SUFFIXES)}")
    elif path.is_file():
        files = [path]
    elif path.exists():  # a FIFO, a device (/dev/zero), a socket: no corpus, and reading one may never end
        raise DataError(f"dataset.source={source!r}: not a regular file or a folder")
    else:
        raise DataError(f"dataset.source={source!r}: no such file or folder")
    return files


def _tiny_shakespeare(name: str, folder: Path, source: str | None) -> Path:
    """Tiny Shakespeare from (in order) dataset.source, the cached folder/input.txt, or the copy
    shipped inside the package (written to folder/input.txt): no download is ever needed."""
    if source is not None:
        path = Path(source).expanduser()
        if path.is_dir():
            raise DataError(
                f"dataset.source={source!r} is a folder; dataset {name} reads one text file (pass its path, or source=null "
                f"for the packaged copy; for a folder of text use dataset=text)"
            )
        if not path.is_file():
            raise DataError(f"dataset.source={source!r}: no such file (pass the path of a text file, or source=null for the packaged copy)")
        return path
    cached = folder / "input.txt"
    if not cached.is_file():
        log.info("dataset %s: tiny Shakespeare from the packaged copy", name)
        atomic_write_bytes(cached, read_bundled("tinyshakespeare.txt"))
    return cached


class Corpus:
    """The documents of your own text files, read as a stream: a .txt file is one document, each
    line of a .jsonl file one document (its "text"); empty ones are skipped. Iterate `scan()` once
    first: it checks every file, picks each file's encoding and counts the corpus; `documents()`
    then streams the same documents again, each as a sequence of text blocks, in file order."""

    def __init__(self, files: list[Path], strict: bool):
        self.files = files
        # strict: UTF-8 only (the built-in datasets); else a file that is not UTF-8 is read as Latin-1.
        self.strict = strict
        self.encodings: dict[Path, str] = {}
        self.characters = 0  # in the documents, without separators
        self.documents_found = 0
        self.bytes = sum(path.stat().st_size for path in files)

    def scan(self) -> Iterator[str]:
        """Every text block of the corpus, checking the files as it goes; afterwards `characters`,
        `documents_found` and the encodings are known."""
        for path in self.files:
            self.encodings[path] = encoding = self._encoding(path)
            documents = 0
            for document in self._read(path, encoding):
                documents += 1
                for block in document:
                    self.characters += len(block)
                    yield block
            if not documents:
                log.warning("%s is empty: skipped", path)
            self.documents_found += documents

    def documents(self) -> Iterator[Iterator[str]]:
        """The documents again (after scan()), each as an iterator of its text blocks."""
        for path in self.files:
            yield from self._read(path, self.encodings[path])

    def _encoding(self, path: Path) -> str:
        """UTF-8 (a BOM is dropped) if the whole file is valid UTF-8. Otherwise (older text is often
        Latin-1 or Windows-1252) Latin-1, which maps every byte to a character, with a warning naming
        the file; or, for the built-in datasets, an error. A NUL byte means the file is not text at all."""
        decoder = codecs.getincrementaldecoder("utf-8")()
        offset = 0
        try:
            with open(path, "rb") as f:
                while raw := f.read(READ_BLOCK):
                    if b"\0" in raw:
                        raise DataError(
                            f"{path} is not a text file (it holds NUL bytes: binary data, or UTF-16 text); "
                            f"remove it from dataset.source, or convert it to UTF-8"
                        )
                    try:
                        decoder.decode(raw)
                    except UnicodeDecodeError as exc:
                        position = offset + exc.start - len(decoder.getstate()[0])
                        if self.strict:
                            raise DataError(f"{path} is not UTF-8 text ({exc.reason} at byte {position})") from None
                        log.warning("%s is not UTF-8 (%s at byte %d): read as Latin-1", path, exc.reason, position)
                        return "latin-1"
                    offset += len(raw)
            decoder.decode(b"", final=True)
        except UnicodeDecodeError as exc:  # the file ends inside a character
            if self.strict:
                raise DataError(f"{path} is not UTF-8 text ({exc.reason} at byte {offset - len(exc.object) + exc.start})") from None
            log.warning("%s is not UTF-8 (%s at its end): read as Latin-1", path, exc.reason)
            return "latin-1"
        except OSError as exc:
            raise DataError(f"{path}: cannot read it ({exc.strerror})") from None
        return "utf-8-sig"

    def _read(self, path: Path, encoding: str) -> Iterator[Iterator[str]]:
        try:
            if path.suffix == ".jsonl":
                yield from ([text] for text in _jsonl_documents(path, encoding))
            else:
                blocks = _text_blocks(path, encoding)
                first = next(blocks, None)
                if first is not None:
                    yield itertools.chain([first], blocks)
        except OSError as exc:
            raise DataError(f"{path}: cannot read it ({exc.strerror})") from None


# Raw text is read and handed on in blocks of this many bytes, so that memory never holds more
# than a few blocks of any file, however large.
READ_BLOCK = 1 << 20


def _text_blocks(path: Path, encoding: str) -> Iterator[str]:
    """The text of a file (of a known-good encoding) in blocks of about READ_BLOCK bytes, with
    Windows line ends ("\r\n") read as "\n", as Python's text files and nanoGPT read them: a corpus
    means the same tokens whichever system saved it. A lone "\r" is kept."""
    decoder = codecs.getincrementaldecoder(encoding)()
    held = ""  # a block's final "\r", until the next block shows whether "\n" follows it
    with open(path, "rb") as f:
        while raw := f.read(READ_BLOCK):
            text = held + decoder.decode(raw)
            held = "\r" if text.endswith("\r") else ""
            if text := text[: len(text) - len(held)].replace("\r\n", "\n"):
                yield text
    if text := (held + decoder.decode(b"", final=True)).replace("\r\n", "\n"):
        yield text


def _jsonl_documents(path: Path, encoding: str) -> Iterator[str]:
    """The non-empty "text" of every record of a JSON lines file (of a known-good encoding)."""
    with open(path, "rb") as f:
        # Lines end at b"\n" only: JSON strings may hold raw U+2028 and other characters that
        # str.splitlines() would also treat as line breaks.
        for number, raw in enumerate(f, start=1):
            line = raw.decode(encoding)  # a "\r" before the "\n" is JSON whitespace; "\r\n" inside a text is JSON-escaped, and kept
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = None
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise DataError(f'{path}:{number}: not a JSON object with a "text" string, as every line of a .jsonl file must be')
            if record["text"]:
                yield record["text"]


def source_fingerprint(files: list[Path]) -> str | None:
    """What identifies the source: one file's sha256 (comparable with a published checksum), or
    a digest of every file's name and sha256; None for a download from the hub."""
    if len(files) == 1:
        return file_sha256(files[0])
    if not files:
        return None
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path}\0{file_sha256(path)}\n".encode())
    return digest.hexdigest()
