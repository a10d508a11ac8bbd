"""Generation: the KV-cache path against the naive reference, sampling options, stop strings,
streaming, the Python API and the `python -m nanogpt.sample` command."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import nanogpt
from nanogpt.checkpoint import CKPT_FORMAT, CheckpointError, save_checkpoint
from nanogpt.config import ConfigError
from nanogpt.data import CharTokenizer
from nanogpt.generation import Continuation, Decoder, Generator, generate_ids, pick_next, store_block_weights_in, window_start
from nanogpt.model import GPT, DecodeStep, GPTConfig, KVCache
from nanogpt.system import System
from tests.conftest import ROOT, cli_env, one_line_error, run_cli
from tests.test_modern import OPTIONS as MODERN_OPTIONS

CHARS = list("\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
BLOCK = 16


def tiny(**overrides) -> GPT:
    torch.manual_seed(0)
    args = dict(vocab_size=len(CHARS), block_size=BLOCK, n_layer=2, n_head=2, n_embd=32, dropout=0.0, bias=False)
    args.update(overrides)
    return GPT(GPTConfig(**args)).eval()


def prompt_ids(batch: int, length: int) -> torch.Tensor:
    return torch.randint(0, len(CHARS), (batch, length), generator=torch.Generator().manual_seed(1))


# ----------------------------------------------------------------------------- the model's cache


@pytest.mark.parametrize("bias", [False, True])
def test_prefill_then_one_token_at_a_time_matches_the_whole_context(bias):
    model = tiny(bias=bias)
    idx = prompt_ids(2, BLOCK)
    cache = KVCache(model.config, 2, "cpu", torch.float32)
    with torch.no_grad():
        full, _ = model(idx, idx)
        prefill, _ = model(idx[:, :5], kv_cache=cache)
        steps = [model(idx[:, t : t + 1], kv_cache=cache)[0] for t in range(5, BLOCK)]
    assert cache.length == BLOCK
    torch.testing.assert_close(prefill[:, -1], full[:, 4])
    torch.testing.assert_close(torch.cat(steps, dim=1), full[:, 5:])


def test_dropout_is_not_even_called_outside_training():
    """Dropout is the identity in eval mode, so a decode step skips its calls; in training it drops."""
    plain, dropped = tiny(), tiny(dropout=0.5)
    calls = []
    for module in dropped.modules():
        if isinstance(module, torch.nn.Dropout):
            module.register_forward_hook(lambda *_: calls.append(1))
    idx = prompt_ids(2, BLOCK)
    with torch.no_grad():
        assert torch.equal(dropped(idx, idx)[0], plain(idx, idx)[0])  # eval: the same weights, the same logits
        assert not calls
        dropped.train()
        assert not torch.equal(dropped(idx, idx)[0], plain(idx, idx)[0])
        assert len(calls) == 1 + 2 * 2  # the embeddings' dropout, then two per block


ARCHITECTURES = {
    "gpt2": {},
    "bias": dict(bias=True),
    "tanh_gelu": dict(gelu_approximate="tanh"),
    **MODERN_OPTIONS,
    "all": {k: v for option in MODERN_OPTIONS.values() for k, v in option.items()},
}


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_decode_step_is_the_forward_pass_for_one_token(name):
    """DecodeStep makes the calls of forward(idx, kv_cache=...) for one token without the modules:
    the same logits and the same cached keys and values, bit for bit, for every architecture."""
    model = tiny(**ARCHITECTURES[name])
    with torch.no_grad():
        for p in model.parameters():  # zero-initialised weights would hide what multiplies by them
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.05)
    idx = prompt_ids(3, BLOCK)
    step = DecodeStep(model)
    ours, theirs = KVCache(model.config, 3, "cpu", torch.float32), KVCache(model.config, 3, "cpu", torch.float32)
    with torch.no_grad():
        model(idx[:, :5], kv_cache=ours)
        model(idx[:, :5], kv_cache=theirs)
        for t in range(5, BLOCK):
            assert torch.equal(step(idx[:, t : t + 1], ours), model(idx[:, t : t + 1], kv_cache=theirs)[0]), t
        with pytest.raises(ValueError, match="exceeds the context length 16"):
            step(idx[:, :1], ours)
    assert ours.length == theirs.length == BLOCK
    assert torch.equal(ours.keys, theirs.keys) and torch.equal(ours.values, theirs.values)


def test_cache_refuses_what_it_cannot_hold():
    model = tiny()
    cache = KVCache(model.config, 1, "cpu", torch.float32)
    with torch.no_grad():
        model(torch.zeros(1, 3, dtype=torch.long), kv_cache=cache)
        with pytest.raises(ValueError, match="one token at a time"):
            model(torch.zeros(1, 2, dtype=torch.long), kv_cache=cache)
        for _ in range(BLOCK - 3):
            model(torch.zeros(1, 1, dtype=torch.long), kv_cache=cache)
        with pytest.raises(ValueError, match="exceeds the context length 16"):
            model(torch.zeros(1, 1, dtype=torch.long), kv_cache=cache)


# ----------------------------------------------------------------------------- equivalence


def test_window_start():
    assert [window_start(0, n, 4, "slide") for n in (1, 4, 5, 9)] == [0, 0, 1, 5]
    # halve: a full window restarts from its newest half, then grows until full again.
    starts, start = [], 0
    for n in range(1, 12):
        start = window_start(start, n, 4, "halve")
        starts.append(start)
    assert starts == [0, 0, 0, 0, 3, 3, 3, 6, 6, 6, 9]
    assert window_start(0, 9, 5, "halve") == 6  # an odd block keeps the bigger half
    assert window_start(0, 3, 1, "halve") == 2


@pytest.mark.parametrize("window", ["slide", "halve"])
@pytest.mark.parametrize("bias", [False, True])
def test_greedy_tokens_and_every_steps_logits_match_the_naive_path(bias, window):
    """Three rows, a prompt of 5, 60 new tokens: far past the context of 16."""
    model = tiny(bias=bias)
    idx = prompt_ids(3, 5)
    naive = generate_ids(model, idx, 60, temperature=0, kv_cache=False, window=window)
    cached = generate_ids(model, idx, 60, temperature=0, kv_cache=True, window=window)
    assert naive.shape == (3, 65) and torch.equal(naive[:, :5], idx)
    assert torch.equal(cached, naive)

    naive_decoder, cached_decoder = Decoder(model, 3, kv_cache=False, window=window), Decoder(model, 3, kv_cache=True, window=window)
    with torch.no_grad():
        for t in range(5, 65):
            expected = naive_decoder.next_logits(naive[:, :t])
            torch.testing.assert_close(cached_decoder.next_logits(naive[:, :t]), expected, rtol=1e-5, atol=1e-5)
            assert torch.equal(expected.argmax(dim=-1), naive[:, t])


@pytest.mark.parametrize("window", ["slide", "halve"])
@pytest.mark.parametrize("block_size", [BLOCK, BLOCK - 1])
def test_greedy_kv_cache_matches_the_naive_path_at_random_prompt_lengths(window, block_size):
    """Prompts from 1 token to twice the context, batches of 1 to 3, each generating three
    contexts' worth of tokens: the cache is rebuilt from every kind of window."""
    model = tiny(block_size=block_size)
    rng = torch.Generator().manual_seed(7)
    for _ in range(6):
        length = int(torch.randint(1, 2 * block_size + 1, (1,), generator=rng))
        batch = int(torch.randint(1, 4, (1,), generator=rng))
        idx = torch.randint(0, len(CHARS), (batch, length), generator=rng)
        naive = generate_ids(model, idx, 3 * block_size, temperature=0, kv_cache=False, window=window)
        assert torch.equal(generate_ids(model, idx, 3 * block_size, temperature=0, kv_cache=True, window=window), naive), (length, batch)


