"""Oracles: other people's implementations computing what ours computes, from the same weights.

- transformers' GPT2LMHeadModel, loading a folder that nanogpt-export wrote: the loss with labels,
  the gradient of every parameter and greedy generation equal ours (tests/test_export.py checks
  the logits; tests/test_pretrained.py the import of transformers' folders);
- nanoGPT's own model.py (../shared/anchors/nanoGPT or NANOGPT_ANCHOR, loaded from its file as
  tests/test_vs_nanogpt.py does; skipped with the reason where absent): its `generate`, which
  crops the text to the last block_size tokens, gives the tokens of our window="slide" past the
  context, greedy and sampled with the same seed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from nanogpt.checkpoint import CKPT_FORMAT, checkpoint_path, save_checkpoint
from nanogpt.cli.export import export
from nanogpt.generation import generate_ids
from nanogpt.model import GPT, GPTConfig
from tests.test_vs_nanogpt import ANCHOR, load_nanogpt_model

CHARS = [chr(32 + i) for i in range(65)]
CHAR_META = {"tokenizer": "char", "vocab_size": len(CHARS), "itos": CHARS, "dataset": "chars"}
GPT2_META = {"tokenizer": "gpt2", "vocab_size": 50257, "dataset": "shakespeare"}
BLOCK = 32


def spread_weights(model: torch.nn.Module, seed: int) -> None:
    """Random weights far from the init's near-uniform predictions: every logit, and so every
    greedy token, depends strongly on the whole context and on its positions, and the likeliest
    token leads the next by a clear margin (float rounding never decides a greedy choice)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            centre = 1.0 if p.dim() == 1 and ".ln_" in f".{name}" and name.endswith("weight") else 0.0
            p.copy_(centre + torch.randn(p.shape, generator=generator) * (0.1 if p.dim() == 1 else 0.3))


def exported(tmp_path: Path, meta: dict, **model_args) -> tuple[GPT, Path]:
    """Our model (random, spread weights) saved as a run's checkpoint and exported by
    nanogpt-export's export(); returns the model and the exported folder."""
    args = dict(vocab_size=meta["vocab_size"], block_size=BLOCK, n_layer=2, n_head=2, n_embd=32, dropout=0.0)
    args.update(model_args)
    model = GPT(GPTConfig(**args))
    spread_weights(model, seed=1)
    padding = args["vocab_size"] - meta["vocab_size"]
    if padding:
        # Rows of a padded vocabulary are no tokens; here they would be the likeliest (scaled copies
        # of real rows), so a generation that picked from them would show it.
        with torch.no_grad():
            model.transformer.wte.weight[meta["vocab_size"] :] = 5 * model.transformer.wte.weight[:padding]
    state = {"format": CKPT_FORMAT, "model": model.state_dict(), "model_args": args, "dataset_meta": json.dumps(meta)}
    save_checkpoint(checkpoint_path(tmp_path / "run", "best"), state)
    cfg = OmegaConf.create({"run_dir": str(tmp_path / "run"), "out": str(tmp_path / "hf"), "checkpoint": "best", "overwrite": False})
    return model.eval(), export(cfg)


def transformers_model(folder: Path):
    from transformers import GPT2LMHeadModel

    return GPT2LMHeadModel.from_pretrained(folder).eval()


def their_gradient(hf, name: str) -> torch.Tensor:
    """The gradient of transformers' parameter `name` in our layout: its Conv1D modules hold their
    weights as (in, out), our nn.Linear as (out, in). Which are Conv1D is asked of transformers."""
    from transformers.pytorch_utils import Conv1D

    module_name, _, leaf = name.rpartition(".")
    grad = hf.get_parameter(name).grad
    assert grad is not None, f"transformers computed no gradient for {name}"
    return grad.t() if isinstance(hf.get_submodule(module_name), Conv1D) and leaf == "weight" else grad


@pytest.mark.parametrize("bias, gelu", [(False, "none"), (True, "tanh")], ids=["nanogpt-shape", "gpt2-shape"])
def test_transformers_computes_our_loss_and_every_gradient(tmp_path, bias, gelu):
    ours, folder = exported(tmp_path, CHAR_META, bias=bias, gelu_approximate=gelu)
    hf = transformers_model(folder)
    # The head is the token embedding in both: one parameter, whose gradient gathers both uses.
    assert hf.lm_head.weight is hf.transformer.wte.weight and ours.lm_head.weight is ours.transformer.wte.weight

    idx = torch.randint(0, len(CHARS), (3, BLOCK), generator=torch.Generator().manual_seed(0))
    # transformers shifts labels by itself and predicts nothing after the last token; ours takes
    # the targets as given, -1 for "none".
    targets = torch.cat([idx[:, 1:], torch.full((3, 1), -1)], dim=1)
    _, our_loss = ours(idx, targets)
    their_loss = hf(input_ids=idx, labels=idx).loss
    assert abs(our_loss.item() - their_loss.item()) < 1e-5, (our_loss.item(), their_loss.item())
    our_loss.backward()
    their_loss.backward()

    our_params = dict(ours.named_parameters())
    their_params = dict(hf.named_parameters())
    # Every one of our parameters is one of theirs; theirs has only the zero biases the export
    # adds to a model without biases (there they compute nothing, and get gradients of their own).
    assert set(our_params) <= set(their_params), sorted(set(our_params) - set(their_params))
    extra = set(their_params) - set(our_params)
    expected_extra = 0 if bias else 2 * 6 + 1  # ln_1, ln_2, c_attn, attn.c_proj, c_fc, mlp.c_proj per block; ln_f
    assert all(name.endswith(".bias") for name in extra) and len(extra) == expected_extra, sorted(extra)
    worst = {}
    for name, p in our_params.items():
        theirs = their_gradient(hf, name)
        assert theirs.shape == p.grad.shape, name
        worst[name] = (theirs - p.grad).abs().max().item() / max(p.grad.abs().max().item(), 1e-12)
        assert p.grad.abs().max() > 0, f"{name}: no gradient"
    print(f"loss {our_loss.item():.6f} vs {their_loss.item():.6f}; largest relative gradient difference {max(worst.values()):.1e}")
    assert max(worst.values()) < 1e-5, sorted(worst.items(), key=lambda item: -item[1])[:3]


