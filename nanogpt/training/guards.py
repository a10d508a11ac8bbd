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
from nanogpt.errors import TrainingError, clear_interrupted, interrupt


class StopRequest:
    """Turns SIGINT, SIGTERM, SIGHUP (a closed terminal or ssh session) and SIGUSR2 into a flag the
    loop checks at each step boundary, so a stop ends with a checkpoint instead of a half-finished
    step. Until the loop runs (`at_step_boundaries`), there is nothing to checkpoint and nothing
    worth finishing (preparing data, building the model): a signal then stops at once, as does a
    second Ctrl-C (Interrupted).

    Inside a submitit job (SLURM), submitit's own handlers requeue the job: SIGUSR2 (preemption
    or time limit) is handed over to them once the checkpoint is written, and SIGTERM, which
    SLURM sends before the USR2 of a preemption, only asks for a checkpoint and training goes on."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR2)

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self.at_step_boundaries = False
        self._checkpoint_only = False
        self._previous: dict[int, Any] = {}
        self._signum: int | None = None

    def _handle(self, signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        if signum == signal.SIGTERM and _in_submitit_job():
            self._checkpoint_only = True
            return
        if not self.at_step_boundaries:
            if signum == signal.SIGUSR2 and self._hand_over(signum):
                return  # submitit requeues the job, which starts this run again
            interrupt(name)
        if self.signal_name is not None and signum == signal.SIGINT:
            interrupt(name, second=True)
        self.signal_name = name
        self._signum = signum

    def requested(self, world: Dist) -> bool:
        return any_rank(self.signal_name is not None, world)

    @contextmanager
    def installed(self) -> Iterator[StopRequest]:
        clear_interrupted()  # one that an earlier run in this process took already
        self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        try:
            yield self
        finally:
            for s, handler in self._previous.items():
                signal.signal(s, handler)

    def hand_over(self) -> bool:
        """After training stopped on SIGUSR2 and saved its checkpoint, let submitit's handler (requeue
        the job, then exit) do its part; True if there was one, which then decides how the process ends."""
        return self._signum == signal.SIGUSR2 and self._hand_over(self._signum)

    def _hand_over(self, signum: int) -> bool:
        previous = self._previous.get(signum)
        if _in_submitit_job() and callable(previous):
            previous(signum, None)
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