def test_a_prompt_longer_than_the_context():
    model = tiny()
    idx = prompt_ids(2, BLOCK + 7)
    for window in ("slide", "halve"):
        naive = generate_ids(model, idx, 20, temperature=0, kv_cache=False, window=window)
        assert torch.equal(generate_ids(model, idx, 20, temperature=0, window=window), naive)
    # slide is nanoGPT's sample.py: every step sees exactly the last block_size tokens.
    with torch.no_grad():
        context = naive[:, -1 - BLOCK : -1]
        assert torch.equal(model(context)[0][:, -1].argmax(dim=-1), naive[:, -1])


@pytest.mark.parametrize("window", ["slide", "halve"])
def test_same_seed_same_samples_on_both_paths(window):
    model = tiny(bias=True)
    idx = prompt_ids(4, 3)

    def sample(seed: int, kv_cache: bool) -> torch.Tensor:
        rng = torch.Generator().manual_seed(seed)
        return generate_ids(model, idx, 50, temperature=1.0, top_k=30, top_p=0.95, generator=rng, kv_cache=kv_cache, window=window)

    cached = sample(0, True)
    assert torch.equal(cached, sample(0, False))
    assert torch.equal(cached, sample(0, True))
    assert not torch.equal(cached, sample(1, True))


# ----------------------------------------------------------------------------- sampling options


