"""Proof of equal training: our trainer against nanoGPT's own model.py, step by step.

nanoGPT's `GPT`, `GPTConfig`, `configure_optimizers` and `get_lr` are loaded at test time from its
files (../shared/anchors/nanoGPT, or the folder NANOGPT_ANCHOR names; nothing of it is copied here),
and its hyperparameters are read from its train.py and config/train_shakespeare_char.py with the
README CPU run's command-line overrides. Our side is our own training run's parts, built from our default config
(the README CPU run) in float32, so that what is compared is our config, init, batches' use,
optimizer groups, schedule, clipping and update, not a re-implementation of them.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from nanogpt.config import validate_train
from nanogpt.distributed import Dist
from nanogpt.system import resolve_system
from nanogpt.training.loop import lr_at, train_step
from nanogpt.training.setup import TrainingRun, build

ROOT = Path(__file__).resolve().parents[1]
ANCHOR = Path(os.environ.get("NANOGPT_ANCHOR") or ROOT.parent / "shared" / "anchors" / "nanoGPT")

pytestmark = pytest.mark.skipif(
    not (ANCHOR / "model.py").is_file(),
    reason=f"no nanoGPT at {ANCHOR} (set NANOGPT_ANCHOR to a copy of karpathy/nanoGPT)",
)

# The README's CPU run: `python train.py config/train_shakespeare_char.py --device=cpu --compile=False
# --eval_iters=20 --log_interval=1 --block_size=64 --batch_size=12 --n_layer=4 --n_head=4 --n_embd=128
# --max_iters=2000 --lr_decay_iters=2000 --dropout=0.0`
README_CPU_OVERRIDES = dict(
    device="cpu",
    compile=False,
    eval_iters=20,
    log_interval=1,
    block_size=64,
    batch_size=12,
    n_layer=4,
    n_head=4,
    n_embd=128,
    max_iters=2000,
    lr_decay_iters=2000,
    dropout=0.0,
)
STEPS = 20
# Both sides get the same shortened schedule, so that 20 steps cross all three of its phases
# (linear warmup, cosine decay, the min_lr floor) instead of 20 steps of warmup.
WARMUP, DECAY = 5, 15
TOLERANCE = 1e-5


def literal_assignments(path: Path, stop_at: str | None = None) -> dict[str, Any]:
    """The top-level `name = <literal>` assignments of a Python file, in order, up to the
    assignment of `stop_at` (nanoGPT's train.py and configs keep their settings so)."""
    values: dict[str, Any] = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if name == stop_at:
                break
            try:
                values[name] = ast.literal_eval(node.value)
            except ValueError:
                pass  # a computed default (dtype): not a literal
    return values


def nanogpt_settings() -> dict[str, Any]:
    """The settings nanoGPT's README CPU run trains with, as its configurator would leave them."""
    settings = literal_assignments(ANCHOR / "train.py", stop_at="config_keys")
    settings.update(literal_assignments(ANCHOR / "config" / "train_shakespeare_char.py"))
    settings.update(README_CPU_OVERRIDES)
    return settings


def load_nanogpt_model() -> ModuleType:
    spec = importlib.util.spec_from_file_location("nanogpt_anchor_model", ANCHOR / "model.py")
    module = importlib.util.module_from_spec(spec)
    dont_write = sys.dont_write_bytecode
    sys.dont_write_bytecode = True  # the anchor's folder is read-only
    try:
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = dont_write
    return module


def nanogpt_get_lr(settings: dict[str, Any]):
    """nanoGPT's get_lr, compiled from its train.py, over `settings`."""
    tree = ast.parse((ANCHOR / "train.py").read_text())
    function = next(node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "get_lr")
    namespace: dict[str, Any] = {"math": math, **settings}
    exec(compile(ast.Module(body=[function], type_ignores=[]), str(ANCHOR / "train.py"), "exec"), namespace)
    return namespace["get_lr"]


def our_config(data_dir: Path, *overrides: str) -> DictConfig:
    """Our default config on the CPU, in float32 as nanoGPT trains there."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            config_name="config",
            overrides=[f"dataset.data_dir={data_dir}", "system.device=cpu", "system.dtype=float32", "system.compile=false", *overrides],
        )
    validate_train(cfg)
    if cfg.optimizer.lr_decay_iters is None:
        cfg.optimizer.lr_decay_iters = cfg.max_iters  # as nanogpt.training does before training
    return cfg


def our_trainer(cfg: DictConfig, run_dir: Path) -> TrainingRun:
    system = resolve_system(cfg.system.device, cfg.system.dtype, cfg.system.compile)
    return build(cfg, run_dir, system, Dist(), None, [], None)


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


def test_our_default_config_is_nanogpts_readme_cpu_run(data_dir: Path):
    """Every hyperparameter of the README CPU run, as nanoGPT's configurator sets it, is our default."""
    theirs = nanogpt_settings()
    cfg = our_config(data_dir)
    m, d, o = cfg.model, cfg.dataset, cfg.optimizer
    ours = {
        "n_layer": m.n_layer,
        "n_head": m.n_head,
        "n_embd": m.n_embd,
        "dropout": m.dropout,
        "bias": m.bias,
        "block_size": d.block_size,
        "batch_size": d.batch_size,
        "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
        "learning_rate": o.learning_rate,
        "min_lr": o.min_lr,
        "weight_decay": o.weight_decay,
        "beta1": o.beta1,
        "beta2": o.beta2,
        "grad_clip": o.grad_clip,
        "decay_lr": o.decay_lr,
        "warmup_iters": o.warmup_iters,
        "lr_decay_iters": o.lr_decay_iters,
        "max_iters": cfg.max_iters,
        "eval_interval": cfg.eval_interval,
        "eval_iters": cfg.eval_iters,
    }
    assert o.name == "adamw"
    assert ours == {key: theirs[key] for key in ours}


def test_same_seed_same_initial_weights(data_dir: Path, tmp_path: Path):
    """Our trainer's model, seeded with 1337, starts from the very weights nanoGPT's train.py draws
    (torch.manual_seed(1337), then GPT(...)): same init scheme, same order of draws."""
    nano = load_nanogpt_model()
    settings = nanogpt_settings()
    cfg = our_config(data_dir, "seed=1337")
    trainer = our_trainer(cfg, tmp_path / "run")
    torch.manual_seed(1337)
    theirs = nano.GPT(nano.GPTConfig(**{k: settings[k] for k in ("n_layer", "n_head", "n_embd", "block_size", "bias", "dropout")}, vocab_size=65))
    ours = trainer.model.state_dict()
    differing = [name for name, tensor in theirs.state_dict().items() if not torch.equal(ours[name], tensor)]
    assert not differing, f"initial weights differ from nanoGPT's in {differing}"


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "unfused"])
def test_twenty_steps_equal_nanogpt(data_dir: Path, tmp_path: Path, fused: bool):
    """20 steps of our trainer and of nanoGPT's model and optimizer on the same batches: losses,
    gradients, weights and logits agree to 1e-5. Our AdamW uses torch's fused CPU kernel, which
    rounds differently from the multi-tensor one that nanoGPT gets on a CPU (it fuses on CUDA
    only), by about one float32 ulp per step; with the same kernel (`unfused`) the two trainings
    are bit for bit the same."""
    nano = load_nanogpt_model()
    settings = {**nanogpt_settings(), "warmup_iters": WARMUP, "lr_decay_iters": DECAY, "max_iters": STEPS}
    cfg = our_config(data_dir, f"optimizer.warmup_iters={WARMUP}", f"optimizer.lr_decay_iters={DECAY}", f"max_iters={STEPS}")
    trainer = our_trainer(cfg, tmp_path)
    ours = trainer.model
    assert all(group["fused"] for group in trainer.optimizer.param_groups)  # our default on a CPU
    if not fused:
        for group in trainer.optimizer.param_groups:
            group["fused"] = False  # before the first step: the optimizer's state is not made yet

    # nanoGPT's model with another seed's weights, loaded into ours: the comparison of training
    # does not lean on the inits being equal (test_same_seed_same_initial_weights proves that).
    torch.manual_seed(7)
    model_args = {k: settings[k] for k in ("n_layer", "n_head", "n_embd", "block_size", "bias", "dropout")}
    theirs = nano.GPT(nano.GPTConfig(**model_args, vocab_size=65))
    assert list(theirs.state_dict()) == list(ours.state_dict())  # the same names, tied head included
    ours.load_state_dict(theirs.state_dict())
    initial = {k: v.clone() for k, v in ours.state_dict().items()}
    assert ours.lm_head.weight is ours.transformer.wte.weight and theirs.lm_head.weight is theirs.transformer.wte.weight
    their_optimizer = theirs.configure_optimizers(settings["weight_decay"], settings["learning_rate"], (settings["beta1"], settings["beta2"]), "cpu")
    get_lr = nanogpt_get_lr(settings)

    # Our trainer draws its batches from the training split; nanoGPT is fed the same ones.
    batches: list[tuple[torch.Tensor, torch.Tensor]] = []
    train_split = trainer.splits["train"]
    draw = train_split.windows

    def recorded(starts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batches.append(draw(starts))
        return batches[-1]

    train_split.windows = recorded  # type: ignore[method-assign]
    # The gradients our optimizer steps with (after clipping), as it sees them.
    our_grads: list[dict[str, torch.Tensor]] = []
    names = {id(p): n for n, p in ours.named_parameters()}
    trainer.optimizer.register_step_pre_hook(
        lambda opt, args, kwargs: our_grads.append({names[id(p)]: p.grad.clone() for g in opt.param_groups for p in g["params"]})
    )

    probe_x, probe_y = (t.contiguous() for t in draw(torch.arange(0, 12 * 997, 997)))
    differences = {"logits": 0.0, "loss": 0.0, "grad": 0.0, "weights": 0.0, "lr": 0.0}

    def compare_forward() -> None:
        with torch.no_grad():
            our_logits, our_loss = ours(probe_x, probe_y)
            their_logits, their_loss = theirs(probe_x, probe_y)
        differences["logits"] = max(differences["logits"], (our_logits - their_logits).abs().max().item())
        differences["loss"] = max(differences["loss"], abs(our_loss.item() - their_loss.item()))

    compare_forward()
    lrs = []
    for it in range(STEPS):
        lr = lr_at(trainer.state.iter_num, cfg.optimizer, cfg.max_iters)
        our_loss = train_step(trainer, lr).item()
        lrs.append(lr)
        differences["lr"] = max(differences["lr"], abs(lr - get_lr(it)))

        # nanoGPT's step, as its training loop takes it (float32 on the CPU, no GradScaler).
        for group in their_optimizer.param_groups:
            group["lr"] = get_lr(it)
        x, y = (t.contiguous() for t in batches[it])  # its get_batch stacks rows; ours are views of one window
        _, loss = theirs(x, y)
        loss = loss / settings["gradient_accumulation_steps"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(theirs.parameters(), settings["grad_clip"])
        their_grads = {n: p.grad for n, p in theirs.named_parameters()}
        differences["grad"] = max(differences["grad"], max_difference(our_grads[it], their_grads))
        differences["loss"] = max(differences["loss"], abs(our_loss - loss.item()))
        their_optimizer.step()
        their_optimizer.zero_grad(set_to_none=True)
        differences["weights"] = max(differences["weights"], max_difference(ours.state_dict(), theirs.state_dict()))
    compare_forward()

    print(f"\nmax |ours - nanoGPT| over {STEPS} steps: " + ", ".join(f"{k} {v:.2e}" for k, v in differences.items()))
    assert len(batches) == STEPS and len(our_grads) == STEPS
    # The schedule crossed warmup, decay and the floor; the weights really moved.
    assert lrs[0] < lrs[WARMUP] == max(lrs) and lrs[-1] == settings["min_lr"] < lrs[DECAY - 1]
    assert max_difference(ours.state_dict(), initial) > 1e-3
    assert all(value <= (TOLERANCE if fused else 0.0) for value in differences.values()), differences


def load_benchmark() -> ModuleType:
    spec = importlib.util.spec_from_file_location("vs_nanogpt_benchmark", ROOT / "benchmarks" / "vs_nanogpt.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_one_evaluator_scores_either_checkpoint_as_its_own_model_would(tmp_path: Path):
    """benchmarks/vs_nanogpt.py's evaluator: a checkpoint in nanoGPT's layout (model_args of its
    GPTConfig, keys possibly prefixed by torch.compile) and one in ours both load into our GPT and
    score exactly what the model that wrote them computes, over every non-overlapping window."""
    from dataclasses import asdict

    from nanogpt.model import GPT, GPTConfig

    nano, bench = load_nanogpt_model(), load_benchmark()
    block = 16
    val = np.random.default_rng(0).integers(0, 65, 10 * block + 5, dtype=np.uint16)  # 10 windows, 4 tokens left over
    windows = [torch.from_numpy(val[i * block : (i + 1) * block + 1].astype(np.int64)) for i in range(10)]
    torch.manual_seed(3)
    nano_args = dict(n_layer=2, n_head=2, n_embd=32, block_size=block, bias=True, vocab_size=65, dropout=0.0)
    theirs = nano.GPT(nano.GPTConfig(**nano_args))
    ours = GPT(GPTConfig(**{**nano_args, "bias": False}))
    checkpoints = {
        "nanogpt": ({"model": {f"_orig_mod.{k}": v for k, v in theirs.state_dict().items()}, "model_args": nano_args, "iter_num": 7}, theirs),
        "ours": ({"model": ours.state_dict(), "model_args": asdict(ours.config), "iter_num": 9}, ours),
    }
    for name, (state, model) in checkpoints.items():
        torch.save(state, tmp_path / f"{name}.pt")
        result = bench.full_val_loss(tmp_path / f"{name}.pt", val, batch_windows=3)  # the last batch holds one window
        model.eval()
        with torch.no_grad():
            expected = sum(model(w[None, :-1], w[None, 1:])[1].item() for w in windows) / len(windows)
        assert result["windows"] == 10 and result["tokens"] == 10 * block and result["iter_num"] == state["iter_num"]
        assert abs(result["val_loss"] - expected) < 1e-6, (name, result, expected)


@pytest.mark.slow
def test_benchmark_smoke(tmp_path: Path):
    """benchmarks/vs_nanogpt.py end to end at 5 iterations and one seed: nanoGPT's own train.py
    (with the seed key the benchmark adds) and ours, both logs parsed, both checkpoints scored."""
    out = tmp_path / "vs.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "vs_nanogpt.py"),
            "--seeds",
            "5",
            "--max-iters",
            "5",
            "--tolerance",
            "0.05",
            "--anchor",
            str(ANCHOR),
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        # One thread per process: on a busy 2-core machine, torch's thread pools of the runs and of
        # other processes spin against each other and a one-minute smoke run takes several.
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["cpu"]["model_name"] and isinstance(result["cpu"]["avx512_bf16"], bool)
    (pair,) = result["runs"]
    assert {"--seed=5", "--always_save_checkpoint=True"} <= set(pair["nanogpt"]["command"]) and "seed=5" in pair["ours"]["command"]
    for tool in ("nanogpt", "ours"):
        run = pair[tool]
        assert run["ms_per_iter"]["iterations"] > 0 and math.isfinite(run["ms_per_iter"]["mean"]) and run["tokens_per_sec"] > 0
        # The whole val split of tiny Shakespeare (111,540 tokens) in 64-token windows, after 5 steps.
        assert run["full_val"]["windows"] == 1742 and run["full_val"]["iter_num"] == 5
        assert 3.5 < run["full_val"]["val_loss"] < math.log(65) and abs(run["own_val_loss"] - run["full_val"]["val_loss"]) < 0.05
    assert pair["ours"]["dtype"] in ("float32", "bfloat16")
    assert result["summary"]["agree"] and "full-val loss" in proc.stdout
