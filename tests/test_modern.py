"""The speedrun options of the model (rotary embeddings, RMSNorm, QK-norm, ReLU^2, untied head,
zero-initialised projections) and the Muon optimizer: each alone, all together, through the
CLI, and resumed bit-for-bit."""

from __future__ import annotations

import copy
import math
import time
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

import nanogpt
import nanogpt.checkpoint.state
import nanogpt.training
from nanogpt.checkpoint import load_checkpoint
from nanogpt.config import ConfigError, OptimizerConfig, validate_train
from nanogpt.generation import generate_ids
from nanogpt.metrics import read_metrics
from nanogpt.model import GPT, GPTConfig, KVCache, LayerNorm, RMSNorm, Rotary
from nanogpt.optim import Muon, build_optimizer, orthogonalize
from nanogpt.training import loop
from tests.conftest import TINY, run_cli, state_digest, train_here

OPTIONS = {
    "rope": dict(position="rope"),
    "rmsnorm": dict(norm="rmsnorm"),
    "qk_norm": dict(qk_norm=True),
    "relu2": dict(activation="relu2"),
    "untied": dict(tie_embeddings=False),
    "zero_init": dict(zero_init_proj=True),
}
ALL = {k: v for option in OPTIONS.values() for k, v in option.items()}
ALL_CLI = [f"model.{k}={str(v).lower()}" for k, v in ALL.items()]


def tiny(**overrides) -> GPT:
    torch.manual_seed(0)
    args = dict(vocab_size=65, block_size=16, n_layer=2, n_head=2, n_embd=32, dropout=0.0, bias=False)
    args.update(overrides)
    return GPT(GPTConfig(**args)).eval()


