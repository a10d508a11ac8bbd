"""Continue a run: find its folder and newest valid checkpoint, and rebuild its config from the
checkpoint with only the overrides that leave the model and the data stream unchanged."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from nanogpt.cli import PROCESS_START
from nanogpt.checkpoint import CKPT_NAMES, SHARDED_NAMES, CheckpointError, all_checkpoints, has_checkpoint, load_checkpoint
from nanogpt.config import ConfigError
from nanogpt.distributed import env_rank, rank0_path
from nanogpt.free_text import as_text
from nanogpt.runlock import LOCK_NAME, holder

log = logging.getLogger(__name__)

# Keys a resumed run may change: they steer the loop, the optimizer's schedule or the hardware,
# but not the model's shape nor which batches it sees.
RESUMABLE_KEYS = (
    "max_iters",
    "time_budget_s",
    "eval_interval",
    "eval_iters",
    "eval_at_start",
    "log_interval",
    "always_save_checkpoint",
    "keep_last_k",
    "eval_only",
    "eval_tasks",
    "eval_tasks_interval",
    "eval_tasks_limit",
    "eval_tasks_include_path",
    "init_from",
    "run_dir",
    "optimizer.learning_rate",
    "optimizer.min_lr",
    "optimizer.warmup_iters",
    "optimizer.lr_decay_iters",
    "optimizer.decay_lr",
    "optimizer.grad_clip",
    "optimizer.weight_decay",
    "optimizer.beta1",
    "optimizer.beta2",
    "optimizer.muon_learning_rate",
    "optimizer.muon_momentum",
    "optimizer.muon_weight_decay",
    "optimizer.embedding_learning_rate",
    "dataset.data_dir",
    "system",
    "system.device",
    "system.dtype",
    "system.compile",
)
# With eval_only=true nothing trains, so the data may change too: a checkpoint can be evaluated
# on any dataset with its tokenizer. The context length stays the model's.
EVAL_ONLY_KEYS = (
    "dataset",
    "dataset.name",
    "dataset.source",
    "dataset.tokenizer",
    "dataset.val_fraction",
    "dataset.batch_size",
    "seed",
)

# What the logger group's options set.
LOGGER_KEYS = ("wandb.enabled", "tensorboard.enabled")


def resolve_run_dir(init_from: str, run_dir: str | None, new_dir: str) -> str:
    """Hydra's run folder (resolver `nanogpt.run_dir`): the run being resumed, else a new one.
    Resuming without run_dir picks the most recent run under outputs/. Under torchrun rank 0
    chooses, and the other ranks, on every node, take its folder (nanogpt.distributed.rank0_path)."""
    return rank0_path("run_dir", lambda: _choose_run_dir(init_from, run_dir, new_dir))


def _choose_run_dir(init_from: str, run_dir: str | None, new_dir: str) -> str:
    if init_from != "resume":
        return new_dir
    if run_dir:
        return run_dir
    latest = find_latest_run(Path("outputs"))
    return str(latest) if latest is not None else new_dir


def hydra_output_subdir(init_from: str, timestamp: str) -> str | None:
    """Where Hydra saves the composed config (resolver `nanogpt.output_subdir`): a resumed run keeps
    the original `.hydra/` and records each resume's config and overrides beside it. Under DDP
    only rank 0 writes it, and nobody writes into a folder that a live run holds: the command is
    refused a moment later (nanogpt.runlock) and must leave that run's config as it was; so must a
    new run in a folder that holds a finished one (refused by nanogpt.train)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if env_rank() != 0:
        return None
    hydra = HydraConfig.get() if HydraConfig.initialized() else None
    output_dir = OmegaConf.select(hydra, "runtime.output_dir", default=None) if hydra is not None else None
    if output_dir is not None and holder(Path(output_dir)) is not None:
        return None
    if init_from != "resume" and output_dir is not None and hydra.mode == RunMode.RUN and has_checkpoint(Path(output_dir)):
        # A new run in a folder that holds one is refused too (nanogpt.train): that run's config
        # must stay, or its own checkpoint no longer matches it. A sweep's job continues its run.
        return None
    return ".hydra" if init_from != "resume" else f".hydra/resume-{timestamp}"