@pytest.mark.parametrize(
    "meta, model_args",
    [(CHAR_META, dict(bias=False)), (CHAR_META, dict(bias=True, gelu_approximate="tanh")), (GPT2_META, dict(vocab_size=50304))],
    ids=["char", "char-bias-tanh", "gpt2-padded-vocab"],
)
def test_transformers_greedy_generation_gives_our_tokens(tmp_path, meta, model_args):
    """Up to the context's length (transformers' GPT-2 has no positions beyond it); a padded
    vocabulary's extra rows are cut by the export and never picked by us."""
    ours, folder = exported(tmp_path, meta, **model_args)
    hf = transformers_model(folder)
    idx = torch.randint(0, meta["vocab_size"], (2, 5), generator=torch.Generator().manual_seed(3))
    new = BLOCK - idx.size(1)
    with torch.no_grad():
        theirs = hf.generate(idx, attention_mask=torch.ones_like(idx), max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=0)
    assert theirs.shape == (2, BLOCK)
    assert len(set(theirs[0, 5:].tolist())) > 3  # a text, not one token repeated
    for kv_cache in (True, False):
        mine = generate_ids(ours, idx, new, temperature=0, kv_cache=kv_cache, vocab_size=meta["vocab_size"])
        assert torch.equal(mine, theirs), (kv_cache, mine, theirs)


# ----------------------------------------------------------------------------- nanoGPT's generate

needs_nanogpt = pytest.mark.skipif(
    not (ANCHOR / "model.py").is_file(), reason=f"no nanoGPT at {ANCHOR} (set NANOGPT_ANCHOR to a copy of karpathy/nanoGPT)"
)
NANO_BLOCK = 16


@pytest.fixture(scope="module")
def nanogpt_pair():
    """nanoGPT's GPT with spread random weights, and ours holding the same weights."""
    nano = load_nanogpt_model()
    args = dict(n_layer=2, n_head=2, n_embd=32, block_size=NANO_BLOCK, bias=True, vocab_size=len(CHARS), dropout=0.0)
    theirs = nano.GPT(nano.GPTConfig(**args))
    spread_weights(theirs, seed=2)
    ours = GPT(GPTConfig(**args))
    ours.load_state_dict(theirs.state_dict())
    return theirs.eval(), ours.eval()


generations = st.tuples(st.integers(1, 2 * NANO_BLOCK), st.integers(1, 3 * NANO_BLOCK), st.integers(1, 2), st.integers(0, 2**16))


@needs_nanogpt
@settings(max_examples=25, deadline=None, database=None)
@given(case=generations, kv_cache=st.booleans())
def test_nanogpts_generate_greedy_gives_our_sliding_window_tokens(nanogpt_pair, case, kv_cache):
    """nanoGPT's generate with top_k=1 (greedy; it has no temperature 0) against ours at temperature
    0, from prompts of 1 to 2 contexts, generating up to 3 contexts' worth of tokens."""
    theirs, ours = nanogpt_pair
    length, new, batch, seed = case
    idx = torch.randint(0, len(CHARS), (batch, length), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        expected = theirs.generate(idx, new, temperature=1.0, top_k=1)
    mine = generate_ids(ours, idx, new, temperature=0, window="slide", kv_cache=kv_cache)
    assert torch.equal(mine, expected), (length, new, kv_cache)


@needs_nanogpt
@settings(max_examples=15, deadline=None, database=None)
@given(case=generations, top_k=st.one_of(st.none(), st.integers(2, 20)), temperature=st.sampled_from([0.5, 0.8, 1.0, 1.3]))
def test_nanogpts_generate_sampling_gives_our_sliding_window_tokens(nanogpt_pair, case, top_k, temperature):
    """Sampling from the same seed (nanoGPT draws with torch.multinomial from torch's global
    generator; ours draws the same from the generator given, here that one) gives the same tokens:
    the same window, temperature and top-k at every step. The naive path, whose logits are
    nanoGPT's to the last bit, so that no draw falls on the other side of a rounding."""
    theirs, ours = nanogpt_pair
    length, new, batch, seed = case
    idx = torch.randint(0, len(CHARS), (batch, length), generator=torch.Generator().manual_seed(seed))
    state = torch.get_rng_state()
    try:
        torch.manual_seed(seed)
        with torch.no_grad():
            expected = theirs.generate(idx, new, temperature=temperature, top_k=top_k)
        torch.manual_seed(seed)
        mine = generate_ids(ours, idx, new, temperature=temperature, top_k=top_k, window="slide", kv_cache=False, generator=torch.default_generator)
    finally:
        torch.set_rng_state(state)
    assert torch.equal(mine, expected), (length, new, top_k, temperature)
