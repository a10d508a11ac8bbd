"""The rules that a config's types cannot express, each refused as one line naming the key:
`<key>=<value> is invalid: <rule>` (a ConfigError, exit code 2).

Choices are also checked here, although a composed config's Choice keys can hold nothing else:
the same functions check what Python callers pass (nanogpt.generate(window=...), a hand-made
SystemConfig)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from nanogpt.architecture import Activation, Gelu, Norm, Position
from nanogpt.config.schemas import (
    PRETRAINED_REPOS,
    DatasetConfig,
    DType,
    EvalConfig,
    ExportConfig,
    OptimizerName,
    SampleConfig,
    Strategy,
    SystemConfig,
    TrainConfig,
    WandbMode,
    Which,
    Window,
)
from nanogpt.errors import ConfigError
from nanogpt.settings import Choice

DEVICE_KINDS = ("auto", "cpu", "cuda", "mps")
# Seeds that every generator takes (torch's take -2**63 to 2**64-1; a rank is added to the seed).
SEED_RANGE = (-(2**63), 2**63 - 1)
COMPILE_CHOICES = ("auto", "true", "false")


def _require(ok: bool, key: str, value: Any, rule: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r} is invalid: {rule}")


def choices_text(choice: type[Choice], optional: bool = False) -> str:
    """ "learned or rope", "one of auto, float32, bfloat16, float16" (with "or null" where a key may be null)."""
    values = choice.values() + (["null"] if optional else [])
    if len(values) == 2:
        return " or ".join(values)
    return "one of " + ", ".join(values)


def _require_choice(value: Any, choice: type[Choice], key: str, optional: bool = False) -> None:
    valid = (optional and value is None) or (isinstance(value, str) and value in choice.values())
    _require(valid, key, value, f"must be {choices_text(choice, optional)}")


def validate_seed(seed: int) -> None:
    _require(SEED_RANGE[0] <= seed <= SEED_RANGE[1], "seed", seed, "must be an integer from -2**63 to 2**63-1")


def validate_system(system: DictConfig | SystemConfig) -> None:
    device = str(system.device)
    kind, colon, index = device.partition(":")
    _require(
        # ASCII digits: str.isdigit() also takes "²", which int() refuses later with a traceback.
        kind in DEVICE_KINDS and (not colon or (kind == "cuda" and index.isascii() and index.isdigit())),
        "system.device",
        device,
        "must be one of auto, cpu, cuda, cuda:N, mps",
    )
    _require_choice(system.dtype, DType, "system.dtype")
    _require(str(system.compile).lower() in COMPILE_CHOICES, "system.compile", system.compile, "must be auto, true or false")
    _require_choice(system.strategy, Strategy, "system.strategy")


def validate_dataset(d: DictConfig | DatasetConfig) -> None:
    _require(d.batch_size > 0, "dataset.batch_size", d.batch_size, "must be a positive integer")
    _require(d.block_size > 0, "dataset.block_size", d.block_size, "must be a positive integer")
    _require(0.0 < d.val_fraction < 1.0, "dataset.val_fraction", d.val_fraction, "must be in (0, 1)")
    if d.tokenizer is not None:
        _require(str(d.tokenizer).strip() != "", "dataset.tokenizer", d.tokenizer, "must be char, gpt2, bpe or a tokenizer.json file or folder")
    if d.vocab_size is not None:
        _require(d.vocab_size > 0, "dataset.vocab_size", d.vocab_size, "must be a positive integer or null")
    if d.prepare_wait_s is not None:
        _require(d.prepare_wait_s >= 0, "dataset.prepare_wait_s", d.prepare_wait_s, "must be >= 0 or null")


def validate_train(cfg: DictConfig | TrainConfig) -> None:
    """Check the values that types alone cannot; raise ConfigError naming the first bad key."""
    m, d, o = cfg.model, cfg.dataset, cfg.optimizer
    for key, value in (("model.n_layer", m.n_layer), ("model.n_head", m.n_head), ("model.n_embd", m.n_embd)):
        _require(value > 0, key, value, "must be a positive integer")
    _require(m.n_embd % m.n_head == 0, "model.n_embd", m.n_embd, f"must be divisible by model.n_head={m.n_head}")
    _require(0.0 <= m.dropout < 1.0, "model.dropout", m.dropout, "must be in [0, 1)")
    _require_choice(m.gelu_approximate, Gelu, "model.gelu_approximate")
    _require_choice(m.position, Position, "model.position")
    if m.position == Position.rope:
        _require(
            (m.n_embd // m.n_head) % 2 == 0, "model.position", m.position, f"rope needs an even head size, not n_embd/n_head={m.n_embd // m.n_head}"
        )
        _require(m.rope_base > 1, "model.rope_base", m.rope_base, "must be > 1")
    _require_choice(m.norm, Norm, "model.norm")
    _require_choice(m.activation, Activation, "model.activation")
    if m.vocab_size is not None:
        _require(m.vocab_size > 0, "model.vocab_size", m.vocab_size, "must be a positive integer or null")
    validate_dataset(d)
    _require_choice(o.name, OptimizerName, "optimizer.name")
    _require(o.learning_rate > 0, "optimizer.learning_rate", o.learning_rate, "must be > 0")
    # min_lr is where the decay ends; a constant rate (decay_lr=false, as in fine-tuning) never uses it.
    _require(0 <= o.min_lr <= (o.learning_rate if o.decay_lr else math.inf), "optimizer.min_lr", o.min_lr, "must be in [0, learning_rate]")
    _require(o.weight_decay >= 0, "optimizer.weight_decay", o.weight_decay, "must be >= 0")
    _require(0 <= o.beta1 < 1, "optimizer.beta1", o.beta1, "must be in [0, 1)")
    _require(0 <= o.beta2 < 1, "optimizer.beta2", o.beta2, "must be in [0, 1)")
    if o.name == OptimizerName.muon:
        _require(o.muon_learning_rate > 0, "optimizer.muon_learning_rate", o.muon_learning_rate, "must be > 0")
        _require(0 <= o.muon_momentum < 1, "optimizer.muon_momentum", o.muon_momentum, "must be in [0, 1)")
        _require(o.muon_weight_decay >= 0, "optimizer.muon_weight_decay", o.muon_weight_decay, "must be >= 0")
        if o.embedding_learning_rate is not None:
            _require(o.embedding_learning_rate > 0, "optimizer.embedding_learning_rate", o.embedding_learning_rate, "must be > 0 or null")
    _require(o.grad_clip >= 0, "optimizer.grad_clip", o.grad_clip, "must be >= 0 (0 disables clipping)")
    _require(o.warmup_iters >= 0, "optimizer.warmup_iters", o.warmup_iters, "must be >= 0")
    if o.lr_decay_iters is not None:
        _require(o.lr_decay_iters > 0, "optimizer.lr_decay_iters", o.lr_decay_iters, "must be > 0 or null")
    _require(cfg.max_iters >= 0, "max_iters", cfg.max_iters, "must be >= 0")
    if cfg.time_budget_s is not None:
        _require(cfg.time_budget_s > 0, "time_budget_s", cfg.time_budget_s, "must be > 0 seconds or null")
    _require(cfg.keep_last_k >= 0, "keep_last_k", cfg.keep_last_k, "must be >= 0")
    for key in ("eval_interval", "eval_iters", "log_interval", "gradient_accumulation_steps"):
        _require(cfg[key] > 0, key, cfg[key], "must be a positive integer")
    validate_seed(cfg.seed)
    _require(
        cfg.init_from in ("scratch", "resume", *PRETRAINED_REPOS) or (cfg.init_from.startswith("hf:") and len(cfg.init_from) > 3),
        "init_from",
        cfg.init_from,
        f"must be scratch, resume, {', '.join(PRETRAINED_REPOS)} or hf:<a local Hugging Face GPT-2 folder>",
    )
    validate_system(cfg.system)
    _require_choice(cfg.wandb.mode, WandbMode, "wandb.mode", optional=True)
    _require(cfg.wandb.sample_tokens >= 0, "wandb.sample_tokens", cfg.wandb.sample_tokens, "must be >= 0")
    validate_eval_tasks(cfg)
    _require(cfg.tensorboard.sample_tokens >= 0, "tensorboard.sample_tokens", cfg.tensorboard.sample_tokens, "must be >= 0")


def validate_parallelism(cfg: DictConfig | TrainConfig, world_size: int, dtype: str) -> None:
    """What system.strategy=fsdp cannot do on several ranks, once the ranks and the run's dtype
    (dtype=auto resolved) are known."""
    if cfg.system.strategy != Strategy.fsdp or world_size < 2:
        return
    if dtype == DType.float16:
        raise ConfigError(
            "system.dtype='float16' is invalid with system.strategy=fsdp: its GradScaler would skip steps on some ranks only; "
            "use bfloat16 (or system.strategy=ddp)"
        )
    if cfg.eval_tasks and not cfg.eval_only:
        raise ConfigError(
            "eval_tasks is invalid with system.strategy=fsdp on several ranks: benchmarks run on rank 0 alone, "
            "which holds a shard of the model; train with system.strategy=ddp, or without eval_tasks"
        )


def validate_generation(
    *,
    num_samples: int,
    max_new_tokens: int,
    temperature: float,
    top_k: int | None,
    top_p: float,
    stop: Sequence[str],
    window: str,
    seed: int = 0,
) -> None:
    """The generation options, shared by `nanogpt-sample` and nanogpt.generate()."""
    _require(num_samples > 0, "num_samples", num_samples, "must be a positive integer")
    _require(max_new_tokens > 0, "max_new_tokens", max_new_tokens, "must be >= 1")
    _require(temperature >= 0, "temperature", temperature, "must be >= 0 (0 = greedy)")
    if top_k is not None:
        _require(top_k > 0, "top_k", top_k, "must be a positive integer or null")
    _require(0 < top_p <= 1, "top_p", top_p, "must be in (0, 1] (1 keeps every token)")
    _require(all(isinstance(s, str) and s for s in stop), "stop", list(stop), "must be a list of non-empty strings")
    _require_choice(window, Window, "window")
    validate_seed(seed)


def validate_checkpoint_choice(which: str) -> None:
    _require_choice(which, Which, "checkpoint")


def validate_sample(cfg: DictConfig | SampleConfig) -> None:
    """The sample command's own keys; the generation options go through validate_generation."""
    validate_checkpoint_choice(cfg.checkpoint)
    validate_system(cfg.system)
    validate_seed(cfg.seed)


