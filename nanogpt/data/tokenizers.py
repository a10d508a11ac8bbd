"""Tokenizers: text to token ids and back.

    char   one token per character of the corpus (its sorted distinct characters)
    gpt2   GPT-2's BPE, built from the ranks file shipped inside the package (no network, no cache)
    bpe    a byte-level BPE trained on the corpus with Hugging Face `tokenizers` (dataset.vocab_size tokens)
    file   any Hugging Face tokenizer: a tokenizer.json file, or a local folder that holds one

Every tokenizer also encodes straight to a numpy array (what preparation writes) and names the
ids that separate two documents. A `bpe` or `file` tokenizer travels as its tokenizer.json text in
the dataset's meta (and so in every checkpoint), so sampling, evaluation and export use exactly the
tokenizer the model was trained with, with or without the dataset folder.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

import numpy as np
import tiktoken
import tokenizers
from tiktoken_ext.openai_public import r50k_pat_str

from nanogpt.data.bundled import read_bundled
from nanogpt.errors import DataError, first_line


class Tokenizer(Protocol):
    """Text to token ids and back. decode() of ids that end inside a character (a byte-level BPE
    can split one) ends with U+FFFD, the replacement character, like bytes.decode(errors="replace")."""

    @property
    def vocab_size(self) -> int: ...

    # The ids put between two documents of a corpus, so that one never runs into the next.
    document_separator: list[int]

    def encode(self, text: str) -> list[int]: ...

    def encode_array(self, text: str) -> np.ndarray: ...

    def decode(self, ids: list[int]) -> str: ...


class CharTokenizer:
    """One token per character of a fixed vocabulary (sorted characters of the corpus)."""

    def __init__(self, itos: list[str]):
        self.itos = itos
        self.stoi = {ch: i for i, ch in enumerate(itos)}
        self.document_separator = [self.stoi["\n"]] if "\n" in self.stoi else []
        # Code point -> id, for encoding long texts in numpy; UNKNOWN marks characters outside the vocabulary.
        self._ids = np.full(max(map(ord, itos), default=0) + 1, UNKNOWN, dtype=np.int64)
        self._ids[[ord(ch) for ch in itos]] = np.arange(len(itos))

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> list[int]:
        return self.encode_array(text).tolist()

    def encode_array(self, text: str) -> np.ndarray:
        points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        ids = self._ids[np.minimum(points, len(self._ids) - 1)]
        unknown = (ids == UNKNOWN) | (points >= len(self._ids))
        if unknown.any():
            chars = sorted({chr(p) for p in points[unknown]})
            shown = ", ".join(repr(c) for c in chars[:5]) + (f" and {len(chars) - 5} more" if len(chars) > 5 else "")
            raise DataError(f"the text holds {len(chars)} character(s) outside this model's vocabulary: {shown}")
        return ids.astype(np.uint32)

    def decode(self, ids: list[int]) -> str:
        return "".join(self.itos[i] for i in ids)


UNKNOWN = -1

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
        self.document_separator = [self.eot_token]

    @property
    def vocab_size(self) -> int:
        return self.encoding.n_vocab

    def encode(self, text: str) -> list[int]:
        return self.encoding.encode_ordinary(text)

    def encode_array(self, text: str) -> np.ndarray:
        # Straight into an array (no list of Python ints): 10% faster, and a fraction of the memory.
        return self.encoding.encode_to_numpy(text, disallowed_special=())

    def decode(self, ids: list[int]) -> str:
        return self.encoding.decode(ids)


@functools.cache
def gpt2_tokenizer() -> GPT2Tokenizer:
    """One shared instance: loading the BPE ranks takes a moment."""
    return GPT2Tokenizer()


# The names end-of-text tokens go by in Hugging Face tokenizers, most common first: the first one
# a tokenizer.json holds as a special token separates documents when no tokenizer_config.json says.
END_OF_TEXT_NAMES = (END_OF_TEXT, "</s>", "<|end_of_text|>", "<eos>", "<|im_end|>", "[SEP]")


class HFTokenizer:
    """A Hugging Face `tokenizers` tokenizer (a `bpe` trained on the corpus, or a tokenizer.json
    of your own). Texts are encoded without the special tokens a post-processor would add (BOS,
    CLS): a corpus is one stream, whose documents are separated by the end-of-text token if the
    tokenizer has one, else by a newline."""

    def __init__(self, tokenizer: tokenizers.Tokenizer, eot_name: str | None):
        self.tokenizer = tokenizer
        self.eot_name = eot_name
        self.eot_token = tokenizer.token_to_id(eot_name) if eot_name is not None else None
        self.document_separator = [self.eot_token] if self.eot_token is not None else self.encode("\n")
        self.json = tokenizer.to_str()
        self.sha256 = hashlib.sha256(self.json.encode()).hexdigest()
        # The largest id + 1: added tokens may sit above the model's own vocabulary.
        self._vocab_size = max(tokenizer.get_vocab(with_added_tokens=True).values(), default=-1) + 1

    @classmethod
    def from_json(cls, text: str, eot_name: str | None) -> HFTokenizer:
        return cls(tokenizers.Tokenizer.from_str(text), eot_name)

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    def encode(self, text: str) -> list[int]:
        try:
            return self.tokenizer.encode(text, add_special_tokens=False).ids
        except Exception as exc:  # the Rust library raises plain Exceptions
            raise _cannot_encode(exc) from None

    def encode_array(self, text: str) -> np.ndarray:
        # encode_batch_fast skips the character offsets that encode() also computes: 2.5x faster.
        try:
            ids = self.tokenizer.encode_batch_fast([text], add_special_tokens=False)[0].ids
        except Exception as exc:  # the Rust library raises plain Exceptions
            raise _cannot_encode(exc) from None
        return np.array(ids, dtype=np.uint32)

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False)


# Byte-level BPE needs its 256 byte tokens and the end-of-text token before any merge.
MIN_BPE_VOCAB_SIZE = 257
# Ids are stored as uint32, and the model needs an embedding row per token: 2**24 is far beyond
# any vocabulary that makes sense for a small GPT, and stops a typo (1e9) from allocating gigabytes.
MAX_BPE_VOCAB_SIZE = 2**24


def _cannot_encode(exc: Exception) -> DataError:
    """A text that a tokenizer.json cannot encode (a WordLevel model without an unknown token meets a
    word outside its vocabulary, say), as one line."""
    return DataError(
        f"the tokenizer cannot encode the text ({first_line(exc)}); give it an unknown token ([UNK]) or a vocabulary that "
        f"covers the text, or use dataset.tokenizer=char, gpt2 or bpe"
    )


def train_bpe(texts: Iterable[str], vocab_size: int) -> HFTokenizer:
    """A byte-level BPE of up to `vocab_size` tokens, GPT-2's recipe: text split by GPT-2's regex,
    every byte a token (so no text is ever unknown), "<|endoftext|>" as id 0. Training stops early
    when no pair of tokens is left to merge (a small corpus)."""
    if not MIN_BPE_VOCAB_SIZE <= vocab_size <= MAX_BPE_VOCAB_SIZE:
        raise DataError(
            f"dataset.vocab_size={vocab_size} is invalid for dataset.tokenizer=bpe: it must be in "
            f"[{MIN_BPE_VOCAB_SIZE}, {MAX_BPE_VOCAB_SIZE:,}] (256 byte tokens and the end-of-text token come first)"
        )
    tokenizer = tokenizers.Tokenizer(tokenizers.models.BPE())
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[END_OF_TEXT],
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    return HFTokenizer(tokenizer, END_OF_TEXT)


def tokenizer_from_file(spec: str) -> HFTokenizer:
    """A Hugging Face tokenizer from `spec`: a tokenizer.json file, or a folder holding one (and
    maybe a tokenizer_config.json naming its end-of-text token), as transformers saves them."""
    path = Path(spec).expanduser()
    config: dict = {}
    if path.is_dir():
        folder, path = path, path / "tokenizer.json"
        if not path.is_file():
            raise DataError(
                f"dataset.tokenizer={spec!r}: the folder holds no tokenizer.json (a fast Hugging Face tokenizer, "
                f"as tokenizer.save_pretrained() writes it)"
            )
        config_path = folder / "tokenizer_config.json"
        if config_path.is_file():
            try:
                config = json.loads(config_path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise DataError(f"{config_path}: not a readable JSON file ({exc})") from None
    elif not path.is_file():
        raise DataError(f"dataset.tokenizer={spec!r} is invalid: not char, gpt2 or bpe, and no such tokenizer.json file or folder")
    try:
        tokenizer = tokenizers.Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises plain Exception for every parse error
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"dataset.tokenizer={spec!r}: {path} is not a Hugging Face tokenizer.json ({reason})") from None
    return HFTokenizer(tokenizer, _end_of_text_name(tokenizer, config))


def _end_of_text_name(tokenizer: tokenizers.Tokenizer, config: dict) -> str | None:
    eos = config.get("eos_token")
    if isinstance(eos, dict):  # transformers writes AddedToken objects as dicts
        eos = eos.get("content")
    if isinstance(eos, str) and tokenizer.token_to_id(eos) is not None:
        return eos
    special = {token.content for token in tokenizer.get_added_tokens_decoder().values() if token.special}
    return next((name for name in END_OF_TEXT_NAMES if name in special), None)


def load_tokenizer(meta: dict) -> Tokenizer:
    """The tokenizer a prepared dataset (or a checkpoint's copy of its meta) was tokenized with."""
    kind = meta.get("tokenizer")
    if kind == "char":
        return CharTokenizer(meta["itos"])
    if kind == "gpt2":
        return gpt2_tokenizer()
    if kind in ("bpe", "file") and isinstance(meta.get("tokenizer_json"), str):
        return _hf_tokenizer(meta["tokenizer_json"], meta.get("eot_name"))
    raise DataError(f"unknown tokenizer {kind!r} in the dataset's meta.json")


@functools.lru_cache(maxsize=4)
def _hf_tokenizer(text: str, eot_name: str | None) -> HFTokenizer:
    return HFTokenizer.from_json(text, eot_name)


def same_tokenizer(meta: dict, other: dict) -> bool:
    """Whether two prepared datasets map text to the same ids."""
    return (
        meta["tokenizer"] == other["tokenizer"]
        and meta.get("itos") == other.get("itos")
        and meta.get("tokenizer_sha256") == other.get("tokenizer_sha256")
    )


def padded_vocab_size(meta: dict) -> int:
    """Embedding rows for a model trained from scratch on this dataset. A BPE vocabulary (GPT-2's
    50,257 tokens, or one of your own) is rounded up to a multiple of 64, 50,304 for GPT-2, because
    GPU matmuls are markedly faster on such sizes; the extra rows never occur as targets, and sampling
    never picks them. A character vocabulary is too small for the padding to matter and stays exact."""
    if meta["tokenizer"] != "char":
        return -(-meta["vocab_size"] // 64) * 64
    return meta["vocab_size"]