def perturb(model: GPT) -> GPT:
    """Zero-initialised weights hide bugs that multiply by them: give every weight a value."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


# ----------------------------------------------------------------------------- each option


@pytest.mark.parametrize("name", [*OPTIONS, "all"])
def test_each_option_keeps_causality_the_kv_cache_and_gradients(name):
    model = perturb(tiny(**(ALL if name == "all" else OPTIONS[name])))
    idx = torch.randint(0, 65, (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full, _ = model(idx, idx)
        changed = idx.clone()
        changed[:, 10:] = (changed[:, 10:] + 1) % 65
        assert torch.equal(model(changed, changed)[0][:, :10], full[:, :10])  # the future never leaks back
        cache = KVCache(model.config, 2, "cpu", torch.float32)
        model(idx[:, :4], kv_cache=cache)
        steps = [model(idx[:, t : t + 1], kv_cache=cache)[0] for t in range(4, 16)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full[:, 4:])
    naive = generate_ids(model, idx[:, :3], 40, temperature=0, kv_cache=False)
    assert torch.equal(generate_ids(model, idx[:, :3], 40, temperature=0, kv_cache=True), naive)
    model.train()
    _, loss = model(idx, idx)
    loss.backward()
    assert math.isfinite(loss.item())
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_defaults_are_gpt2():
    model = tiny()
    assert "transformer.wpe.weight" in model.state_dict()
    assert model.lm_head.weight is model.transformer.wte.weight
    assert all(isinstance(m, LayerNorm) for name, m in model.named_modules() if name.endswith(("ln_1", "ln_2", "ln_f")))


def test_rope_replaces_the_position_table_and_depends_on_distance_only():
    model = tiny(position="rope")
    assert not any("wpe" in name for name in model.state_dict())  # nothing learned, nothing saved
    assert model.num_params() == sum(p.numel() for p in model.parameters())
    rotary = Rotary(head_size=8, block_size=32, base=10000.0)
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)

    def score(m: int, n: int) -> torch.Tensor:
        return (rotary(q, m) * rotary(k, n)).sum()

    torch.testing.assert_close(score(3, 1), score(20, 18))
    torch.testing.assert_close(score(5, 5), (q * k).sum())  # same position: no rotation left
    assert not torch.allclose(score(3, 1), score(3, 2))
    torch.testing.assert_close(rotary(q, 7).norm(), q.norm())  # a rotation keeps lengths


def test_rmsnorm_gives_unit_rms_times_the_gain():
    model = tiny(norm="rmsnorm")
    norms = [m for name, m in model.named_modules() if name.endswith(("ln_1", "ln_2", "ln_f"))]
    assert len(norms) == 5 and all(isinstance(m, RMSNorm) for m in norms)
    x = torch.randn(4, 32) * 7 + 3
    y = norms[0](x)
    torch.testing.assert_close(y.pow(2).mean(dim=-1), torch.ones(4), rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        norms[0].weight.fill_(2.0)
    torch.testing.assert_close(norms[0](x), 2 * y)


def test_qk_norm_makes_attention_blind_to_the_scale_of_queries_and_keys():
    model = perturb(tiny(qk_norm=True))
    idx = torch.randint(0, 65, (2, 16))
    with torch.no_grad():
        before, _ = model(idx)
        for block in model.transformer.h:
            block.attn.c_attn.weight[: 2 * 32].mul_(100.0)  # the query and key rows
        after, _ = model(idx)
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)


def test_relu2_mlp():
    model = perturb(tiny(activation="relu2"))
    mlp = model.transformer.h[0].mlp
    x = torch.randn(3, 32)
    with torch.no_grad():
        torch.testing.assert_close(mlp(x), mlp.c_proj(F.relu(mlp.c_fc(x)) ** 2))


def test_untied_head_has_its_own_matrix():
    tied, untied = tiny(), tiny(tie_embeddings=False)
    assert untied.lm_head.weight is not untied.transformer.wte.weight
    total = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert total(untied) == total(tied) + 65 * 32
    # The embedding lookup does no compute, so it is left out of the count used for MFU.
    assert untied.num_params() == total(untied) - 65 * 32 - 16 * 32


def test_zero_init_starts_every_block_as_the_identity():
    model = tiny(zero_init_proj=True, tie_embeddings=False)
    projections = [p for name, p in model.named_parameters() if name.endswith("c_proj.weight") or name == "lm_head.weight"]
    assert len(projections) == 5 and all(torch.count_nonzero(p) == 0 for p in projections)
    idx = torch.randint(0, 65, (2, 16))
    logits, loss = model(idx, idx)
    assert torch.count_nonzero(logits) == 0 and loss.item() == pytest.approx(math.log(65), abs=1e-5)
    # With a tied head the head is the embedding, which keeps its random init.
    assert torch.count_nonzero(tiny(zero_init_proj=True).lm_head.weight) > 0


# ----------------------------------------------------------------------------- Muon


# Rectangular: a square Gaussian matrix has singular values arbitrarily close to 0, which five
# iterations do not lift (nor need to: Muon only needs the bulk of them near 1).
@pytest.mark.parametrize("shape", [(64, 32), (96, 32), (32, 128), (3, 16, 8)])
def test_orthogonalize_sets_every_singular_value_near_one(shape):
    g = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    g[..., 0, :] *= 50  # one dominant direction, as gradients often have
    o = orthogonalize(g)
    assert o.shape == g.shape and o.dtype == g.dtype
    s = torch.linalg.svdvals(o)
    assert s.min() > 0.5 and s.max() < 1.25, s
    # It keeps the directions: U V^T of g up to the slack in the singular values.
    u, _, vh = torch.linalg.svd(g, full_matrices=False)
    assert F.cosine_similarity((u @ vh).flatten(), o.flatten(), dim=0) > 0.9


def muon_config(**overrides) -> OptimizerConfig:
    return OptimizerConfig(**{"name": "muon", "learning_rate": 1e-3, "weight_decay": 0.1, "muon_learning_rate": 0.02, **overrides})


@pytest.mark.parametrize("tie", [True, False])
def test_muon_takes_the_blocks_matrices_and_adamw_the_rest(tie):
    model = tiny(tie_embeddings=tie, position="rope" if tie else "learned")
    opt = build_optimizer(model, muon_config(embedding_learning_rate=0.1), "cpu")
    names = {id(p): n for n, p in model.named_parameters()}
    groups = [(g["use_muon"], g["weight_decay"], g["lr_ratio"], sorted(names[id(p)] for p in g["params"])) for g in opt.param_groups]
    muon, *adamw = groups
    assert muon[:3] == (True, 0.0, pytest.approx(20.0)) and len(muon[3]) == 8
    assert all(n.startswith("transformer.h.") and n.endswith(".weight") and "ln" not in n for n in muon[3])
    if tie:  # the tied matrix is the head: learning_rate; no embedding group
        matrices, gains = adamw
        assert matrices[:3] == (False, 0.1, 1.0) and matrices[3] == ["transformer.wte.weight"]
    else:
        embeddings, matrices, gains = adamw
        assert embeddings[:3] == (False, 0.1, pytest.approx(100.0))
        assert embeddings[3] == ["transformer.wpe.weight", "transformer.wte.weight"]
        assert matrices[:3] == (False, 0.1, 1.0) and matrices[3] == ["lm_head.weight"]
    assert gains[:2] == (False, 0.0) and all("ln" in n for n in gains[3])
    assert sum(len(g[3]) for g in groups) == len(names)  # every parameter exactly once


def test_muons_adamw_part_matches_torchs_adamw():
    torch.manual_seed(0)
    a, b = torch.randn(10, 4, requires_grad=True), torch.randn(7, requires_grad=True)
    a2, b2 = a.detach().clone().requires_grad_(), b.detach().clone().requires_grad_()
    ours = Muon([{"params": [a], "weight_decay": 0.1}, {"params": [b]}], lr=3e-3, betas=(0.9, 0.95))
    theirs = torch.optim.AdamW([{"params": [a2], "weight_decay": 0.1}, {"params": [b2], "weight_decay": 0.0}], lr=3e-3, betas=(0.9, 0.95))
    for step in range(20):
        for x, y, opt in ((a, b, ours), (a2, b2, theirs)):
            opt.zero_grad()
            ((x.sin() * (step + 1)).sum() + (y**2).sum()).backward()
            opt.step()
    torch.testing.assert_close(a, a2)
    torch.testing.assert_close(b, b2)


def test_muon_step_is_an_orthogonal_update_of_the_nesterov_momentum():
    w = torch.zeros(16, 8, requires_grad=True)
    opt = Muon([{"params": [w], "use_muon": True}], lr=0.1, momentum=0.9)
    g = torch.randn(16, 8)
    w.grad = g.clone()
    opt.step()
    # First step: buffer = 0.1 g; nesterov update = g blended 0.9 towards it; a tall matrix's
    # step is scaled by sqrt(16 / 8).
    expected = -0.1 * math.sqrt(2) * orthogonalize(g.lerp(0.1 * g, 0.9))
    torch.testing.assert_close(w.detach(), expected)


def newton_schulz(g: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """The quintic Newton-Schulz iteration for one matrix, as modded-nanogpt writes it."""
    a, b, c = 3.4445, -4.7750, 2.0315
    tall = g.size(0) > g.size(1)
    x = g.T if tall else g
    x = x / (x.norm() + 1e-7)
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if tall else x


def test_muon_matches_a_per_parameter_reference_over_several_steps():
    """Muon one matrix at a time (SGD momentum, the Nesterov blend, Newton-Schulz, the tall-matrix
    scale, decoupled weight decay) and torch's AdamW for the other groups."""
    config = muon_config(learning_rate=3e-3, muon_learning_rate=0.05, muon_weight_decay=0.1, embedding_learning_rate=0.01)
    model, twin = perturb(tiny(**ALL)), perturb(tiny(**ALL))
    twin.load_state_dict(model.state_dict())
    opt = build_optimizer(model, config, "cpu")
    groups = build_optimizer(twin, config, "cpu").param_groups  # the same groups, over the twin
    for group in opt.param_groups + groups:
        group["lr"] *= group["lr_ratio"]  # as the training loop's schedule sets it
    adamw = torch.optim.AdamW(
        [{k: g[k] for k in ("params", "lr", "weight_decay", "betas", "eps")} for g in groups if not g["use_muon"]], foreach=False
    )
    buffers: dict[torch.Tensor, torch.Tensor] = {}

    def reference_step() -> None:
        for group in groups:
            if not group["use_muon"]:
                continue
            lr, momentum = group["lr"], group["momentum"]
            for p in group["params"]:
                buffer = buffers.setdefault(p, torch.zeros_like(p))
                buffer.mul_(momentum).add_(p.grad, alpha=1 - momentum)
                update = newton_schulz(momentum * buffer + (1 - momentum) * p.grad)
                p.mul_(1 - lr * group["weight_decay"])
                p.sub_(lr * max(1.0, p.size(0) / p.size(1)) ** 0.5 * update)
        adamw.step()

    batches = torch.randint(0, 65, (5, 4, 16), generator=torch.Generator().manual_seed(3))
    for idx in batches:
        for m, step in ((model, opt.step), (twin, reference_step)):
            m.zero_grad(set_to_none=True)
            m.train()(idx[:, :-1], idx[:, 1:])[1].backward()
            with torch.no_grad():
                step()
    for (name, ours), reference in zip(model.named_parameters(), twin.parameters()):
        torch.testing.assert_close(ours, reference, msg=lambda why: f"{name}: {why}")
    assert not torch.equal(model.lm_head.weight, perturb(tiny(**ALL)).lm_head.weight)  # it moved


