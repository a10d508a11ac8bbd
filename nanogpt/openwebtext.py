"""OpenWebText (about 8M web pages, 9B GPT-2 tokens), prepared as nanoGPT prepares it.

    python -m nanogpt.prepare dataset=openwebtext                                   # from the Hugging Face hub
    python -m nanogpt.prepare dataset=openwebtext dataset.source=/data/owt/*.jsonl   # from a local copy

Hugging Face `datasets` downloads the corpus (an optional dependency: `pip install nanogpt[openwebtext]`).
A small val split is drawn with nanoGPT's seed, every document is tokenized with GPT-2's BPE in
parallel processes and followed by the end-of-text token, and each split is written into a
uint16 memmap shard by shard, so the 17 GB of tokens never have to fit in memory.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from nanogpt.data.files import atomic_file
from nanogpt.data.sources import OPENWEBTEXT_SUFFIXES
from nanogpt.data.tokenizers import gpt2_tokenizer
from nanogpt.errors import DataError

if TYPE_CHECKING:
    import datasets

HUB_DATASET = "Skylion007/openwebtext"
SPLIT_SEED = 2357  # nanoGPT's: the same seed draws the same val documents
WRITE_SHARDS = 1024  # pieces a split is written in; each must fit in memory


def prepare_openwebtext(files: list[Path], folder: Path, val_fraction: float) -> dict:
    """Download (no files) or read (files) the corpus, then tokenize and write it into folder."""
    num_proc = max(1, (os.cpu_count() or 2) // 2)
    return write_splits(load_corpus(files, num_proc), folder, val_fraction, num_proc)


def load_corpus(files: list[Path], num_proc: int) -> datasets.Dataset:
    hf_datasets = _import_datasets()
    if files:
        # A local copy: JSON lines or Parquet files whose records have a "text" field.
        suffixes = {path.suffix for path in files}
        if not suffixes <= set(OPENWEBTEXT_SUFFIXES) or len({s == ".parquet" for s in suffixes}) > 1:
            raise DataError(
                f"dataset.source for openwebtext must name JSON lines or Parquet files ({', '.join(OPENWEBTEXT_SUFFIXES)}) "
                f"with a \"text\" field, not both; got {', '.join(sorted(s or '(no suffix)' for s in suffixes))}"
            )
        builder = "parquet" if ".parquet" in suffixes else "json"
        try:
            return hf_datasets.load_dataset(builder, data_files=[str(p) for p in files], split="train")
        except hf_datasets.exceptions.DatasetGenerationError as exc:
            raise DataError(f"dataset.source: cannot read the {builder} files (the first: {files[0]}): {exc.__cause__ or exc}") from None
    try:
        return hf_datasets.load_dataset(HUB_DATASET, split="train", num_proc=num_proc)
    except (OSError, RuntimeError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise DataError(
            f"dataset openwebtext: loading {HUB_DATASET} from the Hugging Face hub failed ({reason}); "
            f"pass a local copy with dataset.source=<.jsonl or .parquet files>"
        ) from None


def write_splits(corpus: datasets.Dataset, folder: Path, val_fraction: float, num_proc: int) -> dict:
    """Split the corpus, tokenize it and write train.bin and val.bin: everything after the download."""
    if "text" not in corpus.column_names:
        raise DataError(f"the openwebtext corpus has no \"text\" column (columns: {', '.join(corpus.column_names)})")
    split = corpus.train_test_split(test_size=val_fraction, seed=SPLIT_SEED, shuffle=True)
    meta = {"tokenizer": "gpt2", "vocab_size": gpt2_tokenizer().vocab_size}
    for name, documents in (("train", split["train"]), ("val", split["test"])):
        tokenized = documents.map(
            _tokenize, remove_columns=documents.column_names, desc=f"tokenizing {name}", num_proc=min(num_proc, len(documents))
        )
        meta[f"{name}_tokens"] = _write_tokens(tokenized, folder / f"{name}.bin")
    return meta


def _tokenize(example: dict) -> dict:
    tokenizer = gpt2_tokenizer()
    ids = tokenizer.encode(example["text"])
    ids.append(tokenizer.eot_token)  # marks where one web page ends and the next begins
    return {"ids": ids, "len": len(ids)}


def _write_tokens(tokenized: datasets.Dataset, path: Path) -> int:
    total = int(np.fromiter(tokenized["len"], dtype=np.int64).sum())
    shards = min(WRITE_SHARDS, len(tokenized))
    with atomic_file(path) as tmp:
        tokens = np.memmap(tmp, dtype=np.uint16, mode="w+", shape=(total,))
        offset = 0
        for index in tqdm(range(shards), desc=f"writing {path.name}"):
            shard = tokenized.shard(num_shards=shards, index=index, contiguous=True).with_format("numpy")
            ids = np.concatenate(list(shard["ids"]))
            tokens[offset : offset + len(ids)] = ids
            offset += len(ids)
        tokens.flush()
        del tokens
    return total


def _import_datasets() -> ModuleType:
    try:
        import datasets
    except ImportError:
        raise DataError("dataset openwebtext needs Hugging Face datasets: pip install 'nanogpt[openwebtext]' (or pip install datasets)") from None
    return datasets
