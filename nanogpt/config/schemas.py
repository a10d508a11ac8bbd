"""The config schemas: one dataclass per config group and per command, each key's default and
help stated here once.

Every YAML file under conf/ extends one of these dataclasses and states only what its option
changes, so Hydra rejects an unknown key (`optimizer.learnig_rate=...`), a wrong type
(`model.n_layer=abc`) or a value outside a key's choices (`model.norm=foo`) while composing,
before anything runs. Rules that types cannot express (n_embd divisible by n_head, positive
sizes, ...) live in nanogpt.config.validation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from nanogpt.architecture import Architecture
from nanogpt.settings import Choice, setting


def _conf_dir() -> str:
    """conf/ as an absolute path, so Hydra finds it however the command was started: inside an
    installed wheel it is the package data nanogpt/conf/; in a checkout (and an editable
    install) it is the top-level conf/ beside the package."""
    package = Path(__file__).resolve().parents[1]
    installed = package / "conf"
    return str(installed if installed.is_dir() else package.parent / "conf")


CONF_DIR = _conf_dir()


class OptimizerName(Choice):
    adamw = "adamw"
    muon = "muon"  # Muon for the blocks' matrices, AdamW for the rest


class DType(Choice):
    auto = "auto"
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


class Strategy(Choice):
    ddp = "ddp"  # every rank holds the whole model
    fsdp = "fsdp"  # each rank holds a shard of the weights, gradients and optimizer state


class Window(Choice):
    halve = "halve"
    slide = "slide"


class Which(Choice):
    """Which checkpoint of a run: the one with the best val loss, or the most recent."""

    best = "best"
    last = "last"


class WandbMode(Choice):
    online = "online"
    offline = "offline"
    disabled = "disabled"


# init_from's names of OpenAI's released GPT-2 weights, and the Hugging Face hub repos that hold them.
PRETRAINED_REPOS = {
    "gpt2": "openai-community/gpt2",  # 124M
    "gpt2-medium": "openai-community/gpt2-medium",  # 350M
    "gpt2-large": "openai-community/gpt2-large",  # 774M
    "gpt2-xl": "openai-community/gpt2-xl",  # 1558M
}


@dataclass
class ModelConfig(Architecture):
    vocab_size: Optional[int] = setting(None, "rows of the token embedding; null: the dataset's vocabulary, GPT-2's 50,257 tokens padded to 50,304")


@dataclass
class DatasetConfig:
    name: str = setting(MISSING, "a built-in dataset (shakespeare_char, shakespeare, openwebtext) or a name for your own text")
    batch_size: int = setting(12, "rows per micro-batch")
    block_size: int = setting(64, "the model's context length: one dataset key, so the model and the loader always agree")
    source: Optional[str] = setting(
        None,
        "a local copy of the raw text (null: the cached copy or a download); for your own corpus a file, a folder or a glob of .txt/.jsonl",
    )
    tokenizer: Optional[str] = setting(
        None,
        "char | gpt2 (GPT-2's BPE) | bpe (a byte-level BPE trained on the corpus) | a tokenizer.json file or a folder "
        "holding one; null: the built-in dataset's own (your own text needs one)",
    )
    vocab_size: Optional[int] = setting(None, "tokenizer=bpe only: the tokens to learn (null: 8192)")
    hf_path: Optional[str] = setting(
        None, "a Hugging Face dataset instead of text files: a hub name (streamed) or a local copy (parquet/jsonl files, or save_to_disk's)"
    )
    hf_config: Optional[str] = setting(None, "the Hugging Face dataset's config")
    hf_split: str = setting("train", "the Hugging Face dataset's split")
    text_field: str = setting("text", "the field of each record that holds its text")
    data_dir: str = setting("data", "where prepared datasets live (relative paths: to the launch directory)")
    val_fraction: float = setting(0.1, "the share of the text held out for validation")
    prepare_wait_s: Optional[float] = setting(
        None, "seconds to wait for another process that is preparing the same dataset (null: as long as it takes)"
    )


@dataclass
class OptimizerConfig:
    name: OptimizerName = setting(OptimizerName.adamw, "Muon for the blocks' matrices, AdamW for the rest")
    learning_rate: float = setting(1e-3, "the peak rate, after warmup")
    weight_decay: float = setting(0.1, "AdamW's decoupled weight decay of matrices and embeddings")
    beta1: float = setting(0.9)
    beta2: float = setting(0.99)
    grad_clip: float = setting(1.0, "clip the gradients' global norm to this (0 disables clipping)")
    decay_lr: bool = setting(True, "cosine decay to min_lr after warmup (false: a constant rate)")
    warmup_iters: int = setting(100, "iterations of linear warmup")
    lr_decay_iters: Optional[int] = setting(None, "where the decay reaches min_lr (null: max_iters, the whole run)")
    min_lr: float = setting(1e-4, "the rate the decay ends at")
    muon_learning_rate: float = setting(
        0.02,
        "optimizer=muon only; the schedule scales it with learning_rate (same warmup and decay); weight_decay and the betas apply to the AdamW part",
    )
    muon_momentum: float = setting(0.95, "optimizer=muon: Muon's momentum")
    muon_weight_decay: float = setting(0.0, "optimizer=muon: Muon's weight decay")
    embedding_learning_rate: Optional[float] = setting(None, "optimizer=muon: AdamW's rate for untied embeddings (null: learning_rate)")


@dataclass
class SystemConfig:
    device: str = setting("auto", "auto | cpu | cuda | cuda:N | mps (auto: cuda, then mps, then cpu)")
    dtype: DType = setting(
        DType.auto,
        "auto: bfloat16 on GPUs that run it fast, float16 (+ GradScaler) on older ones; on a CPU bfloat16 only where "
        "timing the run's own shapes finds it faster than float32",
    )
    # A string, not a Choice: Hydra reads `true` and `false` on the command line as booleans,
    # which a Choice would refuse.
    compile: str = setting("auto", "auto | true | false (auto: on CUDA only)")
    strategy: Strategy = setting(Strategy.ddp, "across ranks (torchrun, SLURM tasks); fsdp saves sharded checkpoints (ckpt_*.dcp/ folders)")
    check_memory: bool = setting(True, "refuse a run (or a sampling batch) estimated to need more memory than the machine has")


@dataclass
class WandbConfig:
    enabled: bool = setting(False, "log to Weights & Biases (`logger=wandb`)")
    project: str = setting("nanogpt")
    entity: Optional[str] = setting(None)
    name: Optional[str] = setting(None, "null: the run folder's name")
    notes: Optional[str] = setting(None, "a description of the run, shown with it in wandb")
    tags: List[str] = setting(help="", factory=list)
    mode: Optional[WandbMode] = setting(None, "null: WANDB_MODE, else online when logged in, else offline")
    sample_tokens: int = setting(200, "text sampled at every evaluation and logged (0: none)")


@dataclass
class TensorBoardConfig:
    enabled: bool = setting(False, "event files in <run_dir>/tensorboard/ (`logger=tensorboard`)")
    sample_tokens: int = setting(
        200, "text sampled at every evaluation and logged (0: none); with wandb sampling too, one sample of the longer length goes to both"
    )


@dataclass
class TrainConfig:
    model: ModelConfig = MISSING
    dataset: DatasetConfig = MISSING
    optimizer: OptimizerConfig = MISSING
    system: SystemConfig = MISSING
    wandb: WandbConfig = setting(factory=WandbConfig)
    tensorboard: TensorBoardConfig = setting(factory=TensorBoardConfig)
    max_iters: int = setting(2000)
    # Evaluations count, start-up and warm-up do not (the first step and an evaluation at start,
    # which compile): the run then ends on time on any machine, but is not bit-reproducible.
    time_budget_s: Optional[float] = setting(None)
    eval_interval: int = setting(250)
    eval_iters: int = setting(20)
    eval_at_start: bool = setting(True, "evaluate the initial weights too (false saves the time in short runs)")
    log_interval: int = setting(10)
    gradient_accumulation_steps: int = setting(1)
    seed: int = setting(1337)
    init_from: str = setting("scratch", " | ".join(("scratch", "resume", *PRETRAINED_REPOS, "hf:<folder>")))
    run_dir: Optional[str] = setting(None, "the run folder to resume or sample from")
    always_save_checkpoint: bool = setting(True, "write ckpt_last.pt at every evaluation (else only at the end)")
    keep_last_k: int = setting(0, "also keep the k most recent checkpoints as ckpt_iter_<N>.pt")
    eval_only: bool = setting(False)
    # Benchmarks of lm-evaluation-harness every eval_tasks_interval iterations and at the end, on
    # rank 0: task names, the documents per task (null: all; below 1: that share) and a folder of
    # task YAMLs of your own.
    eval_tasks: List[str] = setting(factory=list)
    eval_tasks_interval: Optional[int] = setting(None)
    eval_tasks_limit: Optional[float] = setting(None)
    eval_tasks_include_path: Optional[str] = setting(None)


# Below this temperature, sampling is greedy: logits / temperature would overflow float32 towards
# a softmax that is one-hot anyway.
GREEDY_BELOW_TEMPERATURE = 1e-5


@dataclass
class SampleConfig:
    system: SystemConfig = MISSING
    run_dir: Optional[str] = setting(None)
    checkpoint: Which = setting(Which.best)
    prompt: str = setting("\n", "text, or FILE:path")
    num_samples: int = setting(3)
    max_new_tokens: int = setting(500)
    temperature: float = setting(0.8, f"0 = greedy (and so is any below {GREEDY_BELOW_TEMPERATURE:g})")
    top_k: Optional[int] = setting(200, "null: no limit")
    top_p: float = setting(1.0, "nucleus sampling: keep the likeliest tokens holding this much probability")
    seed: int = setting(1337, "same seed, same text")
    stop: List[str] = setting(help="stop='[THE END]' stop=$'\\n\\n': one string per stop=; a sample ends at its first, which is cut", factory=list)
    stream: bool = setting(False, "print the first sample as its tokens come")
    kv_cache: bool = setting(True, "false: the naive reference path, which reruns the context for every token")
    window: Window = setting(Window.halve, "what the context becomes once the text outgrows it")


@dataclass
class PrepareConfig:
    dataset: DatasetConfig = MISSING
    force: bool = setting(False, "re-prepare even if the prepared files are valid")


@dataclass
class ExportConfig:
    run_dir: Optional[str] = setting(None)
    checkpoint: Which = setting(Which.best)
    out: Optional[str] = setting(None, "the Hugging Face folder to write")
    overwrite: bool = setting(False, "replace an existing, non-empty out folder")


@dataclass
class EvalConfig:
    system: SystemConfig = MISSING
    run_dir: Optional[str] = setting(None)
    checkpoint: Which = setting(Which.best)
    tasks: List[str] = setting(help="lm_eval task names: tasks=hellaswag,arc_easy", factory=list)
    limit: Optional[float] = setting(None, "documents per task (null: all; below 1: that share of them)")
    batch_size: int = setting(16, "rows per forward pass")
    include_path: Optional[str] = setting(None, "a folder of task YAMLs in lm_eval's format")


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


def register_schemas() -> None:
    """Make the schemas known to Hydra; each YAML file names its schema in its defaults list.
    Every schema is a root config, not an option of its group (a group file names its schema as
    /model_schema): Hydra lists a group's stored configs among its options, so a schema stored in
    the group would be offered by tab completion and error messages as `model=model_schema`."""
    store = ConfigStore.instance()
    for name, node in SCHEMAS.items():
        store.store(name=name, node=node)
