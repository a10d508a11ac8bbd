"""Datasets: prepare raw text into token files once, then draw random training batches from them.

A prepared dataset is a folder `<data_dir>/<name>/` holding `train.bin` and `val.bin` (uint16
token ids) and `meta.json` (tokenizer, vocabulary, token counts). `meta.json` is written last,
atomically, so a folder with a valid `meta.json` always has complete token files beside it.

Built-in datasets: `shakespeare_char` (tiny Shakespeare, one token per character),
`shakespeare` (tiny Shakespeare, GPT-2 BPE) and `openwebtext` (GPT-2 BPE, see nanogpt/openwebtext.py).
Any other `dataset.name` is your own text, read from `dataset.source` (a file, a folder or a
glob of .txt and .jsonl files) and tokenized with `dataset.tokenizer` (char or gpt2).

The modules, each importing only from those listed before it:
    files        atomic writes (atomic_file)
    tokenizers   the Tokenizer protocol, CharTokenizer and GPT-2's BPE from the shipped ranks
    sources      the raw text: source files, tiny Shakespeare, documents, fingerprints
    preparation  prepare(): split, tokenize and write the token files and meta.json, under a lock
    batches      TokenFile and open_splits: random training windows from the token files
This package re-exports what the rest of nanogpt imports, so `from nanogpt.data import X` works.
"""

from nanogpt.data.batches import TokenFile, open_splits
from nanogpt.data.files import atomic_file
from nanogpt.data.preparation import BUILTIN_TOKENIZERS, META_FORMAT, dataset_dir, prepare, read_meta
from nanogpt.data.sources import CORPUS_SUFFIXES, OPENWEBTEXT_SUFFIXES, TINY_SHAKESPEARE_DATASETS
from nanogpt.data.tokenizers import (
    END_OF_TEXT,
    GPT2_ENCODING,
    GPT2_VOCAB_SIZE,
    CharTokenizer,
    GPT2Tokenizer,
    Tokenizer,
    gpt2_encoding,
    gpt2_tokenizer,
    load_tokenizer,
    padded_vocab_size,
    same_tokenizer,
)
from nanogpt.errors import DataError

__all__ = [
    "BUILTIN_TOKENIZERS",
    "CORPUS_SUFFIXES",
    "END_OF_TEXT",
    "GPT2_ENCODING",
    "GPT2_VOCAB_SIZE",
    "META_FORMAT",
    "OPENWEBTEXT_SUFFIXES",
    "TINY_SHAKESPEARE_DATASETS",
    "CharTokenizer",
    "DataError",
    "GPT2Tokenizer",
    "TokenFile",
    "Tokenizer",
    "atomic_file",
    "dataset_dir",
    "gpt2_encoding",
    "gpt2_tokenizer",
    "load_tokenizer",
    "open_splits",
    "padded_vocab_size",
    "prepare",
    "read_meta",
    "same_tokenizer",
]
