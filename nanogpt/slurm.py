"""Checks made before a sweep is sent to SLURM, so that a wrong launcher setting gets one clear
line instead of a traceback from deep inside submitit after the first submission fails."""

from __future__ import annotations

import shutil
import subprocess
import sys
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class SlurmPreflight(Callback):
    """Hydra callback (conf/config.yaml): with a SLURM launcher, check that SLURM is reachable
    and that the requested partition exists before any job is submitted."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        launcher = config.hydra.launcher
        if "SlurmLauncher" not in str(launcher.get("_target_", "")):
            return
        problem = slurm_problem(launcher.get("partition"))
        if problem:
            print(f"error: {problem}", file=sys.stderr, flush=True)
            raise SystemExit(2)


def slurm_problem(partition: str | None) -> str | None:
    """Why jobs cannot be submitted, or None."""
    if shutil.which("sbatch") is None:
        return "hydra/launcher=submitit_slurm needs SLURM, but sbatch is not on PATH (use hydra/launcher=submitit_local here)"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%R"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"SLURM does not answer (sinfo: {exc})"
    if out.returncode != 0:
        return f"SLURM does not answer (sinfo: {out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.returncode})"
    partitions = sorted(set(out.stdout.split()))
    if partition is not None and partition not in partitions:
        return f"hydra.launcher.partition={partition!r} does not exist on this cluster (partitions: {', '.join(partitions) or 'none'})"
    return None
