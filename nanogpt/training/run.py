"""A training run's life around its loop: the run folder's lock and clean-up after a kill, the
checkpoint and config a resume continues from, the process group, the stop signals, and what
the folder holds when the run ends."""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from nanogpt import distributed
from nanogpt.checkpoint import check_model_args, clean_interrupted_saves, has_checkpoint, load_newest_valid
from nanogpt.config import validate_train
from nanogpt.config.resume import check_belongs_to_run, override_keys, resumed_config
from nanogpt.config.text import as_text, pasteable_override
from nanogpt.distributed import env_rank
from nanogpt.errors import ConfigError, RunStopped
from nanogpt.metrics import keep_metrics_until, remove_temp_files
from nanogpt.runlock import run_lock, running_marker
from nanogpt.system import resolve_system
from nanogpt.training import loop
from nanogpt.training.guards import StopRequest
from nanogpt.training.setup import build, describe
from nanogpt.training.tracking import tensorboard_writer

log = logging.getLogger("nanogpt.train")


def train(
    cfg: DictConfig,
    run_dir: Path,
    overrides: list[str] | None = None,
    wandb_group: str | None = None,
    auto_resume: bool = False,
    launched_at: float | None = None,
    command: str = "nanogpt-train",
) -> float:
    """Train (or resume, or evaluate) as cfg says, writing into run_dir; returns the best val loss.

    `overrides` are the command-line overrides, which a resume checks against the checkpoint.
    With `auto_resume` (sweep jobs, requeued SLURM jobs) a run folder that already holds a
    checkpoint is continued rather than started again; a finished run is not trained again.
    `launched_at` is when the command started (the start record's startup_s counts from it);
    `command` how the user started training (a stopped run's log line says how to resume it).
    Rank 0 holds the run folder's lock throughout: a second writer is refused (RunFolderBusy).
    A stop signal ends training at a step boundary with a checkpoint and raises RunStopped."""
    launched_at = time.time() if launched_at is None else launched_at
    main_rank = env_rank() == 0  # the process group does not exist yet
    with run_lock(run_dir, resuming=cfg.init_from == "resume") if main_rank else contextlib.nullcontext():
        if main_rank:
            clean_up_after_kill(run_dir)
        stop = StopRequest()
        # Installed from the start, so that a Ctrl-C while the data and the model load also
        # stops cleanly; eval_only has no step boundary to wait for and stops at once.
        with contextlib.nullcontext() if cfg.eval_only else stop.installed():
            resume_command = f"{command} init_from=resume {pasteable_override('run_dir', str(run_dir))}"
            result, stopped = _train(cfg, run_dir, overrides or [], wandb_group, auto_resume, stop, launched_at, resume_command)
    if stopped:
        raise RunStopped
    return result


def clean_up_after_kill(run_dir: Path) -> None:
    """Remove what a killed run of this folder left half-written (call it holding the lock)."""
    temp_files, sharded = clean_interrupted_saves(run_dir)
    leftovers = sorted(temp_files + remove_temp_files(run_dir))
    if leftovers:
        log.info("removed the temp files of an interrupted write: %s", ", ".join(leftovers))
    if sharded:
        log.info("cleaned up after an interrupted sharded save (the previous checkpoint is kept): %s", ", ".join(sharded))


def _train(
    cfg: DictConfig,
    run_dir: Path,
    overrides: list[str],
    wandb_group: str | None,
    auto_resume: bool,
    stop: StopRequest,
    launched_at: float,
    resume_command: str,
) -> tuple[float, bool]:
    """train()'s work, holding the lock: the best val loss, and whether a signal stopped training
    (unless the stop was handed over to submitit, which then ends the process its own way)."""
    resume = None
    holds_checkpoint = has_checkpoint(run_dir)
    if cfg.init_from == "resume" or (auto_resume and holds_checkpoint):
        resume, cfg = load_resume(cfg, run_dir, overrides)
    elif holds_checkpoint:
        raise ConfigError(f"hydra.run.dir={run_dir} already holds a run: continue it with init_from=resume run_dir={run_dir}, or choose a new folder")
    validate_train(cfg)
    if cfg.tensorboard.enabled and not cfg.eval_only:
        tensorboard_writer()  # a missing package is refused now, before the data and the model load
    opt = cfg.optimizer
    if not cfg.eval_only and opt.decay_lr and opt.warmup_iters >= cfg.max_iters > 0:
        # A short run (a sweep's, an Optuna trial's) would never reach the learning rate it sweeps.
        log.warning(
            "optimizer.warmup_iters=%d is not below max_iters=%d: this run ends still warming up, below optimizer.learning_rate; "
            "set optimizer.warmup_iters to a tenth of the run, say",
            opt.warmup_iters, cfg.max_iters,
        )  # fmt: skip
    if cfg.optimizer.lr_decay_iters is None:
        # Fix the schedule's length now, so that resuming with a larger max_iters continues
        # this schedule rather than stretching it mid-run.
        cfg.optimizer.lr_decay_iters = cfg.max_iters
    system = resolve_system(cfg.system.device, cfg.system.dtype, cfg.system.compile, measure_cpu_dtype=True)
    world = distributed.init()
    if not world.is_main:
        logging.getLogger().setLevel(logging.WARNING)  # one rank speaks
    stopped = False
    try:
        run = build(cfg, run_dir, system, world, resume, overrides, wandb_group)
        describe(run)
        if cfg.eval_only:
            result = loop.eval_only(run)
        else:
            if world.is_main:
                # Each iteration once in metrics.jsonl: a resume drops what a killed run wrote
                # after its checkpoint; a fresh start, what an attempt killed before its first
                # checkpoint wrote (a restarted sweep job) and the plot made from it.
                keep_metrics_until(run_dir / "metrics.jsonl", run.state.iter_num if resume is not None else None)
                if resume is None:
                    (run_dir / "loss.png").unlink(missing_ok=True)
            with running_marker(run_dir, world.is_main):
                result, stopped = loop.train(run, stop, launched_at, resume_command)
            stopped = stopped and not stop.hand_over()
    except BaseException:
        distributed.shutdown(all_ranks_done=False)
        raise
    # Free the run's parts (their reference cycles too) while the process group is alive. A DDP
    # model's reducer holds the group: freed after it is destroyed, it would be the group's last
    # owner, and the group's destructor joins gloo's threads while holding the GIL that one of
    # them may need (a deadlock seen once in CI).
    run = None
    gc.collect()
    distributed.shutdown(all_ranks_done=True)
    return result, stopped


def load_resume(cfg: DictConfig, run_dir: Path, overrides: list[str]) -> tuple[dict[str, Any], DictConfig]:
    """The checkpoint to continue from, and the run's config rebuilt from it."""
    state, path = load_newest_valid(run_dir)
    check_model_args(state, path)  # sizes from the file's tensors, before anything is built from them
    # The checkpoint holds the resolved config: a text such as wandb.name="${x}" stays text.
    saved = OmegaConf.create(as_text(json.loads(state["config"])))
    resumed = resumed_config(saved, cfg, override_keys(overrides))
    check_belongs_to_run(saved, run_dir, path)
    log.info("resuming %s from %s (iter %d)", run_dir, path.name, state["iter_num"])
    return state, resumed
