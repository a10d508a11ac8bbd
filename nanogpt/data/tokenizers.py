"""Tokenizers: text to token ids and back, either one token per character of a fixed vocabulary
or GPT-2's BPE, built from the ranks file shipped inside the package (no network, no cache)."""

from __future__ import annotations

import base64
import functools
from typing import Protocol

import tiktoken
from tiktoken_ext.openai_public import r50k_pat_str

from nanogpt.bundled import read_bundled
from nanogpt.errors import DataError


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