def test_greedy_generation_is_deterministic_and_extends():
    model = tiny()
    idx = torch.zeros(2, 3, dtype=torch.long)
    a = generate_ids(model, idx, 20, temperature=0)
    assert a.shape == (2, 23) and torch.equal(a, generate_ids(model, idx, 20, temperature=0)) and torch.equal(a[:, :3], idx)


@pytest.mark.parametrize("option", [dict(top_k=1), dict(top_p=1e-6), dict(top_k=5, top_p=1e-6)])
def test_top_k_1_and_a_tiny_top_p_are_greedy(option):
    model = tiny()
    idx = prompt_ids(2, 2)
    greedy = generate_ids(model, idx, 30, temperature=0)
    assert torch.equal(generate_ids(model, idx, 30, temperature=1.5, generator=torch.Generator().manual_seed(0), **option), greedy)


@pytest.mark.parametrize("temperature, top_k", [(1.0, None), (0.8, 200), (0.5, 10)])
def test_draws_are_torch_multinomials_draws(temperature, top_k):
    """pick_next draws as torch.multinomial does for one sample, without its checks: the same
    tokens from the same generator state, so texts do not depend on which of the two draws."""
    logits = torch.randn(5, len(CHARS), generator=torch.Generator().manual_seed(3)) * 3
    ours, theirs = torch.Generator().manual_seed(11), torch.Generator().manual_seed(11)
    for _ in range(50):
        token = pick_next(logits, temperature, top_k, generator=ours)
        scaled = logits / temperature
        if top_k is not None and top_k < scaled.size(-1):
            scaled = scaled.masked_fill(scaled < torch.topk(scaled, top_k).values[:, [-1]], float("-inf"))
        assert torch.equal(token, torch.multinomial(scaled.softmax(dim=-1), 1, generator=theirs))


def test_top_k_and_top_p_keep_only_the_likeliest_tokens():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.1, 0.06, 0.04]])).repeat(2000, 1)
    rng = torch.Generator().manual_seed(0)

    def drawn(**options) -> set[int]:
        return set(pick_next(logits, 1.0, generator=rng, **options).view(-1).tolist())

    assert drawn() == {0, 1, 2, 3, 4}
    assert drawn(top_k=2) == {0, 1}
    assert drawn(top_p=0.7) == {0, 1}  # 0.5 alone is short of 0.7; 0.5 + 0.3 reaches it
    assert drawn(top_p=0.85) == {0, 1, 2}
    assert drawn(top_k=2, top_p=0.85) == {0, 1}


