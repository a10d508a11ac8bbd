"""GPT-2's BPE through tiktoken, offline from ../shared's cache (TIKTOKEN_CACHE_DIR, set in conftest)."""

import pytest
import tiktoken

from nanogpt.data import CharTokenizer, DataError, GPT2Tokenizer, load_tokenizer, padded_vocab_size, same_tokenizer
from tests.conftest import requires_gpt2_bpe

pytestmark = requires_gpt2_bpe  # these tests tokenize with GPT-2's BPE


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


def test_missing_encoding_is_one_line_with_the_fix(monkeypatch):
    def offline(name):
        raise ConnectionError("no network")  # what requests raises, an OSError

    monkeypatch.setattr(tiktoken, "get_encoding", offline)
    with pytest.raises(DataError, match="TIKTOKEN_CACHE_DIR") as err:
        GPT2Tokenizer()
    assert "\n" not in str(err.value)


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
