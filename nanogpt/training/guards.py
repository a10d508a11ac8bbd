"""What watches a training run from beside the loop: stop signals, turned into a checkpoint at the
next step boundary, and the gradients' health (a NaN or infinite loss, clipped steps)."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from nanogpt.checkpoint import newest_checkpoint
from nanogpt.distributed import Dist, any_rank
from nanogpt.errors import TrainingError


class StopRequest:
    """Turns SIGINT, SIGTERM and SIGUSR2 into a flag the loop checks at each step boundary, so a
    stop ends with a checkpoint instead of a half-finished step. A second Ctrl-C stops at once.

    Inside a submitit job (SLURM), submitit's own handlers requeue the job: SIGUSR2 (preemption
    or time limit) is handed over to them once the checkpoint is written, and SIGTERM, which
    SLURM sends before the USR2 of a preemption, only asks for a checkpoint and training goes on."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._checkpoint_only = False
        self._previous: dict[int, Any] = {}
        self._signum: int | None = None

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.signal_name is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if signum == signal.SIGTERM and _in_submitit_job():
            self._checkpoint_only = True
            return
        self.signal_name = signal.Signals(signum).name
        self._signum = signum

    def requested(self, world: Dist) -> bool:
        return any_rank(self.signal_name is not None, world)

    @contextmanager
    def installed(self) -> Iterator[StopRequest]:
        self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        try:
            yield self
        finally:
            for s, handler in self._previous.items():
                signal.signal(s, handler)

    def hand_over(self) -> bool:
        """After training stopped on SIGUSR2 and saved its checkpoint, let the handler that was
        there before (submitit's: requeue the job, then exit) do its part; True if there was one,
        which then decides how the process ends."""
        previous = self._previous.get(self._signum) if self._signum == signal.SIGUSR2 else None
        if callable(previous):
            previous(self._signum, None)
            return True
        return False


def _in_submitit_job() -> bool:
    return "SUBMITIT_EXECUTOR" in os.environ or "SUBMITIT_LOCAL_JOB_ID" in os.environ


class GradientHealth:
    """Watches every step for a non-finite loss and counts clipped steps, on the device, so
    that only the log line (which syncs anyway) pays for reading them."""

    def __init__(self, device: torch.device, world: Dist):
        self.device, self.world = device, world
        self._reset()

    def _reset(self) -> None:
        self.nonfinite = torch.zeros((), dtype=torch.bool, device=self.device)
        self.clipped = torch.zeros((), device=self.device)
        self.steps = 0
        self.grad_norm = torch.zeros((), device=self.device)

    def update(self, loss: torch.Tensor, grad_norm: torch.Tensor, grad_clip: float) -> None:
        self.nonfinite |= ~torch.isfinite(loss.detach())
        if grad_clip > 0:
            self.clipped += (grad_norm > grad_clip).float()
        self.grad_norm = grad_norm.detach()
        self.steps += 1

    def read(self, iter_num: int, run_dir: Path) -> dict[str, float]:
        """Grad norm and the fraction of clipped steps since the last read; raises TrainingError
        if any loss since then was NaN or infinite."""
        if any_rank(bool(self.nonfinite.item()), self.world):
            raise diverged(iter_num, "a training loss that is NaN or infinite", run_dir)
        stats = {"grad_norm": self.grad_norm.item(), "clip_fraction": self.clipped.item() / max(1, self.steps)}
        self._reset()
        return stats


def diverged(iter_num: int, what: str, run_dir: Path) -> TrainingError:
    """The error that ends a run whose loss went NaN or infinite: where it stopped, what is kept,
    and what to change."""
    last = newest_checkpoint(run_dir, "last")
    kept = f"the last good checkpoint is kept in {last}" if last is not None else "no checkpoint was written"
    return TrainingError(
        f"training diverged by iter {iter_num} ({what}); stopped, {kept}. "
        f"Lower optimizer.learning_rate, raise optimizer.warmup_iters or set optimizer.grad_clip, then resume or restart"
    )