def validate_export(cfg: DictConfig | ExportConfig) -> None:
    validate_checkpoint_choice(cfg.checkpoint)
    if cfg.run_dir is None:
        raise ConfigError("run_dir is required: nanogpt-export run_dir=<a run folder> out=<a new folder>")
    if cfg.out is None:
        raise ConfigError("out is required: nanogpt-export run_dir=<a run folder> out=<a new folder>")


def validate_benchmark_options(limit: float | None, include_path: str | None, prefix: str = "") -> None:
    """nanogpt-eval's limit and include_path, which training's eval_tasks_* keys mirror."""
    if limit is not None:
        _require(limit > 0, f"{prefix}limit", limit, "must be a positive count of documents, a fraction below 1, or null")
    if include_path is not None:
        _require(Path(include_path).expanduser().is_dir(), f"{prefix}include_path", include_path, "must be a folder of task YAMLs")


def validate_eval_tasks(cfg: DictConfig | TrainConfig) -> None:
    """Training's benchmarks: a schedule is needed once tasks are given."""
    if not cfg.eval_tasks:
        return
    _require(
        cfg.eval_tasks_interval is not None and cfg.eval_tasks_interval >= 1,
        "eval_tasks_interval",
        cfg.eval_tasks_interval,
        "must be >= 1 when eval_tasks are given (the iterations between benchmark evaluations)",
    )
    validate_benchmark_options(cfg.eval_tasks_limit, cfg.eval_tasks_include_path, prefix="eval_tasks_")


def validate_eval(cfg: DictConfig | EvalConfig) -> None:
    validate_checkpoint_choice(cfg.checkpoint)
    validate_system(cfg.system)
    if cfg.run_dir is None:
        raise ConfigError("run_dir is required: nanogpt-eval run_dir=<a run folder> tasks=<lm_eval task names>")
    if not cfg.tasks:
        raise ConfigError("tasks is required: nanogpt-eval run_dir=<a run folder> tasks=hellaswag,arc_easy")
    _require(cfg.batch_size > 0, "batch_size", cfg.batch_size, "must be a positive integer")
    validate_benchmark_options(cfg.limit, cfg.include_path)
