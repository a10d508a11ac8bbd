"""A run folder's checkpoints: which there are, the one to continue from, writing a new one
(.pt or sharded, whichever the run saves), putting one back into a model and optimizer, and
loading one's model for inference."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from nanogpt.checkpoint.format import (
    CKPT_NAMES,
    SHARDED_STATE_FILE,
    TEMP_PATTERN,
    check_model_args,
    checkpoint_path,
    load_checkpoint,
    peek_iteration,
    save_checkpoint,
    sharded_checkpoint_path,
)
from nanogpt.checkpoint.state import TrainState
from nanogpt.distributed import Dist
from nanogpt.errors import CheckpointError, ConfigError, storage_error
from nanogpt.model import GPT, GPTConfig

log = logging.getLogger(__name__)


def _sharded() -> ModuleType:
    """nanogpt.checkpoint.sharded, imported where a sharded checkpoint is met: it imports
    torch.distributed.checkpoint, about 0.7 s of start-up that other runs never need."""
    from nanogpt.checkpoint import sharded

    return sharded


def all_checkpoints(run_dir: Path) -> list[Path]:
    """Every checkpoint of a run folder (files, and the folders of sharded ones), the one to continue
    from first: by the iteration each holds, never by file time (a copy that did not keep times,
    or a touched file, must not send a resume back to an older iteration); at the same iteration
    ckpt_last, then the ckpt_iter_* snapshots, then ckpt_best. One that cannot tell its iteration
    (unreadable) comes last, where loading it says what is wrong."""
    paths = [p for p in run_dir.glob("ckpt_*.pt") if p.is_file()] + [p for p in run_dir.glob("ckpt_*.dcp") if p.is_dir()]
    return sorted(paths, key=lambda path: _rank(path, checkpoint_iteration(path)))


def _rank(path: Path, iteration: int | None) -> tuple:
    kind = {"last": 0, "best": 2}.get(path.stem.removeprefix("ckpt_"), 1)
    return (iteration is None, -(iteration or 0), kind, -path.stat().st_mtime_ns)


def checkpoint_iteration(path: Path) -> int | None:
    """The iteration a checkpoint (a .pt file or a sharded folder) holds, read cheaply."""
    return peek_iteration(path / SHARDED_STATE_FILE if path.suffix == ".dcp" else path)


def has_checkpoint(run_dir: Path) -> bool:
    return any(p.is_file() for p in run_dir.glob("ckpt_*.pt")) or any(p.is_dir() for p in run_dir.glob("ckpt_*.dcp"))


def newest_checkpoint(run_dir: str | os.PathLike, which: str) -> Path | None:
    """The run's `which` checkpoint (best or last), a file or a sharded folder: the one of the higher
    iteration where a run continued under the other system.strategy holds both; None where there
    is neither."""
    found = [p for p in (checkpoint_path(run_dir, which), sharded_checkpoint_path(run_dir, which)) if p.exists()]
    return min(found, key=lambda path: _rank(path, checkpoint_iteration(path)), default=None)


def load_newest_valid(run_dir: Path) -> tuple[dict[str, Any], Path]:
    """The checkpoint of run_dir to continue from: the highest iteration that loads whole (a
    damaged one is named and passed over). A sharded one (a .dcp folder) gives its train state and
    its weights' shapes (read_sharded)."""
    paths = all_checkpoints(run_dir)
    if not paths:
        raise CheckpointError(
            f"{run_dir}: no checkpoint to resume from (expected {' or '.join(CKPT_NAMES.values())}, "
            f"or the ckpt_*.dcp/ folders of system.strategy=fsdp)"
        )
    errors = []
    for path in paths:
        try:
            state = _load_for_resume(path)
        except CheckpointError as exc:
            log.warning("%s; trying an older checkpoint", exc)
            errors.append(str(exc))
            continue
        # The files whose iteration could not even be read rank last: say why they were passed over.
        for unreadable in paths[paths.index(path) + 1 :]:
            if checkpoint_iteration(unreadable) is None:
                try:
                    _load_for_resume(unreadable)
                except CheckpointError as exc:
                    log.warning("%s; passed over", exc)
                    errors.append(str(exc))
        if errors:
            log.warning("resuming from %s instead", path)
        _say_why(path, state["iter_num"], paths)
        return state, path
    raise CheckpointError("; ".join(errors))


def _load_for_resume(path: Path) -> dict[str, Any]:
    return _sharded().read_sharded(path) if path.suffix == ".dcp" else load_checkpoint(path)


def _say_why(chosen: Path, iteration: int, paths: list[Path]) -> None:
    """Where the run's best and last checkpoints disagree with the one chosen, say which holds what."""
    others = [p for p in paths if p != chosen and p.stem in ("ckpt_last", "ckpt_best")]
    held = [f"{p.name} holds iter {checkpoint_iteration(p)}" for p in others if checkpoint_iteration(p) != iteration]
    if held:
        log.info("continuing from %s, iter %d: the highest iteration of the run's checkpoints (%s)", chosen.name, iteration, "; ".join(held))


def clean_interrupted_saves(run_dir: Path) -> tuple[list[str], list[str]]:
    """Undo what a save killed half-way left in run_dir (call it holding the run folder's lock):
    the names of the .pt temp files removed, and of the sharded folders cleaned up or put back."""
    removed = []
    for path in run_dir.glob(TEMP_PATTERN):
        path.unlink(missing_ok=True)
        removed.append(path.name)
    sharded = _sharded().recover_interrupted_saves(run_dir) if any(run_dir.glob(".ckpt_*.dcp.*")) else []
    return sorted(removed), sharded