# ----------------------------------------------------------------------------- text


class ByteTokenizer:
    """One token per UTF-8 byte, like a byte-level BPE that splits a character over tokens."""

    vocab_size = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode())

    def decode(self, ids: list[int]) -> str:
        return bytes(ids).decode(errors="replace")


def feed(text: str, stop: list[str], tokenizer=None) -> tuple[Continuation, list[str]]:
    tokenizer = tokenizer or CharTokenizer(sorted(set(text)))
    continuation, pieces = Continuation(tokenizer, stop), []
    for token in tokenizer.encode(text):
        continuation.add(token)
        pieces.append(continuation.take_final())
    continuation.finish()
    pieces.append(continuation.take_final())
    return continuation, [p for p in pieces if p]


def test_stop_strings_cut_at_the_first_one_and_never_stream():
    c, pieces = feed("to be, or not to be: that is", ["not", "be:"])
    assert c.text == "to be, or " and c.done and "".join(pieces) == c.text
    c, pieces = feed("to be, or not to be", ["be:", "or n"])
    assert c.text == "to be, " and "".join(pieces) == "to be, "
    c, pieces = feed("abcabd", ["abd"])
    assert c.text == "abc" and pieces == ["abc"]  # "ab" was held back: it could have begun "abd"
    c, pieces = feed("no stop here", ["zzz"])
    assert c.text == "no stop here" and len(pieces) == len("no stop here")


def test_characters_split_over_tokens_come_out_whole():
    c, pieces = feed("été — fin", ["fin"], ByteTokenizer())
    assert c.text == "été — " and "".join(pieces) == "été — "
    assert all("\ufffd" not in p for p in pieces)


@pytest.fixture(scope="module")
def generator() -> Generator:
    return Generator(tiny(bias=True), CharTokenizer(CHARS))


def test_generator_returns_prompt_and_continuation(generator):
    texts = generator.generate("ROMEO:", num_samples=3, max_new_tokens=40, seed=3)
    assert len(texts) == 3 and all(t.startswith("ROMEO:") and len(t) == 46 for t in texts)
    assert texts == generator.generate("ROMEO:", num_samples=3, max_new_tokens=40, seed=3)
    assert texts == generator.generate("ROMEO:", num_samples=3, max_new_tokens=40, seed=3, kv_cache=False)
    assert texts != generator.generate("ROMEO:", num_samples=3, max_new_tokens=40, seed=4)


def test_stop_strings_only_cut(generator):
    full = generator.generate("KING:", num_samples=2, max_new_tokens=40, temperature=1.0, seed=5)
    stop = re.search(r"[a-z]{2}", full[0][len("KING:") :]).group()
    cut = generator.generate("KING:", num_samples=2, max_new_tokens=40, temperature=1.0, seed=5, stop=stop)
    for text, cut_text in zip(full, cut):
        generated = text[len("KING:") :]
        end = generated.find(stop)
        assert cut_text == "KING:" + (generated if end < 0 else generated[:end])
    assert len(cut[0]) < len(full[0])


def test_streaming_hands_out_the_first_sample_piece_by_piece(generator):
    pieces: list[str] = []
    texts = generator.generate("\n", num_samples=2, max_new_tokens=30, on_text=pieces.append)
    assert pieces[0] == "\n" and len(pieces) > 10 and "".join(pieces) == texts[0]


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(top_p=0.0), "top_p=0.0 is invalid: must be in (0, 1]"),
        (dict(top_p=1.5), "top_p=1.5 is invalid"),
        (dict(top_k=0), "top_k=0 is invalid"),
        (dict(temperature=-0.1), "temperature=-0.1 is invalid"),
        (dict(max_new_tokens=0), "max_new_tokens=0 is invalid: must be >= 1"),
        (dict(num_samples=0), "num_samples=0 is invalid"),
        (dict(stop=["ok", ""]), "stop=['ok', ''] is invalid"),
        (dict(window="wrap"), "window='wrap' is invalid: must be halve or slide"),
        (dict(prompt=""), "prompt is empty"),
        (dict(prompt="Æ"), "prompt cannot be encoded: the text holds 1 character(s) outside"),
    ],
)
def test_bad_options_are_one_line_config_errors(generator, options, message):
    with pytest.raises(ConfigError) as err:
        generator.generate(**{"prompt": "A", **options})
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_import_nanogpt_stays_light_and_exports_the_api():
    code = "import sys, nanogpt; assert 'torch' not in sys.modules; print(nanogpt.Generator.__name__, nanogpt.generate.__name__)"
    proc = subprocess.run([sys.executable, "-c", code], env=cli_env(), capture_output=True, text=True, check=True)
    assert proc.stdout.split() == ["Generator", "generate"]
    assert nanogpt.Generator is Generator


