"""Property-based tests (hypothesis): random inputs against references written here, independently
of the code under test.

- tokenizers: decode(encode(text)) == text for random texts (characters: over the vocabulary;
  GPT-2: any unicode text, "<|endoftext|>" included, which stays plain text);
- top-k / top-p: the tokens pick_next can draw are exactly those a numpy reference keeps, drawn
  as often as the reference's renormalised probabilities say;
- the learning-rate schedule: linear warmup from about zero, its peak at the end of warmup, a
  cosine decay (non-increasing, symmetric about its midpoint) to min_lr at lr_decay_iters, min_lr
  after; a time budget moves the decay ahead, never back.

KV cache against the naive path at random prompt lengths and both window modes:
tests/test_generate.py::test_greedy_kv_cache_matches_the_naive_path_at_random_prompt_lengths.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from nanogpt.config import OptimizerConfig
from nanogpt.data import CharTokenizer, DataError
from nanogpt.data.tokenizers import END_OF_TEXT, gpt2_tokenizer
from nanogpt.generation import pick_next
from nanogpt.training.loop import lr_at

# Modest example counts (the file runs in seconds); no example database in the checkout.
PROPERTY = settings(max_examples=40, deadline=None, database=None)


# ----------------------------------------------------------------------------- tokenizers

# A character vocabulary: any characters but surrogates (which no str of valid text holds), often
# with the whitespace and line ends that text is full of.
characters = st.characters(exclude_categories=("Cs",))
vocabularies = st.sets(st.one_of(st.sampled_from("\n\r\t aZ"), characters), min_size=1, max_size=40).map(sorted)


@PROPERTY
@given(itos=vocabularies, picks=st.lists(st.integers(0, 39), max_size=200))
@example(itos=["\n", "\r", " ", "a"], picks=[3, 1, 0, 2, 1, 0, 0, 2])  # Windows line ends stay as they are
def test_char_tokenizer_round_trips_any_text_over_its_vocabulary(itos, picks):
    tokenizer = CharTokenizer(itos)
    text = "".join(itos[i % len(itos)] for i in picks)
    ids = tokenizer.encode(text)
    assert len(ids) == len(text) and all(0 <= i < tokenizer.vocab_size for i in ids)
    assert [itos[i] for i in ids] == list(text)  # each character its own id: its place in the vocabulary
    assert tokenizer.encode_array(text).tolist() == ids
    assert tokenizer.decode(ids) == text


@PROPERTY
@given(data=st.data(), itos=vocabularies)
def test_char_tokenizer_refuses_a_character_outside_its_vocabulary(data, itos):
    tokenizer = CharTokenizer(itos)
    # Any character, or one next to a character of the vocabulary (where off-by-ones in a lookup
    # table live).
    neighbours = [chr(ord(c) + d) for c in itos for d in (-1, 1) if 0 <= ord(c) + d < 0x110000]
    neighbours = [c for c in neighbours if c not in itos and not 0xD800 <= ord(c) < 0xE000]
    outside = data.draw(st.one_of(characters, *([st.sampled_from(neighbours)] if neighbours else [])).filter(lambda c: c not in itos))
    text = data.draw(st.text(alphabet=st.sampled_from(itos), max_size=20)) + outside
    with pytest.raises(DataError, match="outside this model's vocabulary"):
        tokenizer.encode(text)


# Any unicode text (no lone surrogates: those are no text), with GPT-2's special token, whitespace
# runs and pieces its regex splits on mixed in.
unicode_texts = st.lists(
    st.one_of(st.text(max_size=60), st.sampled_from([END_OF_TEXT, " ", "  ", "\n", "\r\n", "\t", "'s", "'LL", "é", "🙂", "日本"])),
    max_size=8,
).map("".join)


@PROPERTY
@given(text=unicode_texts)
@example(text="naïve café — 日本語 🙂\n\n\ttabs  and  spaces\r\n")
@example(text=f"one{END_OF_TEXT}two")
@example(text="  leading and trailing spaces  ")
def test_gpt2_tokenizer_round_trips_any_unicode_text(text):
    tokenizer = gpt2_tokenizer()
    ids = tokenizer.encode(text)
    assert all(0 <= i < tokenizer.eot_token for i in ids)  # "<|endoftext|>" in a text is plain text
    assert tokenizer.encode_array(text).tolist() == ids
    assert tokenizer.decode(ids) == text


# ----------------------------------------------------------------------------- top-k / top-p

DRAWS = 100_000  # draws per example: each kept token is drawn with probability >= ~2.8e-4 (below)


def reference_kept(scaled: np.ndarray, top_k: int | None, top_p: float) -> tuple[set[int], list[tuple[list[int], int, int]]]:
    """What top-k then top-p keep of the logits `scaled` (already divided by the temperature), in
    float64. top_k keeps every token at least as likely as the k-th likeliest (ties at the k-th
    all stay). top_p then drops a token once the tokens before it in likeliest-first order hold
    top_p: tokens of equal probability have no order among themselves, so of such a group only
    how many stay is defined. Returns the tokens that surely stay, and per group of equal
    probability (tokens, fewest, most) that stay; fewest < most only where the group's boundary
    falls within float32 rounding of top_p."""
    logits = scaled.astype(np.float64)
    kept = np.ones(len(logits), dtype=bool)
    if top_k is not None and top_k < len(logits):
        kth = np.sort(logits)[::-1][top_k - 1]
        kept = logits >= kth
    probs = np.where(kept, np.exp(logits - logits[kept].max()), 0.0)
    probs /= probs.sum()
    # Groups of equal probability, likeliest first (within float32 rounding: such tokens may sort
    # either way in the code's float32 softmax).
    order = [int(i) for i in np.argsort(-probs, kind="stable") if kept[i]]
    ties: list[list[int]] = []
    for i in order:
        if ties and math.isclose(probs[i], probs[ties[-1][0]], rel_tol=1e-6):
            ties[-1].append(i)
        else:
            ties.append([i])
    surely, groups = set(), []
    more_likely = 0.0  # the mass of the tokens likelier than the current group
    for members in ties:
        mass = [float(probs[i]) for i in members]
        before = [more_likely + sum(mass[:j]) for j in range(len(members))]  # mass ahead of the group's j-th
        tolerance = 1e-5  # float32 softmax and cumsum against float64
        fewest = sum(b < top_p - tolerance for b in before) if top_p < 1.0 else len(members)
        most = sum(b < top_p + tolerance for b in before) if top_p < 1.0 else len(members)
        if fewest == most == len(members):
            surely.update(members)
        else:
            groups.append((members, fewest, most))
        more_likely += sum(mass)
    return surely, groups


def draw_counts(logits: np.ndarray, temperature: float, top_k: int | None, top_p: float, draws: int = DRAWS) -> np.ndarray:
    """How often pick_next draws each token in `draws` draws from the same logits."""
    rows = torch.from_numpy(np.asarray(logits, dtype=np.float32)).repeat(draws, 1)
    tokens = pick_next(rows, temperature, top_k, top_p, generator=torch.Generator().manual_seed(0)).view(-1)
    return np.bincount(tokens.numpy(), minlength=len(logits))


@pytest.mark.parametrize("vocab", [2, 4, 8, 16])
def test_top_p_drops_a_token_once_the_likelier_ones_hold_exactly_top_p(vocab):
    """The boundary itself, where float32 computes exactly (probabilities 1/vocab, top_p m/vocab):
    m equally likely tokens hold top_p = m/vocab, so exactly m of them stay."""
    for m in range(1, vocab):
        counts = draw_counts(np.zeros(vocab), 1.0, None, m / vocab, draws=2000)  # each kept one: p >= 1/16
        assert np.count_nonzero(counts) == m, (m, counts)


# Logits within [-2, 2] and temperatures within [0.7, 1.5], at most 12 tokens: the likeliest token
# is at most e^(4 / 0.7) times likelier than any other, so every kept token has a probability of at
# least ~2.8e-4 and is drawn ~28 times in DRAWS draws (missed with probability e^-28).
sampling_cases = st.integers(2, 12).flatmap(
    lambda vocab: st.tuples(
        st.lists(st.floats(-2, 2, width=32), min_size=vocab, max_size=vocab),
        st.floats(0.7, 1.5),
        st.one_of(st.none(), st.integers(1, vocab + 2)),
        st.one_of(st.just(1.0), st.floats(1e-3, 1.0, exclude_max=True), st.sampled_from([0.25, 0.5, 0.75, 1 / 3])),
    )
)


@PROPERTY
@given(case=sampling_cases)
@example(case=([0.0, 0.0, 0.0, 0.0], 1.0, None, 0.5001))  # two of the four equally likely ones are short of top_p
@example(case=([1.0, 1.0, 0.0, 0.0, -1.0], 1.3, 4, 0.6))  # ties at top_p's boundary: only how many stay is defined
@example(case=([1.0, 0.5, 0.5, 0.5, -1.0], 1.0, 2, 1.0))  # ties at the k-th likeliest all stay
@example(case=([2.0, 1.0, 0.0, -1.0, -2.0], 1.0, 5, 0.999))  # top_k equal to the vocabulary: no-op
def test_top_k_and_top_p_keep_exactly_what_the_reference_keeps(case):
    logits, temperature, top_k, top_p = case
    logits32 = np.array(logits, dtype=np.float32)
    scaled = logits32 / np.float32(temperature)  # softmax(logits / temperature), as documented
    surely, groups = reference_kept(scaled, top_k, top_p)

    counts = draw_counts(logits32, temperature, top_k, top_p)
    drawn = {int(i) for i in np.flatnonzero(counts)}

    grouped = {i for members, _, _ in groups for i in members}
    assert surely <= drawn, f"kept tokens never drawn: {sorted(surely - drawn)}"
    assert drawn <= surely | grouped, f"dropped tokens drawn: {sorted(drawn - surely - grouped)}"
    for members, fewest, most in groups:
        assert fewest <= len(drawn & set(members)) <= most, (members, fewest, most, sorted(drawn))

    # Among the kept tokens, each is drawn as often as its renormalised probability says.
    probs = np.where(np.isin(np.arange(len(logits)), list(drawn)), np.exp(scaled.astype(np.float64) - scaled.max()), 0.0)
    probs /= probs.sum()
    frequencies = counts / DRAWS
    sigma = np.sqrt(probs * (1 - probs) / DRAWS)
    assert np.all(np.abs(frequencies - probs) <= 6 * sigma + 1e-4), (frequencies, probs)


# ----------------------------------------------------------------------------- learning rate

schedules = st.builds(
    lambda lr, min_fraction, warmup, decay_span: OmegaConf.structured(
        OptimizerConfig(learning_rate=lr, min_lr=lr * min_fraction, warmup_iters=warmup, lr_decay_iters=warmup + decay_span)
    ),
    lr=st.floats(1e-5, 1.0),
    min_fraction=st.one_of(st.just(0.0), st.just(0.1), st.floats(0.0, 1.0, exclude_max=True)),
    warmup=st.integers(0, 40),
    decay_span=st.integers(1, 120),
)


@PROPERTY
@given(opt=schedules, max_iters=st.integers(1, 500))
def test_learning_rate_schedule_shape(opt, max_iters):
    lr, min_lr, warmup, decay = opt.learning_rate, opt.min_lr, opt.warmup_iters, opt.lr_decay_iters
    rates = [lr_at(it, opt, max_iters) for it in range(decay + 20)]
    close = lambda a, b: math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12 * lr)  # noqa: E731

    # Warmup: a straight line through zero at iteration -1, strictly rising, short of the peak.
    if warmup:
        assert close(rates[0], lr / (warmup + 1))
        assert all(close(rates[it], (it + 1) * rates[0]) for it in range(warmup))
        assert all(a < b for a, b in zip(rates[:warmup], rates[1 : warmup + 1]))
    # The peak at the end of warmup, and nowhere above it.
    assert close(rates[warmup], lr) and all(rate <= rates[warmup] for rate in rates)
    # Decay: non-increasing from the peak to min_lr, reached exactly at lr_decay_iters, then kept.
    decaying = rates[warmup : decay + 1]
    assert all(a >= b for a, b in zip(decaying, decaying[1:])), decaying
    assert rates[decay] == min_lr and all(rate == min_lr for rate in rates[decay:])
    assert all(rate >= min_lr for rate in rates[warmup:])
    # A cosine: symmetric about the decay's midpoint (where it is halfway between peak and floor),
    # concave before the midpoint and convex after it (a straight line would be neither).
    span = decay - warmup
    for x in range(span + 1):
        assert close(rates[warmup + x] - min_lr + rates[decay - x] - min_lr, lr - min_lr), x
    if span % 2 == 0:
        assert close(rates[warmup + span // 2], (lr + min_lr) / 2)
    bend = [decaying[x - 1] - 2 * decaying[x] + decaying[x + 1] for x in range(1, span)]
    slack = 1e-9 * lr
    assert all(b <= slack for x, b in enumerate(bend, 1) if 2 * x < span), bend
    assert all(b >= -slack for x, b in enumerate(bend, 1) if 2 * x > span), bend
    if min_lr < lr and span >= 4 and span % 4 == 0:  # a quarter of the way: the cosine's value, not the line's
        assert close(rates[warmup + span // 4], min_lr + (lr - min_lr) * (1 + math.cos(math.pi / 4)) / 2)


@PROPERTY
@given(opt=schedules, data=st.data())
def test_time_budget_moves_the_decay_ahead_never_back(opt, data):
    """Under time_budget_s the decay follows whichever is further along, the iterations or the
    clock: the rate is the lower of the two schedules, is min_lr once the budget is spent, and
    falls as the budget is used. Warmup goes by iterations."""
    min_lr, warmup, decay = opt.min_lr, opt.warmup_iters, opt.lr_decay_iters
    it = data.draw(st.integers(0, decay + 5))
    used = sorted(data.draw(st.lists(st.floats(0.0, 1.5), min_size=2, max_size=6)))
    rates = [lr_at(it, opt, 10**6, u) for u in used]
    assert lr_at(it, opt, 10**6, 0.0) == lr_at(it, opt, 10**6)
    if it < warmup:
        assert all(rate == lr_at(it, opt, 10**6) for rate in rates)
        return
    assert all(a >= b for a, b in zip(rates, rates[1:])), (used, rates)
    for u, rate in zip(used, rates):
        # The clock's schedule alone: at the end of warmup the iterations have made no progress.
        by_clock = lr_at(warmup, opt, 10**6, u)
        assert rate == min(lr_at(it, opt, 10**6), by_clock)
        assert min_lr <= rate <= lr_at(warmup, opt, 10**6)
        if u >= 1.0:
            assert rate == min_lr


@PROPERTY
@given(opt=schedules, max_iters=st.integers(1, 300), it=st.integers(0, 400))
def test_schedule_defaults(opt, max_iters, it):
    """lr_decay_iters=null decays over max_iters; decay_lr=false is the constant learning_rate."""
    over_the_run = OmegaConf.merge(opt, {"lr_decay_iters": None})
    assert lr_at(it, over_the_run, max_iters) == lr_at(it, OmegaConf.merge(opt, {"lr_decay_iters": max_iters}), max_iters)
    constant = OmegaConf.merge(opt, {"decay_lr": False})
    assert lr_at(it, constant, max_iters, 0.7) == opt.learning_rate