class KernelCount(TorchDispatchMode):
    """Counts the ops that go through a tensor's elements: one kernel launch each on a GPU. Views
    move no data, and the optimizer's step counters are CPU scalars that the host reads."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not func.is_view and func is not torch.ops.aten._unsafe_view.default:
            self.count += any(isinstance(t, torch.Tensor) and t.dim() > 0 for t in tree_leaves((args, kwargs)))
        return func(*args, **(kwargs or {}))


def test_a_muon_step_launches_as_many_kernels_for_a_deep_model_as_for_a_shallow_one():
    def kernels_per_step(n_layer: int) -> int:
        model = perturb(tiny(n_layer=n_layer, **ALL))
        opt = build_optimizer(model, muon_config(muon_weight_decay=0.1), "cpu")
        _, loss = model.train()(torch.zeros(2, 8, dtype=torch.long), torch.ones(2, 8, dtype=torch.long))
        loss.backward()
        opt.step()  # the first step creates the state
        with KernelCount() as counter:
            opt.step()
        return counter.count

    shallow, deep = kernels_per_step(2), kernels_per_step(6)
    assert shallow == deep > 0, (shallow, deep)


def test_muon_trains_a_model_faster_than_its_start_and_restores_exactly():
    model = tiny(**ALL)
    opt = build_optimizer(model, muon_config(learning_rate=3e-3, muon_learning_rate=0.05), "cpu")
    idx = torch.randint(0, 65, (4, 16), generator=torch.Generator().manual_seed(2))

    def step(m: GPT, o: torch.optim.Optimizer) -> float:
        _, loss = m.train()(idx[:, :-1], idx[:, 1:])
        o.zero_grad()
        loss.backward()
        o.step()
        return loss.item()

    first = step(model, opt)
    for _ in range(60):
        last = step(model, opt)
    assert first > 4.0 and last < 0.5  # memorises one batch
    twin = tiny(**ALL)
    twin.load_state_dict(model.state_dict())
    twin_opt = build_optimizer(twin, muon_config(learning_rate=3e-3, muon_learning_rate=0.05), "cpu")
    twin_opt.load_state_dict(copy.deepcopy(opt.state_dict()))  # as from a file: no shared buffers
    for _ in range(3):
        step(model, opt), step(twin, twin_opt)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), twin.parameters()))


# ----------------------------------------------------------------------------- the command line


def test_cli_resumes_all_options_with_muon_bit_for_bit_and_samples_them(data_dir, tmp_path):
    """The command resumes a Muon run with every option on (rebuilt from the checkpoint) and ends
    bit for bit where the uninterrupted run ends; the runs before the resume train in this process."""
    run = (*TINY, *ALL_CLI, "optimizer=muon", "max_iters=12", "eval_interval=6", "log_interval=1", f"dataset.data_dir={data_dir}")
    train_here(tmp_path / "straight", *run)
    train_here(tmp_path / "split", *run, "max_iters=6")
    run_cli("nanogpt.train", "init_from=resume", f"run_dir={tmp_path / 'split'}", "max_iters=12", f"dataset.data_dir={data_dir}")
    assert load_checkpoint(tmp_path / "split" / "ckpt_last.pt")["iter_num"] == 12
    assert state_digest(tmp_path / "split" / "ckpt_last.pt") == state_digest(tmp_path / "straight" / "ckpt_last.pt")
    # The command samples a rotary, untied model through the KV cache as the naive path does.
    out = run_cli(
        "nanogpt.sample", f"run_dir={tmp_path / 'straight'}", "max_new_tokens=40", "num_samples=2", "temperature=0", "system.device=cpu"
    ).stdout
    naive = nanogpt.generate(tmp_path / "straight", device="cpu", max_new_tokens=40, num_samples=2, temperature=0, kv_cache=False)
    assert out == naive[0] + "\n" + "-" * 40 + "\n" + naive[1] + "\n"
    assert len(out.split("-" * 40 + "\n")[0]) == 1 + 40 + 1  # the prompt "\n", 40 characters, a newline


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.position=alibi", "model.position='alibi' is invalid: must be learned or rope"),
        ("model.norm=batchnorm", "model.norm='batchnorm' is invalid: must be layernorm or rmsnorm"),
        ("model.activation=swiglu", "model.activation='swiglu' is invalid: must be gelu or relu2"),
        ("optimizer.name=sgd", "optimizer.name='sgd' is invalid: must be adamw or muon"),
    ],
)
def test_a_bad_choice_is_refused_while_composing_in_one_line(override, message):
    """A choice key cannot even be composed with another value; the command line's refusal (the
    same translation nanogpt-train applies, in-process) is one line with the choices."""
    from hydra.errors import ConfigCompositionException

    from nanogpt.cli.commands import command
    from nanogpt.cli.refusals import explain
    from tests.test_config import compose_train

    with pytest.raises(ConfigCompositionException) as err:
        compose_train(*TINY, override)
    assert explain(err.value, command("config")) == message


@pytest.mark.parametrize(
    "override, message",
    [
        ("optimizer.muon_momentum=1.0", "optimizer.muon_momentum=1.0 is invalid: must be in [0, 1)"),
        ("optimizer.muon_learning_rate=0", "optimizer.muon_learning_rate=0.0 is invalid: must be > 0"),
    ],
)
def test_bad_options_get_one_line(override, message):
    """In-process: that a ConfigError reaches the command line as this one line, exit status 2 and
    no run folder is tested once for all rules (tests/test_train_cli.py)."""
    from tests.test_config import compose_train

    extra = ["optimizer=muon"] if override.startswith("optimizer.muon") else []
    with pytest.raises(ConfigError) as err:
        validate_train(compose_train(*TINY, *extra, override))
    assert str(err.value) == message


def test_rope_needs_an_even_head_size():
    from tests.test_config import compose_train

    with pytest.raises(ConfigError, match=r"rope needs an even head size, not n_embd/n_head=9$"):
        validate_train(compose_train("model.n_head=4", "model.n_embd=36", "model.position=rope"))


def test_resume_takes_optimizer_settings_from_the_config_not_the_checkpoint(data_dir, tmp_path):
    run = (*TINY, "optimizer=muon", "max_iters=4", "eval_interval=4", f"dataset.data_dir={data_dir}", f"hydra.run.dir={tmp_path}")
    run_cli("nanogpt.train", *run)
    run_cli(
        "nanogpt.train",
        "init_from=resume",
        f"run_dir={tmp_path}",
        "max_iters=6",
        "optimizer.muon_learning_rate=0.04",
        "optimizer.weight_decay=0.3",
        f"dataset.data_dir={data_dir}",
    )
    groups = load_checkpoint(tmp_path / "ckpt_last.pt")["optimizer"]["param_groups"]
    # Muon, the position table, the tied embedding/head, the gains.
    assert [(g["use_muon"], g["weight_decay"]) for g in groups] == [(True, 0.0), (False, 0.3), (False, 0.3), (False, 0.0)]
    assert groups[0]["lr_ratio"] == pytest.approx(0.04 / 6e-3)


# ----------------------------------------------------------------------------- time budget


def test_time_budget_ends_the_run_on_the_clock_with_the_decay_finished(data_dir, tmp_path):
    proc = run_cli(
        "nanogpt.train",
        *TINY,
        "max_iters=1000000",
        "time_budget_s=4",
        "eval_interval=1000000",
        "log_interval=1",
        "optimizer.warmup_iters=2",
        f"dataset.data_dir={data_dir}",
        f"hydra.run.dir={tmp_path}",
    )
    assert "time budget of 0m04s spent at iter" in proc.stdout
    records = read_metrics(tmp_path / "metrics.jsonl")
    steps = [r for r in records if r["event"] == "train"]
    evals = [r for r in records if r["event"] == "eval"]
    assert len(steps) > 10 and evals[-1]["iter"] == steps[-1]["iter"]  # a final evaluation at the stop
    # It stops at the first step boundary after the budget, whatever the machine's speed: the last
    # step but one was still inside the budget, and the final evaluation comes after it.
    assert steps[-2]["time"] < 4.0 <= evals[-1]["time"]
    lrs = [r["lr"] for r in steps[2:]]
    assert lrs == sorted(lrs, reverse=True) and lrs[-1] < 0.15 * lrs[0]  # decayed by the clock to near min_lr
    assert load_checkpoint(tmp_path / "ckpt_last.pt")["iter_num"] == steps[-1]["iter"]
    assert records[-1]["status"] == "finished"


def test_the_time_budget_leaves_out_warm_up(data_dir, tmp_path, monkeypatch):
    """Compiling the first step and the evaluation at start can take minutes on a GPU; that time
    must neither spend the budget nor push the clock-driven decay ahead. A fake clock makes the
    evaluation at start take 40 s, the first step 60 s and every later step 0.25 s."""
    from tests.test_config import compose_train

    now = [1000.0]
    clock = SimpleNamespace(perf_counter=lambda: now[0], time=time.time)
    monkeypatch.setattr(loop, "time", clock)  # the loop's log lines
    monkeypatch.setattr(nanogpt.checkpoint.state, "time", clock)  # the train state's clock, which the budget reads

    def taking(method, first: float, later: float):
        calls = []

        def timed(*args):
            result = method(*args)
            now[0] += later if calls else first
            calls.append(None)
            return result

        return timed

    monkeypatch.setattr(loop, "evaluate", taking(loop.evaluate, 40.0, 0.0))
    monkeypatch.setattr(loop, "train_step", taking(loop.train_step, 60.0, 0.25))
    cfg = compose_train(
        *TINY,
        "max_iters=1000",
        "time_budget_s=2",
        "eval_interval=1000",
        "log_interval=1",
        "optimizer.warmup_iters=0",
        f"dataset.data_dir={data_dir}",
    )
    nanogpt.training.train(cfg, tmp_path)

    records = read_metrics(tmp_path / "metrics.jsonl")
    steps = [r for r in records if r["event"] == "train"]
    # The clock starts when the first step is done: 8 more steps of 0.25 s spend the 2 s.
    assert [r["iter"] for r in steps] == list(range(1, 10))
    assert [r["time"] for r in steps] == [0.25 * i for i in range(9)]
    assert steps[0]["lr"] == cfg.optimizer.learning_rate  # the decay starts from the top
    assert load_checkpoint(tmp_path / "ckpt_last.pt")["iter_num"] == 9


# ----------------------------------------------------------------------------- presets


def test_modern_options_are_off_in_every_model_and_on_in_the_fast_presets():
    from tests.test_config import compose_train, options

    for name in options("model"):
        model = compose_train(f"model={name}").model
        assert {k: model[k] for k in ALL} == dict(
            position="learned", norm="layernorm", qk_norm=False, activation="gelu", tie_embeddings=True, zero_init_proj=False
        )
    for preset in ("shakespeare_char_cpu_fast", "shakespeare_char_fast"):
        cfg = compose_train(f"experiment={preset}")
        assert cfg.optimizer.name == "muon" and cfg.time_budget_s is not None
        assert (cfg.model.position, cfg.model.qk_norm, cfg.model.activation, cfg.model.tie_embeddings) == ("rope", True, "relu2", False)


def test_fast_cpu_preset_trains_to_its_budget_and_samples(data_dir, tmp_path):
    proc = run_cli(
        "nanogpt.train",
        "experiment=shakespeare_char_cpu_fast",
        "time_budget_s=3",
        "eval_iters=2",
        f"dataset.data_dir={data_dir}",
        f"hydra.run.dir={tmp_path}",
    )
    assert "time budget of 0m03s spent" in proc.stdout
    evals = [r for r in read_metrics(tmp_path / "metrics.jsonl") if r["event"] == "eval"]
    assert len(evals) == 1 and evals[0]["iter"] > 0 and evals[0]["val_loss"] < math.log(65)  # learned something; no evaluation at the start
    out = run_cli("nanogpt.sample", f"run_dir={tmp_path}", "max_new_tokens=10", "num_samples=1").stdout
    assert len(out) == 1 + 10 + 1  # the prompt "\n", 10 characters, a newline
