"""Checks made before a sweep is sent to SLURM, so that a wrong launcher setting gets one clear
line instead of a traceback from deep inside submitit after the first submission fails, or a job
that waits in the queue only to fail when it starts."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections import Counter
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from nanogpt.cli.run_folders import SWEEP_KEYS_ENV
from nanogpt.errors import EXIT_USER_ERROR


class SlurmPreflight(Callback):
    """Hydra callback (conf/config.yaml): with a SLURM launcher, check before any job is submitted
    that its nodes and tasks can form one DDP group for the run, that SLURM is reachable, and that
    the requested partition exists and has the nodes."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        launcher = config.hydra.launcher
        if "SlurmLauncher" not in str(launcher.get("_target_", "")):
            return
        problem = task_problem(config) or slurm_problem(launcher.get("partition"), launcher.get("nodes", 1))
        if problem:
            print(f"error: {problem}", file=sys.stderr, flush=True)
            raise SystemExit(EXIT_USER_ERROR)


def task_problem(config: DictConfig) -> str | None:
    """Why the launcher's nodes x tasks_per_node tasks cannot train this run as one DDP group (one
    task per GPU, each running gradient_accumulation_steps / world size micro-steps), or None."""
    launcher = config.hydra.launcher
    nodes, tasks, gpus = launcher.get("nodes", 1), launcher.get("tasks_per_node", 1), launcher.get("gpus_per_node")
    for key, value in (("nodes", nodes), ("tasks_per_node", tasks)):
        if value < 1:
            return f"hydra.launcher.{key}={value} is invalid: must be at least 1"
    if gpus and tasks != gpus:
        return (
            f"hydra.launcher.tasks_per_node={tasks} does not match hydra.launcher.gpus_per_node={gpus}: "
            f"training runs one task per GPU; set both to the number of GPUs a node has"
        )
    # A swept value (or a swept experiment, which may set it) is each job's own, checked there.
    swept = set(os.environ.get(SWEEP_KEYS_ENV, "").split(",")) | set(config.hydra.sweeper.get("params") or {})
    world, steps = nodes * tasks, config.get("gradient_accumulation_steps", 1)
    if not swept & {"gradient_accumulation_steps", "experiment"} and steps % world:
        return (
            f"gradient_accumulation_steps={steps} is invalid: must be divisible by the world size {world} "
            f"(hydra.launcher.nodes={nodes} x hydra.launcher.tasks_per_node={tasks}); set it to a multiple of {world}"
        )
    return None


def slurm_problem(partition: str | None, nodes: int = 1) -> str | None:
    """Why jobs of `nodes` nodes cannot be submitted to `partition` (None: the default one), or None."""
    if shutil.which("sbatch") is None:
        return "hydra/launcher=submitit_slurm needs SLURM, but sbatch is not on PATH (use hydra/launcher=submitit_local here)"
    try:
        # One line per partition and node state: its name (a * marks the default) and node count.
        out = subprocess.run(["sinfo", "-h", "-o", "%P %D"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"SLURM does not answer (sinfo: {exc})"
    if out.returncode != 0:
        return f"SLURM does not answer (sinfo: {out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.returncode})"
    sizes: Counter[str] = Counter()
    default = None
    for name, count in (line.split() for line in out.stdout.splitlines() if line.strip()):
        if name.endswith("*"):
            name = default = name[:-1]
        sizes[name] += int(count)
    partitions = sorted(sizes)
    if partition is not None and partition not in partitions:
        return f"hydra.launcher.partition={partition!r} does not exist on this cluster (partitions: {', '.join(partitions) or 'none'})"
    target = partition or default
    if target is not None and nodes > sizes[target]:
        # sbatch would refuse the job (or, without EnforcePartLimits, queue it forever).
        return (
            f"hydra.launcher.nodes={nodes} is more than partition {target!r} has ({sizes[target]}); "
            f"ask for at most {sizes[target]}, or choose a larger partition with hydra.launcher.partition"
        )
    return None