def log_file(path: str) -> str:
    """Hydra's log file (resolver `nanogpt.log_file`): rank 0's; other ranks log nowhere."""
    return path if env_rank() == 0 else os.devnull


def start_time(pattern: str) -> str:
    """The command's start time (resolver `nanogpt.now`), the same on every rank of a DDP run."""
    stamp = float(os.environ.get("NANOGPT_START_TIME", PROCESS_START))
    return datetime.fromtimestamp(stamp).strftime(pattern)


SWEEP_KEYS_ENV = "NANOGPT_SWEEP_KEYS"


def note_sweep_keys(argv: list[str]) -> None:
    """Remember which command-line keys are swept (`lr=1e-3,6e-4`, `range(...)`, ...) in the
    environment, which reaches every job, SLURM jobs included, so job folders can be named by
    the values that tell them apart."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        overrides = OverridesParser.create().parse_overrides([a for a in argv if not a.startswith("-")])
    except Exception:  # Hydra reports bad overrides itself, better than we could
        return
    keys = [o.key_or_group for o in overrides if o.is_sweep_override()]
    os.environ[SWEEP_KEYS_ENV] = ",".join(keys)


def job_dirname(num: int, task_overrides: Any, numbered: bool = False) -> str:
    """A sweep job's folder name (resolver `nanogpt.job_dirname`): the values of its swept keys,
    e.g. "model=mini,optimizer.learning_rate=1e-3", made safe as one path component. With
    `numbered` (an Optuna search: conf/hparams_search/) it starts with the job's number, as in
    "3_model.n_layer=4": two trials may draw the same values, and each needs a folder of its own."""
    swept = set(filter(None, os.environ.get(SWEEP_KEYS_ENV, "").split(",")))
    items = sorted(str(o) for o in task_overrides if str(o).split("=", 1)[0].lstrip("+~") in swept)
    name = ",".join(items).replace("/", "_").replace("\\", "_").strip(".")
    if not name:
        return str(num)
    if len(name) > 150:
        return f"{num}_{name[:120]}_{hashlib.sha1(name.encode()).hexdigest()[:8]}"
    return f"{num}_{name}" if numbered else name


def find_latest_run(outputs_root: Path) -> Path | None:
    """The run folder under outputs_root whose checkpoint was written most recently, among those
    that no live process is training (see live_runs)."""
    names = (*CKPT_NAMES.values(), *SHARDED_NAMES.values())
    candidates = [p for name in names for p in outputs_root.glob(f"**/{name}") if holder(p.parent) is None]
    if not candidates:
        return None
    return max(candidates, key=lambda p: p.stat().st_mtime).parent


def live_runs(outputs_root: Path) -> list[str]:
    """"<folder> (pid P on host H)" for each run folder under outputs_root that a live process holds."""
    found = []
    for lock in sorted(outputs_root.glob(f"**/{LOCK_NAME}")):
        who = holder(lock.parent)
        if who is not None:
            found.append(f"{lock.parent} ({who})")
    return found


def load_newest_valid(run_dir: Path) -> tuple[dict[str, Any], Path]:
    """The newest checkpoint of run_dir that loads; a corrupt one is reported and skipped. A
    sharded one (a .dcp folder) gives its train state and its weights' shapes (read_sharded)."""
    from nanogpt.fsdp import read_sharded  # torch.distributed.checkpoint: only where a run resumes

    paths = all_checkpoints(run_dir)
    if not paths:
        raise CheckpointError(f"{run_dir}: no checkpoint to resume from (expected {' or '.join(CKPT_NAMES.values())}, or the ckpt_*.dcp/ folders of system.strategy=fsdp)")
    errors = []
    for path in paths:
        try:
            state = read_sharded(path) if path.suffix == ".dcp" else load_checkpoint(path)
        except CheckpointError as exc:
            log.warning("%s; trying an older checkpoint", exc)
            errors.append(str(exc))
            continue
        if errors:
            log.warning("resuming from %s instead", path)
        return state, path
    raise CheckpointError("; ".join(errors))


# What makes a checkpoint its run's: the architecture and the data it was trained on. Everything
# in the model and dataset groups but where the data lives and how long to wait for it.
NOT_IDENTITY = ("dataset.data_dir", "dataset.prepare_wait_s")