# ----------------------------------------------------------------------------- the command line


def save_run(run_dir: Path, model: GPT) -> Path:
    meta = {"tokenizer": "char", "vocab_size": len(CHARS), "itos": CHARS}
    args = {k: getattr(model.config, k) for k in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd", "dropout", "bias")}
    save_checkpoint(
        run_dir / "ckpt_best.pt", {"format": CKPT_FORMAT, "model": model.state_dict(), "model_args": args, "dataset_meta": json.dumps(meta)}
    )
    return run_dir


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return save_run(tmp_path_factory.mktemp("sample") / "run", tiny(bias=True, block_size=32))


def sample(run_dir: Path, *overrides: str, check: bool = True) -> subprocess.CompletedProcess:
    return run_cli("nanogpt.sample", f"run_dir={run_dir}", "system.device=cpu", *overrides, check=check)


# 80 new tokens after a 6-character prompt: well past the context of 32.
SAMPLING = ("num_samples=2", "max_new_tokens=80", "prompt=ROMEO:", "seed=11", "top_p=0.9")


def printed(texts: list[str]) -> str:
    """What the command prints for these samples."""
    return "".join(("-" * 40 + "\n" if i else "") + text + "\n" for i, text in enumerate(texts))


def api(run_dir: Path, **options) -> list[str]:
    """The Python API with SAMPLING's settings."""
    return nanogpt.generate(run_dir, "ROMEO:", device="cpu", num_samples=2, max_new_tokens=80, seed=11, top_p=0.9, **options)


def test_the_command_prints_what_the_python_api_generates_cached_naive_or_streamed(run_dir):
    cached = sample(run_dir, *SAMPLING).stdout
    assert cached == printed(api(run_dir))
    assert sample(run_dir, *SAMPLING, "kv_cache=false").stdout == cached
    assert sample(run_dir, *SAMPLING, "stream=true").stdout == cached


def test_sliding_window_on_both_paths(run_dir):
    slid_cli = sample(run_dir, *SAMPLING, "window=slide").stdout
    assert sample(run_dir, *SAMPLING, "window=slide", "kv_cache=false", "stream=true").stdout == slid_cli
    slid = api(run_dir, window="slide")
    assert slid_cli == printed(slid)
    # The two windows part once the text outgrows the context (the command prints the default
    # window's text as the API makes it: the test above).
    halved = api(run_dir)
    assert halved[0][:32] == slid[0][:32] and halved[0] != slid[0]


def test_stream_prints_before_generation_ends(run_dir):
    command = [sys.executable, "-m", "nanogpt.sample", f"run_dir={run_dir}", "stream=true", "num_samples=1", "max_new_tokens=100000", "prompt=ROMEO:"]
    proc = subprocess.Popen(command, cwd=ROOT, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        first = proc.stdout.read(len("ROMEO:") + 1)
        assert first.startswith(b"ROMEO:") and len(first) == 7
        assert proc.poll() is None  # still generating
    finally:
        proc.kill()
        proc.wait()


def test_stop_strings_on_the_command_line(run_dir):
    # The uncut text, from the Python API (which prints as the command does: tests above).
    full = nanogpt.generate(run_dir, "ROMEO:", device="cpu", num_samples=1, max_new_tokens=60, temperature=1.0)[0]
    generated = full[len("ROMEO:") :]
    stop = re.search(r"[a-z]{2}", generated).group()
    cut = sample(run_dir, "num_samples=1", "max_new_tokens=60", "prompt=ROMEO:", "temperature=1.0", f"stop={stop}", "stop=QQQ", "stream=true")
    assert cut.stdout == "ROMEO:" + generated[: generated.find(stop)] + "\n"


@pytest.mark.parametrize(
    "overrides, message",
    [
        # One option rule through the command (each rule's message: test_bad_options_are_one_line_config_errors
        # and tests/test_validation_rules.py, in-process), a prompt refused before anything streams, a missing file.
        (("top_p=1.01",), "error: top_p=1.01 is invalid: must be in (0, 1]"),
        (("prompt='ÆÐ'", "stream=true"), "error: prompt cannot be encoded: the text holds 2 character(s) outside"),
        (("checkpoint=last",), "ckpt_last.pt: no such checkpoint"),
    ],
)
def test_bad_input_gets_one_line(run_dir, overrides, message):
    proc = sample(run_dir, *overrides, check=False)
    assert message in one_line_error(proc) and proc.stdout == ""


def test_missing_or_corrupt_checkpoint(tmp_path):
    # One through the command (a missing one too: test_bad_input_gets_one_line); the command prints
    # the CheckpointError that loading raises, as for these two.
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "ckpt_best.pt").write_bytes(b"PK\x03\x04 not really a zip file")
    assert "ckpt_best.pt: unreadable, truncated or corrupt" in one_line_error(sample(corrupt, check=False))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="ckpt_best.pt: no such checkpoint"):
        Generator.from_run(empty, "best", "cpu", "auto")
    incomplete = tmp_path / "incomplete"
    incomplete.mkdir()
    save_checkpoint(incomplete / "ckpt_best.pt", {"format": CKPT_FORMAT, "model": {}})
    with pytest.raises(CheckpointError, match=r"ckpt_best.pt: not a usable model checkpoint \(KeyError"):
        Generator.from_run(incomplete, "best", "cpu", "auto")


