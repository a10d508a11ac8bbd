"""The resolvers that name a command's folders (conf/config.yaml): a new run's timestamped folder
or the run being resumed, where Hydra writes its config copy and log, and each sweep job's
folder, named by the values it sweeps; and the choice of the run that `init_from=resume` without
a run_dir continues.

OmegaConf calls these while Hydra composes; they import torch (through nanogpt.distributed and
nanogpt.checkpoint) only once called, so that tab completion, which registers them, never loads it."""

from __future__ import annotations

import hashlib
import os
import re
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from nanogpt.runlock import LOCK_NAME, holder

# Taken when the command's module is imported (nanogpt.cli.train imports this one), before Hydra
# creates the run folder: the folder's name, and the start record's start-up time.
PROCESS_START = time.time()


def resolve_run_dir(init_from: str, run_dir: str | None, new_dir: str) -> str:
    """Hydra's run folder (resolver `nanogpt.run_dir`): the run being resumed, else a new one.
    Resuming without run_dir picks the most recent run under outputs/. Under torchrun rank 0
    chooses, and the other ranks, on every node, take its folder (nanogpt.distributed.rank0_path)."""
    from nanogpt.distributed import rank0_path

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
    new run in a folder that holds a finished one (refused by nanogpt.training.run)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from nanogpt.checkpoint import has_checkpoint
    from nanogpt.distributed import env_rank

    if env_rank() != 0:
        return None
    hydra = HydraConfig.get() if HydraConfig.initialized() else None
    output_dir = OmegaConf.select(hydra, "runtime.output_dir", default=None) if hydra is not None else None
    if output_dir is not None and holder(Path(output_dir)) is not None:
        return None
    if init_from != "resume" and output_dir is not None and hydra.mode == RunMode.RUN and has_checkpoint(Path(output_dir)):
        # A new run in a folder that holds one is refused too (nanogpt.training.run): that run's config
        # must stay, or its own checkpoint no longer matches it. A sweep's job continues its run.
        return None
    return ".hydra" if init_from != "resume" else f".hydra/resume-{timestamp}"


def log_file(path: str) -> str:
    """Hydra's log file (resolver `nanogpt.log_file`): rank 0's; other ranks log nowhere."""
    from nanogpt.distributed import env_rank

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


# A float written with more digits than a folder name needs (0.0003342330176505329, 1.234567e-05).
_LONG_FLOAT = re.compile(r"(?<![\w.])-?\d+\.\d{5,}(?:e-?\d+)?|(?<![\w.])-?\d\.\d{4,}e-?\d+")


def job_dirname(num: int, task_overrides: Any, numbered: bool = False) -> str:
    """A sweep job's folder name (resolver `nanogpt.job_dirname`): the values of its swept keys,
    e.g. "model=mini,optimizer.learning_rate=1e-3", made safe as one path component. With
    `numbered` (an Optuna search: conf/hparams_search/) it starts with the job's number, as in
    "3_model.n_layer=4": two trials may draw the same values, and each needs a folder of its own."""
    swept = set(filter(None, os.environ.get(SWEEP_KEYS_ENV, "").split(",")))
    items = sorted(str(o) for o in task_overrides if str(o).split("=", 1)[0].lstrip("+~") in swept)
    name = ",".join(items).replace("/", "_").replace("\\", "_").strip(".")
    if numbered:  # Optuna draws floats to the last digit: 4 significant ones name a trial (its number tells it apart)
        name = _LONG_FLOAT.sub(lambda m: f"{float(m[0]):.4g}", name)
    if not name:
        return str(num)
    if len(name) > 150:
        return f"{num}_{name[:120]}_{hashlib.sha1(name.encode()).hexdigest()[:8]}"
    return f"{num}_{name}" if numbered else name


def find_latest_run(outputs_root: Path) -> Path | None:
    """The run folder under outputs_root whose checkpoint was written most recently, among those
    that no live process is training (see live_runs)."""
    from nanogpt.checkpoint import CKPT_NAMES, SHARDED_NAMES

    names = (*CKPT_NAMES.values(), *SHARDED_NAMES.values())
    candidates = [p for name in names for p in outputs_root.glob(f"**/{name}") if holder(p.parent) is None]
    if not candidates:
        return None
    return max(candidates, key=lambda p: p.stat().st_mtime).parent


def live_runs(outputs_root: Path) -> list[str]:
    """ "<folder> (pid P on host H)" for each run folder under outputs_root that a live process holds."""
    found = []
    for lock in sorted(outputs_root.glob(f"**/{LOCK_NAME}")):
        who = holder(lock.parent)
        if who is not None:
            found.append(f"{lock.parent} ({who})")
    return found