def check_belongs_to_run(saved: DictConfig, run_dir: Path, path: Path) -> None:
    """Refuse a checkpoint (config `saved`) whose architecture or dataset differs from what the run
    folder's `.hydra/config.yaml` says the run trains: it was copied in from another run, and
    resuming it would overwrite this run's files with that run's. A folder without the file
    (written by another tool) has nothing to check against. A run that started from pretrained
    weights took its architecture from them, not from its config's model group: only its dataset
    can be compared."""
    folder_config = run_dir / ".hydra" / "config.yaml"
    if not folder_config.is_file():
        return
    own = OmegaConf.load(folder_config)
    groups = ("model", "dataset") if OmegaConf.select(own, "init_from") == "scratch" else ("dataset",)
    for group in groups:
        ours, theirs = _flat(OmegaConf.select(own, group), group), _flat(OmegaConf.select(saved, group), group)
        # Keys only one side has (the schema grew since) cannot tell the runs apart.
        for key in sorted(ours.keys() & theirs.keys()):
            if key not in NOT_IDENTITY and ours[key] != theirs[key]:
                raise CheckpointError(
                    f"{path} is not this run's checkpoint: it has {key}={_show(theirs[key])}, {folder_config} has {_show(ours[key])}; "
                    f"put it back in its own run folder, or resume that run instead"
                )


def _flat(node: Any, prefix: str) -> dict[str, Any]:
    """{"model.n_layer": 2, ...}: the leaves of a config group, resolved where they can be."""
    if not isinstance(node, DictConfig):
        return {}
    try:
        tree = OmegaConf.to_container(node, resolve=True)
    except OmegaConfBaseException:  # an interpolation that only resolves inside Hydra: compare it as written
        tree = OmegaConf.to_container(node, resolve=False)
    return {f"{prefix}.{key}": value for key, value in tree.items()}


def override_keys(overrides: list[str]) -> list[str]:
    """The config keys named by command-line overrides ("+a.b=1" -> "a.b", "model=small" -> "model")."""
    keys = []
    for item in overrides:
        key = item.split("=", 1)[0].lstrip("+~")
        if not key.startswith("hydra.") and not key.startswith("hydra/"):
            keys.append(key.replace("/", "."))
    return keys


def resumed_config(saved: DictConfig, requested: DictConfig, overridden: list[str]) -> DictConfig:
    """The checkpoint's config with the user's overrides applied where they are allowed.

    An override that would change anything else (architecture, dataset, seed, batch shape) is
    refused with the key, the checkpoint's value and the requested value."""
    # Keys added to the schema since the checkpoint was written take their defaults, which
    # reproduce what the code that wrote it did.
    cfg = OmegaConf.merge(OmegaConf.create(OmegaConf.to_container(requested)), saved)
    OmegaConf.set_struct(cfg, False)
    allowed = RESUMABLE_KEYS + (EVAL_ONLY_KEYS if requested.eval_only else ())
    # `logger=...` is a config group, no key: it switches the trackers on and off (conf/logger/).
    overridden = [k for key in overridden for k in (LOGGER_KEYS if key == "logger" else (key,))]
    for key in overridden:
        new = OmegaConf.select(requested, key)
        old = OmegaConf.select(saved, key)
        if _plain(new) == _plain(old):
            continue
        if key in allowed or any(key.startswith(prefix + ".") for prefix in ("system", "wandb", "tensorboard")):
            OmegaConf.update(cfg, key, as_text(_plain(new)), force_add=True)  # text stays text
            continue
        raise _conflict(key, old, new)
    cfg.dataset.block_size = saved.dataset.block_size  # a new dataset group brings its own
    cfg.init_from = "resume"
    OmegaConf.set_struct(cfg, True)
    return cfg


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value


def _conflict(key: str, old: Any, new: Any) -> ConfigError:
    return ConfigError(
        f"{key} cannot change on resume: the checkpoint has {_show(old)}, you asked for {_show(new)} "
        f"(start a new run instead, or drop the override)"
    )


def _show(value: Any) -> str:
    return json.dumps(_plain(value), sort_keys=True)