def keep_snapshot(run_dir: Path, iter_num: int, keep_last_k: int) -> None:
    """Keep ckpt_last as `ckpt_iter_<N>.pt` too (a hard link: no copy, and safe because
    checkpoints are only ever replaced by rename, never rewritten), and delete all but the
    newest keep_last_k such snapshots."""
    last = checkpoint_path(run_dir, "last")
    snapshot = run_dir / f"ckpt_iter_{iter_num:07d}.pt"
    try:
        snapshot.unlink(missing_ok=True)
        os.link(last, snapshot)
        for old in sorted(run_dir.glob("ckpt_iter_*.pt"))[:-keep_last_k]:
            old.unlink()
    except OSError as exc:
        raise storage_error(exc) from None


class Checkpointer:
    """Writes a training run's checkpoints and puts one back. `sharded_format` (system.strategy=fsdp)
    saves folders of shards that any number of ranks can continue; otherwise rank 0 writes one .pt
    file. `model_sharded`: the model is sharded across ranks (FSDP on several processes)."""

    def __init__(self, run_dir: Path, world: Dist, sharded_format: bool, model_sharded: bool, keep_last_k: int):
        self.run_dir, self.world = run_dir, world
        self.sharded_format, self.model_sharded, self.keep_last_k = sharded_format, model_sharded, keep_last_k

    def save(self, which: Sequence[str], model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: TrainState) -> None:
        """Write the `which` checkpoints (best, last) of the run as it is now. Call it on every rank."""
        train_state = state.state_dict()
        if self.sharded_format:
            sharded = _sharded()
            for name in which:
                sharded.save_sharded(sharded_checkpoint_path(self.run_dir, name), model, optimizer, train_state, self.world)
            if self.world.is_main and "last" in which and self.keep_last_k:
                sharded.keep_sharded_snapshot(self.run_dir, sharded_checkpoint_path(self.run_dir, "last"), state.iter_num, self.keep_last_k)
            return
        if not self.world.is_main:
            return
        whole = {**train_state, "model": model.state_dict(), "optimizer": optimizer.state_dict()}
        for name in which:
            save_checkpoint(checkpoint_path(self.run_dir, name), whole)
        if "last" in which and self.keep_last_k:
            keep_snapshot(self.run_dir, state.iter_num, self.keep_last_k)

    def restore(self, saved: dict[str, Any], model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: TrainState) -> None:
        """Put a loaded checkpoint (load_newest_valid's) back into the model, the optimizer and the
        train state. The optimizer keeps the hyperparameters it was built with: the saved groups
        carry those of the run that saved them, and a resume may change some (the config's
        RESUMABLE_KEYS)."""
        configured = [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]
        if "sharded" in saved:  # a .dcp folder, written by any number of ranks
            _sharded().load_sharded(Path(saved["sharded"]), model, optimizer)
        elif self.model_sharded:
            raise ConfigError(
                f"system.strategy=fsdp cannot continue {self.run_dir}'s single-file checkpoint on several ranks: "
                f"continue it with system.strategy=ddp, or with system.strategy=fsdp on one process (which then saves sharded checkpoints)"
            )
        else:
            try:
                model.load_state_dict(saved["model"])
            except RuntimeError:
                raise CheckpointError(f"{self.run_dir}: the checkpoint's weights do not fit its own architecture {saved['model_args']}") from None
            optimizer.load_state_dict(saved["optimizer"])
        for group, settings in zip(optimizer.param_groups, configured):
            group.update(settings)
        state.load_state_dict(saved)


def load_model(run_dir: Path, which: str, device: str) -> tuple[GPT, dict, Path]:
    """The model of a run's checkpoint (`best`, falling back to `last` where there is no best, or
    where it is damaged), in eval mode, the dataset metadata it was trained with (its tokenizer),
    and the checkpoint's path."""
    if which not in CKPT_NAMES:
        raise ConfigError(f"checkpoint={which!r} is invalid: must be best or last")
    if not run_dir.is_dir():
        raise CheckpointError(f"run_dir={str(run_dir)!r}: no such folder")
    # A single file or a sharded folder (system.strategy=fsdp); best falls back to last.
    path = newest_checkpoint(run_dir, which)
    fallback = newest_checkpoint(run_dir, "last") if which == "best" else None
    if path is None:
        path, fallback = fallback or checkpoint_path(run_dir, which), None  # missing: loading it names it
    try:
        return _load_model(path, device)
    except CheckpointError as exc:
        if fallback is None or fallback == path:
            raise
        try:
            loaded = _load_model(fallback, device)
        except CheckpointError as second:
            raise CheckpointError(f"{exc}; {second}") from None
        log.warning("%s; using %s instead", exc, fallback.name)
        return loaded


def _load_model(path: Path, device: str) -> tuple[GPT, dict, Path]:
    state = _sharded().read_sharded_whole(path) if path.suffix == ".dcp" else load_checkpoint(path, map_location="cpu")
    model_args = check_model_args(state, path)  # before GPT(...) allocates what they say
    try:
        model = GPT(GPTConfig(**model_args))
        model.load_state_dict(state["model"])
        meta = json.loads(state["dataset_meta"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        reason = next(iter(str(exc).splitlines()), "")
        raise CheckpointError(f"{path}: not a usable model checkpoint ({type(exc).__name__}: {reason})") from None
    return model.eval().to(device), meta, path
