import math

import pytest
import torch

from nanogpt.config import OptimizerConfig
from nanogpt.generation import generate_ids
from nanogpt.model import GPT, GPTConfig
from nanogpt.optim import build_optimizer


def tiny(**overrides) -> GPT:
    torch.manual_seed(0)
    args = dict(vocab_size=65, block_size=16, n_layer=2, n_head=2, n_embd=32, dropout=0.0, bias=False)
    args.update(overrides)
    return GPT(GPTConfig(**args))


def test_shapes_with_and_without_targets():
    model = tiny()
    idx = torch.randint(0, 65, (3, 16))
    logits, loss = model(idx, idx)
    assert logits.shape == (3, 16, 65) and loss.shape == ()
    logits, loss = model(idx)
    assert logits.shape == (3, 1, 65) and loss is None


def test_longer_than_context_is_refused():
    with pytest.raises(ValueError, match="exceeds the context length 16"):
        tiny()(torch.zeros(1, 17, dtype=torch.long))


@pytest.mark.parametrize("bias", [False, True])
def test_causality_later_tokens_never_change_earlier_logits(bias):
    model = tiny(bias=bias).eval()
    idx = torch.randint(0, 65, (2, 16))
    changed = idx.clone()
    changed[:, 10:] = (changed[:, 10:] + 7) % 65
    with torch.no_grad():
        a, _ = model(idx, idx)
        b, _ = model(changed, changed)
    assert torch.equal(a[:, :10], b[:, :10])
    assert not torch.allclose(a[:, 10:], b[:, 10:])


def test_initial_loss_is_close_to_uniform():
    model = tiny()
    idx, targets = torch.randint(0, 65, (2, 8, 16))
    _, loss = model(idx, targets)
    assert abs(loss.item() - math.log(65)) < 0.1


def test_weights_are_tied_and_residual_projections_scaled():
    model = tiny(n_layer=8, n_embd=64)
    assert model.lm_head.weight is model.transformer.wte.weight
    proj = model.transformer.h[0].attn.c_proj.weight
    fc = model.transformer.h[0].mlp.c_fc.weight
    assert abs(fc.std().item() - 0.02) < 0.002
    assert abs(proj.std().item() - 0.02 / math.sqrt(16)) < 0.001


def test_parameter_count_matches_gpt2_small():
    model = GPT(GPTConfig(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768, bias=True))
    assert model.num_params() == 124_439_808 - 1024 * 768


def test_optimizer_decays_only_matrices():
    model = tiny(bias=True)
    opt = build_optimizer(model, OptimizerConfig(learning_rate=1e-3, weight_decay=0.1, beta2=0.95), "cpu")
    decayed, plain = opt.param_groups
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert all(p.dim() == 2 for p in decayed["params"]) and all(p.dim() == 1 for p in plain["params"])
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == sum(p.numel() for p in model.parameters())


def test_tiny_model_overfits_one_batch():
    model = tiny(n_embd=64)
    opt = build_optimizer(model, OptimizerConfig(learning_rate=3e-3, weight_decay=0.0, beta2=0.95), "cpu")
    idx = torch.randint(0, 65, (4, 16))
    for _ in range(150):
        _, loss = model(idx[:, :-1], idx[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05


def test_dropout_only_in_training_mode():
    model = tiny(dropout=0.5)
    idx = torch.randint(0, 65, (2, 16))
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(idx)[0], model(idx)[0])
    model.train()
    with torch.no_grad():
        assert not torch.equal(model(idx)[0], model(idx)[0])


def test_tanh_gelu_is_an_option():
    assert isinstance(tiny().transformer.h[0].mlp.gelu, torch.nn.GELU)
    assert tiny(gelu_approximate="tanh").transformer.h[0].mlp.gelu.approximate == "tanh"
    idx = torch.randint(0, 65, (1, 16))
    with torch.no_grad():
        assert not torch.equal(tiny()(idx)[0], tiny(gelu_approximate="tanh")(idx)[0])


@pytest.mark.parametrize("kv_cache", [True, False])
def test_padded_vocabulary_is_never_sampled(kv_cache):
    model = tiny(vocab_size=128).eval()
    padding_wins = torch.zeros(128)
    padding_wins[65:] = 100.0
    model.lm_head.register_forward_hook(lambda module, inputs, logits: logits + padding_wins)
    idx = torch.zeros(4, 1, dtype=torch.long)
    g = torch.Generator().manual_seed(0)
    assert int(generate_ids(model, idx, 30, temperature=0, kv_cache=kv_cache).max()) >= 65  # uncropped, padding wins
    assert int(generate_ids(model, idx, 30, temperature=1.0, generator=g, vocab_size=65, kv_cache=kv_cache).max()) < 65
    assert int(generate_ids(model, idx, 30, temperature=0, vocab_size=65, kv_cache=kv_cache).max()) < 65
