"""Config schemas, their registration in Hydra's ConfigStore, and value checks.

Every YAML file under conf/ extends one of these dataclasses, so Hydra rejects an unknown key
(`optimizer.learnig_rate=...`) or a wrong type (`model.n_layer=abc`) while composing, before
anything runs. Rules that types cannot express (n_embd divisible by n_head, positive sizes, ...)
live in `validate`, which raises a one-line `ConfigError`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from nanogpt.errors import ConfigError
from nanogpt.sweeps import parallel_trials


def _conf_dir() -> str:
    """conf/ as an absolute path, so Hydra finds it however the command was started: inside an
    installed wheel it is the package data nanogpt/conf/; in a checkout (and an editable
    install) it is the top-level conf/ beside the package."""
    package = Path(__file__).resolve().parent
    installed = package / "conf"
    return str(installed if installed.is_dir() else package.parent / "conf")


CONF_DIR = _conf_dir()


@dataclass
class ModelConfig:
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    # Biases in Linear and LayerNorm layers: GPT-2 has them; without them training is a bit
    # faster and no worse, which is why nanoGPT's from-scratch configs turn them off.
    bias: bool = False
    # GELU of the MLP: none = exact, tanh = the approximation GPT-2 was trained with (OpenAI's
    # weights reproduce their logits only with it).
    gelu_approximate: str = "none"
    # Rows of the token embedding. null: the dataset's vocabulary, with GPT-2's 50,257 tokens
    # padded to 50,304 (see data.padded_vocab_size).
    vocab_size: Optional[int] = None
    # The speedrun options (see nanogpt/model.py), off by default so every model is GPT-2:
    position: str = "learned"  # learned | rope (rotary embeddings, no position table)
    rope_base: float = 10000.0
    norm: str = "layernorm"  # layernorm | rmsnorm
    qk_norm: bool = False  # RMS-normalise queries and keys per head
    activation: str = "gelu"  # gelu | relu2 (ReLU squared)
    tie_embeddings: bool = True  # false: the output head has its own matrix
    zero_init_proj: bool = False  # output projections (and an untied head) start at zero


@dataclass
class DatasetConfig:
    name: str = MISSING
    batch_size: int = 12
    # The model's context length: one dataset key, so the model and the loader always agree.
    block_size: int = 64
    # A local copy of the raw text; when null the cached copy or a download is used. For your own
    # corpus (a name that is not a built-in dataset): a file, a folder or a glob of .txt/.jsonl.
    source: Optional[str] = None
    # char | gpt2 (GPT-2's BPE) | bpe (a byte-level BPE trained on the corpus) | a tokenizer.json file
    # or a folder holding one. null: the built-in dataset's own; your own text needs one.
    tokenizer: Optional[str] = None
    # tokenizer=bpe only: the tokens to learn (null: 8192).
    vocab_size: Optional[int] = None
    # A Hugging Face dataset instead of text files: a hub name (streamed) or a local copy (a folder
    # of parquet/jsonl files, or one that save_to_disk wrote); its config, split and text field.
    hf_path: Optional[str] = None
    hf_config: Optional[str] = None
    hf_split: str = "train"
    text_field: str = "text"
    # Where prepared datasets live (relative paths are relative to the launch directory).
    data_dir: str = "data"
    val_fraction: float = 0.1
    # Seconds to wait for another process that is preparing the same dataset (null: as long as it takes).
    prepare_wait_s: Optional[float] = None


@dataclass
class OptimizerConfig:
    name: str = "adamw"  # adamw | muon (Muon for the blocks' matrices, AdamW for the rest)
    learning_rate: float = 1e-3
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0  # 0 disables clipping
    decay_lr: bool = True
    warmup_iters: int = 100
    # null: decay over the whole run (max_iters)
    lr_decay_iters: Optional[int] = None
    min_lr: float = 1e-4
    # optimizer=muon only. The schedule scales muon_learning_rate with learning_rate (same warmup
    # and decay); weight_decay and the betas apply to the AdamW part.
    muon_learning_rate: float = 0.02
    muon_momentum: float = 0.95
    muon_weight_decay: float = 0.0
    # optimizer=muon: AdamW's rate for untied token (and position) embeddings; null = learning_rate.
    embedding_learning_rate: Optional[float] = None


@dataclass
class SystemConfig:
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16
    compile: str = "auto"  # auto | true | false
    # Across ranks (torchrun, SLURM tasks): ddp = every rank holds the whole model; fsdp = each
    # holds a shard of the weights, gradients and optimizer state (nanogpt/fsdp.py), with sharded
    # checkpoints (ckpt_*.dcp/ folders).
    strategy: str = "ddp"  # ddp | fsdp


@dataclass
class WandbConfig:
    enabled: bool = False
    project: str = "nanogpt"
    entity: Optional[str] = None
    name: Optional[str] = None  # null: the run folder's name
    notes: Optional[str] = None  # a description of the run, shown with it in wandb
    tags: list[str] = field(default_factory=list)
    # online | offline | disabled; null: WANDB_MODE, else online when logged in, else offline
    mode: Optional[str] = None
    sample_tokens: int = 200  # text sampled at every evaluation and logged (0: none)


@dataclass
class TensorBoardConfig:
    enabled: bool = False  # event files in <run_dir>/tensorboard/ (`logger=tensorboard`)
    # Text sampled at every evaluation and logged (0: none). With wandb sampling too, one sample
    # of the longer length is logged to both.
    sample_tokens: int = 200


@dataclass
class TrainConfig:
    model: ModelConfig = MISSING
    dataset: DatasetConfig = MISSING
    optimizer: OptimizerConfig = MISSING
    system: SystemConfig = MISSING
    wandb: WandbConfig = field(default_factory=WandbConfig)
    tensorboard: TensorBoardConfig = field(default_factory=TensorBoardConfig)
    max_iters: int = 2000
    # Seconds of training (evaluations included; start-up and warm-up, the first step and an
    # evaluation at start, which compile, not) after which the run ends as if max_iters were
    # reached; the learning-rate decay then follows the clock, so it ends on time on any
    # machine. Runs with a budget are not bit-reproducible. null: no budget.
    time_budget_s: Optional[float] = None
    eval_interval: int = 250
    eval_iters: int = 20
    eval_at_start: bool = True  # evaluate the initial weights too (false saves the time in short runs)
    log_interval: int = 10
    gradient_accumulation_steps: int = 1
    seed: int = 1337
    init_from: str = "scratch"  # scratch | resume | gpt2 | gpt2-medium | gpt2-large | gpt2-xl | hf:<folder>
    run_dir: Optional[str] = None
    always_save_checkpoint: bool = True
    keep_last_k: int = 0  # also keep the k most recent checkpoints as ckpt_iter_<N>.pt
    eval_only: bool = False
    # Benchmarks of lm-evaluation-harness (nanogpt.eval) every eval_tasks_interval iterations and
    # at the end, on rank 0: task names, the documents per task (null: all; below 1: that share)
    # and a folder of task YAMLs of your own. [] (the default): none.
    eval_tasks: List[str] = field(default_factory=list)
    eval_tasks_interval: Optional[int] = None
    eval_tasks_limit: Optional[float] = None
    eval_tasks_include_path: Optional[str] = None


@dataclass
class SampleConfig:
    system: SystemConfig = MISSING
    run_dir: Optional[str] = None
    checkpoint: str = "best"  # best | last
    prompt: str = "\n"  # text, or FILE:path
    num_samples: int = 3
    max_new_tokens: int = 500
    temperature: float = 0.8  # 0 = greedy
    top_k: Optional[int] = 200
    top_p: float = 1.0  # nucleus sampling: keep the likeliest tokens holding this much probability
    seed: int = 1337
    stop: List[str] = field(default_factory=list)
    stream: bool = False
    kv_cache: bool = True  # false: the naive reference path, which reruns the context for every token
    window: str = "halve"  # halve | slide: what the context becomes once the text outgrows it


@dataclass
class PrepareConfig:
    dataset: DatasetConfig = MISSING
    force: bool = False


@dataclass
class ExportConfig:
    run_dir: Optional[str] = None
    checkpoint: str = "best"  # best | last
    out: Optional[str] = None  # the Hugging Face folder to write
    overwrite: bool = False


@dataclass
class EvalConfig:
    system: SystemConfig = MISSING
    run_dir: Optional[str] = None
    checkpoint: str = "best"  # best | last
    tasks: List[str] = field(default_factory=list)  # lm_eval task names: tasks=hellaswag,arc_easy
    limit: Optional[float] = None  # documents per task (null: all; below 1: that share of them)
    batch_size: int = 16
    include_path: Optional[str] = None  # a folder of task YAMLs in lm_eval's format


# The schema of each primary config (conf/<name>.yaml) and config group, by its ConfigStore name.
SCHEMAS: dict[str, type] = {
    "train_schema": TrainConfig,
    "sample_schema": SampleConfig,
    "prepare_schema": PrepareConfig,
    "export_schema": ExportConfig,
    "eval_schema": EvalConfig,
    "model_schema": ModelConfig,
    "dataset_schema": DatasetConfig,
    "optimizer_schema": OptimizerConfig,
    "system_schema": SystemConfig,
}


def _resolver(name: str) -> Callable[..., Any]:
    """nanogpt.resume's function `name`, imported when a config first resolves it: resume imports
    torch (and this module), which --help and tab completion never need."""

    def resolve(*args: Any) -> Any:
        from nanogpt import resume

        return getattr(resume, name)(*args)

    return resolve


def register_configs() -> None:
    """Make the schemas known to Hydra; each YAML file names its schema in its defaults list."""
    OmegaConf.register_new_resolver("nanogpt.job_dirname", _resolver("job_dirname"), replace=True)
    OmegaConf.register_new_resolver("nanogpt.run_dir", _resolver("resolve_run_dir"), replace=True)
    OmegaConf.register_new_resolver("nanogpt.output_subdir", _resolver("hydra_output_subdir"), replace=True)
    OmegaConf.register_new_resolver("nanogpt.log_file", _resolver("log_file"), replace=True)
    OmegaConf.register_new_resolver("nanogpt.now", _resolver("start_time"), use_cache=True, replace=True)
    OmegaConf.register_new_resolver("nanogpt.parallel_trials", parallel_trials, replace=True)
    # Every schema is a root config, not an option of its group (a group file names its schema
    # as /model_schema): Hydra lists a group's stored configs among its options, so a schema
    # stored in the group would be offered by tab completion and error messages as `model=model_schema`.
    cs = ConfigStore.instance()
    for name, node in SCHEMAS.items():
        cs.store(name=name, node=node)


def _require(ok: bool, key: str, value: Any, rule: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r} is invalid: {rule}")


DEVICE_KINDS = ("auto", "cpu", "cuda", "mps")
GELU_APPROXIMATIONS = ("none", "tanh")
POSITIONS = ("learned", "rope")
NORMS = ("layernorm", "rmsnorm")
ACTIVATIONS = ("gelu", "relu2")
OPTIMIZERS = ("adamw", "muon")
# init_from values that load OpenAI's released GPT-2 weights.
PRETRAINED_NAMES = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")
DTYPES = ("auto", "float32", "bfloat16", "float16")
COMPILE_CHOICES = ("auto", "true", "false")
STRATEGIES = ("ddp", "fsdp")


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
    _require(str(system.dtype) in DTYPES, "system.dtype", system.dtype, f"must be one of {', '.join(DTYPES)}")
    _require(
        str(system.compile).lower() in COMPILE_CHOICES,
        "system.compile",
        system.compile,
        "must be auto, true or false",
    )
    _require(str(system.strategy) in STRATEGIES, "system.strategy", system.strategy, f"must be one of {', '.join(STRATEGIES)}")


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
    _require(
        m.n_embd % m.n_head == 0,
        "model.n_embd",
        m.n_embd,
        f"must be divisible by model.n_head={m.n_head}",
    )
    _require(0.0 <= m.dropout < 1.0, "model.dropout", m.dropout, "must be in [0, 1)")
    _require(
        m.gelu_approximate in GELU_APPROXIMATIONS,
        "model.gelu_approximate",
        m.gelu_approximate,
        "must be none (exact) or tanh (GPT-2's)",
    )
    _require(m.position in POSITIONS, "model.position", m.position, "must be learned or rope")
    if m.position == "rope":
        _require((m.n_embd // m.n_head) % 2 == 0, "model.position", m.position, f"rope needs an even head size, not n_embd/n_head={m.n_embd // m.n_head}")
        _require(m.rope_base > 1, "model.rope_base", m.rope_base, "must be > 1")
    _require(m.norm in NORMS, "model.norm", m.norm, "must be layernorm or rmsnorm")
    _require(m.activation in ACTIVATIONS, "model.activation", m.activation, "must be gelu or relu2")
    if m.vocab_size is not None:
        _require(m.vocab_size > 0, "model.vocab_size", m.vocab_size, "must be a positive integer or null")
    validate_dataset(d)
    _require(o.name in OPTIMIZERS, "optimizer.name", o.name, "must be adamw or muon")
    _require(o.learning_rate > 0, "optimizer.learning_rate", o.learning_rate, "must be > 0")
    # min_lr is where the decay ends; a constant rate (decay_lr=false, as in fine-tuning) never uses it.
    _require(0 <= o.min_lr <= (o.learning_rate if o.decay_lr else math.inf), "optimizer.min_lr", o.min_lr, "must be in [0, learning_rate]")
    _require(o.weight_decay >= 0, "optimizer.weight_decay", o.weight_decay, "must be >= 0")
    _require(0 <= o.beta1 < 1, "optimizer.beta1", o.beta1, "must be in [0, 1)")
    _require(0 <= o.beta2 < 1, "optimizer.beta2", o.beta2, "must be in [0, 1)")
    if o.name == "muon":
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
    _require(
        cfg.init_from in ("scratch", "resume", *PRETRAINED_NAMES)
        or (cfg.init_from.startswith("hf:") and len(cfg.init_from) > 3),
        "init_from",
        cfg.init_from,
        f"must be scratch, resume, {', '.join(PRETRAINED_NAMES)} or hf:<a local Hugging Face GPT-2 folder>",
    )
    validate_system(cfg.system)
    _require(cfg.wandb.mode in (None, "online", "offline", "disabled"), "wandb.mode", cfg.wandb.mode, "must be online, offline, disabled or null")
    _require(cfg.wandb.sample_tokens >= 0, "wandb.sample_tokens", cfg.wandb.sample_tokens, "must be >= 0")
    validate_eval_tasks(cfg)
    _require(cfg.tensorboard.sample_tokens >= 0, "tensorboard.sample_tokens", cfg.tensorboard.sample_tokens, "must be >= 0")


WINDOWS = ("slide", "halve")


def validate_generation(
    *,
    num_samples: int,
    max_new_tokens: int,
    temperature: float,
    top_k: int | None,
    top_p: float,
    stop: Sequence[str],
    window: str,
) -> None:
    """The generation options, shared by `python -m nanogpt.sample` and nanogpt.generate()."""
    _require(num_samples > 0, "num_samples", num_samples, "must be a positive integer")
    _require(max_new_tokens > 0, "max_new_tokens", max_new_tokens, "must be >= 1")
    _require(temperature >= 0, "temperature", temperature, "must be >= 0 (0 = greedy)")
    if top_k is not None:
        _require(top_k > 0, "top_k", top_k, "must be a positive integer or null")
    _require(0 < top_p <= 1, "top_p", top_p, "must be in (0, 1] (1 keeps every token)")
    _require(all(isinstance(s, str) and s for s in stop), "stop", list(stop), "must be a list of non-empty strings")
    _require(window in WINDOWS, "window", window, f"must be one of {', '.join(WINDOWS)}")


def validate_sample(cfg: DictConfig | SampleConfig) -> None:
    """The sample command's own keys; the generation options go through validate_generation."""
    _require(cfg.checkpoint in ("best", "last"), "checkpoint", cfg.checkpoint, "must be best or last")
    validate_system(cfg.system)


def validate_export(cfg: DictConfig | ExportConfig) -> None:
    _require(cfg.checkpoint in ("best", "last"), "checkpoint", cfg.checkpoint, "must be best or last")
    if cfg.run_dir is None:
        raise ConfigError("run_dir is required: python -m nanogpt.export run_dir=<a run folder> out=<a new folder>")
    if cfg.out is None:
        raise ConfigError("out is required: python -m nanogpt.export run_dir=<a run folder> out=<a new folder>")


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
    _require(cfg.checkpoint in ("best", "last"), "checkpoint", cfg.checkpoint, "must be best or last")
    validate_system(cfg.system)
    if cfg.run_dir is None:
        raise ConfigError("run_dir is required: python -m nanogpt.eval run_dir=<a run folder> tasks=<lm_eval task names>")
    if not cfg.tasks:
        raise ConfigError("tasks is required: python -m nanogpt.eval run_dir=<a run folder> tasks=hellaswag,arc_easy")
    _require(cfg.batch_size > 0, "batch_size", cfg.batch_size, "must be a positive integer")
    validate_benchmark_options(cfg.limit, cfg.include_path)
