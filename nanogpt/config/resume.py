"""A resumed run's config: the checkpoint's own, with only the command line's overrides that leave
the model and the data stream unchanged, and a check that the checkpoint is the run folder's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from nanogpt.config.text import as_text
from nanogpt.errors import CheckpointError, ConfigError, first_line

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
    try:
        own = OmegaConf.load(folder_config)
    except Exception as exc:  # YAML's and OmegaConf's many errors: the file is not a config
        raise ConfigError(
            f"{folder_config} is unreadable ({first_line(exc)}): it records what the run trains; put back a good copy, "
            f"or remove it to resume without that check"
        ) from None
    if not isinstance(own, DictConfig):
        raise ConfigError(f"{folder_config} holds no config: put back a good copy, or remove it to resume without that check")
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
        f"{key} cannot change on resume: the checkpoint has {_show(old)}, you asked for {_show(new)} (start a new run instead, or drop the override)"
    )


def _show(value: Any) -> str:
    return json.dumps(_plain(value), sort_keys=True)