@pytest.mark.parametrize("kv_cache", [True, False])
def test_low_precision_weights_give_autocasts_logits_exactly(kv_cache):
    """Sampling in bfloat16 stores the blocks' weights converted: the same numbers autocast
    would make at every use, so the same logits and tokens, with half the weight bytes."""
    model = tiny()
    converted = tiny()
    store_block_weights_in(converted, torch.bfloat16)
    assert converted.transformer.h[0].attn.c_attn.weight.dtype == torch.bfloat16
    assert converted.lm_head.weight.dtype == converted.transformer.h[0].ln_1.weight.dtype == torch.float32
    idx = prompt_ids(2, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = generate_ids(model, idx, 40, temperature=0, kv_cache=kv_cache, cache_dtype=torch.bfloat16)
        got = generate_ids(converted, idx, 40, temperature=0, kv_cache=kv_cache, cache_dtype=torch.bfloat16)
        torch.testing.assert_close(converted(idx)[0], model(idx)[0], rtol=0, atol=0)
    assert torch.equal(got, expected)


def test_bfloat16_sampling_from_the_command_matches_autocast(run_dir):
    proc = sample(run_dir, *SAMPLING, "system.dtype=bfloat16")
    model = tiny(bias=True, block_size=32)  # the fixture's weights, float32 under autocast alone
    generator = Generator(model, CharTokenizer(CHARS), System(device="cpu", dtype="bfloat16", compile=False))
    texts = generator.generate("ROMEO:", num_samples=2, max_new_tokens=80, seed=11, top_p=0.9)
    assert proc.stdout == texts[0] + "\n" + "-" * 40 + "\n" + texts[1] + "\n"
