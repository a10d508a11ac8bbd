"""`nanogpt-train` (and `python -m nanogpt.train`): train a GPT.

    nanogpt-train                                        # CPU quickstart: tiny Shakespeare, 4-layer model
    nanogpt-train experiment=shakespeare_char            # nanoGPT's 10.7M-parameter GPU run
    nanogpt-train init_from=resume run_dir=outputs/2026-11-25/17-03-11
    nanogpt-train experiment=finetune_shakespeare_cpu    # fine-tune OpenAI's GPT-2 (124M)
    nanogpt-train experiment=eval_gpt2                   # loss of GPT-2 on OpenWebText

Everything the run produces goes to its run folder (Hydra's output dir): `.hydra/`, `train.log`,
`metrics.jsonl`, `loss.png`, `ckpt_last.pt`, `ckpt_best.pt`; `.lock` while it trains
(nanogpt.runlock). The work is nanogpt.training's; this module is Hydra's side of it: the run
folder, sweep jobs, and how the command ends (nanogpt.errors: a run stopped by a signal exits
EXIT_STOPPED, one ended at once by a second Ctrl-C EXIT_INTERRUPTED).
"""

from __future__ import annotations

import logging
import math
import os
import signal
import sys
from pathlib import Path
from typing import NoReturn

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from nanogpt.cli import STOP_SIGNALS, leave
from nanogpt.cli.free_text import quote_free_text
from nanogpt.cli.launch import RunDirGuard, launch, run_or_exit, run_sweep_job
from nanogpt.cli.run_folders import PROCESS_START, live_runs, note_sweep_keys
from nanogpt.config import CONF_DIR
from nanogpt.config.text import pasteable_override
from nanogpt.errors import EXIT_INTERRUPTED, EXIT_STOPPED, ConfigError, Interrupted, RunStopped

log = logging.getLogger("nanogpt.train")


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> float:
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    overrides = list(hydra_cfg.overrides.task)
    sweep = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        if sweep:
            # Re-running a sweep (or SLURM requeueing one of its jobs) continues each job's run.
            group = "/".join(Path(hydra_cfg.sweep.dir).parts[-2:])
            return run_sweep_job(lambda: sweep_job(cfg, run_dir, overrides, group), run_dir)
        return run_or_exit(lambda: train(cfg, run_dir, overrides), undo=lambda: RunDirGuard.undo(run_dir, hydra_cfg.output_subdir))
    except (RunStopped, KeyboardInterrupt) as exc:
        ended_by_signal(exc, cfg, run_dir, sweep, hydra_cfg.output_subdir)


def ended_by_signal(exc: BaseException, cfg: DictConfig, run_dir: Path, sweep: bool, output_subdir: str | None) -> NoReturn:
    """How a run that a signal ended leaves its folder and the command: exit EXIT_STOPPED where a
    checkpoint is there to resume from, else EXIT_INTERRUPTED, a fresh run's folder removed."""
    for signum in (signal.SIGINT, *STOP_SIGNALS):  # ending anyway: a further signal must not break the clean-up
        signal.signal(signum, signal.SIG_IGN)
    from nanogpt.checkpoint import has_checkpoint

    kept = has_checkpoint(run_dir)
    if not sweep and cfg.init_from != "resume" and not kept:
        remove_unkept_run(run_dir, output_subdir)
    name = exc.signal_name if isinstance(exc, Interrupted) else "SIGINT"
    if isinstance(exc, Interrupted) and exc.second:
        then = f"the last checkpoint in {run_dir} is intact" if kept else "nothing was kept"
        print(f"error: interrupted; stopped at once, {then}", file=sys.stderr, flush=True)
    elif isinstance(exc, RunStopped):
        pass  # the loop's log line said where it stopped, and how to resume
    elif kept:  # a run continued from its checkpoint, stopped while it started: the checkpoint stands
        print(f"stopped by {name} while starting; the run's checkpoint is kept. Resume with: {resume_command(run_dir)}", file=sys.stderr, flush=True)
    else:
        print(f"error: interrupted by {name} before the run's first checkpoint; nothing was kept", file=sys.stderr, flush=True)
    leave(EXIT_STOPPED if kept and not (isinstance(exc, Interrupted) and exc.second) else EXIT_INTERRUPTED)


def command_name() -> str:
    """How the user started training, for the commands we print: the console script or python -m."""
    return "nanogpt-train" if Path(sys.argv[0]).name == "nanogpt-train" else "python -m nanogpt.train"


def resume_command(run_dir: Path) -> str:
    return f"{command_name()} init_from=resume {pasteable_override('run_dir', str(run_dir))}"


def train(cfg: DictConfig, run_dir: Path, overrides: list[str]) -> float:
    """One training run in the folder Hydra chose (nanogpt.cli.run_folders)."""
    from nanogpt import training
    from nanogpt.checkpoint import has_checkpoint

    if cfg.init_from == "resume" and cfg.run_dir is None:
        # The resolver chose run_dir: the newest checkpoint under outputs/ that no live run holds.
        busy = live_runs(Path("outputs").absolute())
        skipped = f"; skipped {len(busy)} run(s) still training: {', '.join(busy)}" if busy else ""
        if not has_checkpoint(run_dir):
            raise ConfigError(f"init_from=resume needs run_dir=<a run folder>: no run with a checkpoint was found under outputs/{skipped}")
        log.info("init_from=resume without run_dir: chose %s, the run with the newest checkpoint under outputs/%s", run_dir, skipped)
    return training.train(cfg, run_dir, overrides, launched_at=PROCESS_START, command=command_name())


def sweep_job(cfg: DictConfig, run_dir: Path, overrides: list[str], group: str) -> float:
    """One job of a sweep, in its own folder of the sweep: continued where it holds a checkpoint."""
    from nanogpt import training
    from nanogpt.runlock import RunFolderBusy

    try:
        return training.train(cfg, run_dir, overrides, wandb_group=group, auto_resume=True, launched_at=PROCESS_START, command=command_name())
    except RunFolderBusy as exc:
        # Another sweep's job is training in this folder: refuse without the error.txt that
        # run_sweep_job would write there, which would mark that live run as failed.
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return math.inf


def remove_unkept_run(run_dir: Path, output_subdir: str | None) -> None:
    """A fresh run stopped before its first checkpoint leaves nothing behind: remove the files it
    wrote, then Hydra's and the folder, where they were made for this command (RunDirGuard)."""
    for name in ("metrics.jsonl", "loss.png"):
        (run_dir / name).unlink(missing_ok=True)
    RunDirGuard.undo(run_dir, output_subdir)


def cli() -> None:
    """`nanogpt-train` and `python -m nanogpt.train`."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # torchrun: every rank names the run folder by rank 0's start
        from nanogpt.distributed import agree_on_start_time  # torch: only where there are ranks

        agree_on_start_time()
    note_sweep_keys(quote_free_text(sys.argv[1:], "config"))  # free text is never a sweep
    launch(main, "config")
