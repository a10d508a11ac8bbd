"""Datasets: prepare raw text into token files once, then draw random training batches from them.

A prepared dataset is a folder `<data_dir>/<name>/` holding `train.bin` and `val.bin` (token ids,
uint16 or uint32), `meta.json` (tokenizer, vocabulary, token counts, where the text came from) and,
for a BPE of its own or a Hugging Face tokenizer, `tokenizer.json`. `meta.json` is written last,
atomically, so a folder with a valid `meta.json` always has complete token files beside it.

Built-in datasets: `shakespeare_char` (tiny Shakespeare, one token per character),
`shakespeare` (tiny Shakespeare, GPT-2 BPE) and `openwebtext` (GPT-2 BPE, from the Hugging Face
hub). Any other `dataset.name` is your own text: files that `dataset.source` names (a file, a
folder or a glob of .txt and .jsonl files), or a Hugging Face dataset (`dataset.hf_path`), with
`dataset.tokenizer` char, gpt2, bpe (trained on the corpus) or a tokenizer.json of your own.

The modules, each importing only from those listed before it (and from nanogpt.files, the
atomic writes that datasets share with checkpoints):
    bundled      the copies of tiny Shakespeare and GPT-2's BPE shipped inside the package
    tokens       token files: their width (uint16/uint32), the incremental writer, the reader
    tokenizers   the Tokenizer protocol: characters, GPT-2's BPE, Hugging Face tokenizers, BPE training
    sources      text files as a stream of documents; tiny Shakespeare; fingerprints
    hub          Hugging Face datasets as a stream of documents (hub or local copy)
    encoding     documents cut into pieces, encoded in worker processes, in order
    progress     the progress bar (or log lines) of a long preparation
    preparation  prepare(): split, tokenize and write the token files and meta.json, under a lock
    batches      TokenFile and open_splits: random training windows from the token files
This package re-exports what the rest of nanogpt imports, so `from nanogpt.data import X` works.
"""

from nanogpt.data.batches import EVAL_DATA_STREAM, TRAIN_DATA_STREAM, TokenFile, open_splits, stream_seed
from nanogpt.data.hub import HubSource
from nanogpt.data.preparation import BUILTIN_TOKENIZERS, META_FORMAT, dataset_dir, prepare, prepare_config, read_meta
from nanogpt.data.sources import CORPUS_SUFFIXES, TINY_SHAKESPEARE_DATASETS
from nanogpt.data.tokenizers import (
    END_OF_TEXT,
    GPT2_ENCODING,
    GPT2_VOCAB_SIZE,
    CharTokenizer,
    GPT2Tokenizer,
    HFTokenizer,
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
    "EVAL_DATA_STREAM",
    "TRAIN_DATA_STREAM",
    "CORPUS_SUFFIXES",
    "END_OF_TEXT",
    "GPT2_ENCODING",
    "GPT2_VOCAB_SIZE",
    "META_FORMAT",
    "TINY_SHAKESPEARE_DATASETS",
    "CharTokenizer",
    "DataError",
    "GPT2Tokenizer",
    "HFTokenizer",
    "HubSource",
    "TokenFile",
    "Tokenizer",
    "dataset_dir",
    "gpt2_encoding",
    "gpt2_tokenizer",
    "load_tokenizer",
    "open_splits",
    "padded_vocab_size",
    "prepare",
    "prepare_config",
    "read_meta",
    "same_tokenizer",
    "stream_seed",
]
