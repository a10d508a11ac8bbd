"""GPT-2's BPE through tiktoken, from the ranks file shipped in the package (no network, no cache)."""

import socket

import pytest
import tiktoken_ext.openai_public

from nanogpt.data import CharTokenizer, DataError, GPT2Tokenizer, load_tokenizer, padded_vocab_size, same_tokenizer
from nanogpt.data.bundled import BUNDLED


def test_gpt2_ids_are_gpt2s():
    tokenizer = GPT2Tokenizer()
    assert tokenizer.encode("Hello world") == [15496, 995]
    assert (tokenizer.vocab_size, tokenizer.eot_token) == (50257, 50256)


def test_round_trip_of_any_text():
    tokenizer = GPT2Tokenizer()
    text = "ROMEO:\nBut, soft! naïve café — 日本語 🙂\n\n\tend  "
    assert tokenizer.decode(tokenizer.encode(text)) == text


def test_end_of_text_written_in_a_text_stays_text():
    tokenizer = GPT2Tokenizer()
    ids = tokenizer.encode("a<|endoftext|>b")
    assert tokenizer.eot_token not in ids and tokenizer.decode(ids) == "a<|endoftext|>b"


def test_the_shipped_ranks_are_the_file_tiktoken_downloads(monkeypatch):
    # tiktoken checks its download of r50k_base against a sha256; ours is checked against the same.
    declared = {}

    def capture(url, expected_hash=None):
        declared.update(url=url, sha256=expected_hash)
        return {}

    monkeypatch.setattr(tiktoken_ext.openai_public, "load_tiktoken_bpe", capture)
    tiktoken_ext.openai_public.r50k_base()
    assert declared["url"].endswith("/r50k_base.tiktoken")
    assert declared["sha256"] == BUNDLED["r50k_base.tiktoken"]


def test_gpt2_bpe_needs_no_network(monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    ids = GPT2Tokenizer().encode("First Citizen:\nBefore we proceed any further, hear me speak.")
    assert ids[:5] == [5962, 22307, 25, 198, 8421]


def test_meta_picks_the_tokenizer():
    assert isinstance(load_tokenizer({"tokenizer": "gpt2"}), GPT2Tokenizer)
    assert isinstance(load_tokenizer({"tokenizer": "char", "itos": ["a", "b"]}), CharTokenizer)
    with pytest.raises(DataError, match="unknown tokenizer 'sentencepiece'"):
        load_tokenizer({"tokenizer": "sentencepiece"})


def test_only_gpt2_bpe_is_padded_to_a_multiple_of_64():
    assert padded_vocab_size({"tokenizer": "gpt2", "vocab_size": 50257}) == 50304
    assert padded_vocab_size({"tokenizer": "char", "vocab_size": 65}) == 65


def test_same_tokenizer():
    assert same_tokenizer({"tokenizer": "gpt2"}, {"tokenizer": "gpt2", "vocab_size": 50257})
    assert same_tokenizer({"tokenizer": "char", "itos": ["a"]}, {"tokenizer": "char", "itos": ["a"]})
    assert not same_tokenizer({"tokenizer": "char", "itos": ["a"]}, {"tokenizer": "char", "itos": ["b"]})
    assert not same_tokenizer({"tokenizer": "char", "itos": ["a"]}, {"tokenizer": "gpt2"})
