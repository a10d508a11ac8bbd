"""Experiment trackers: Weights & Biases (`logger=wandb`) and TensorBoard (`logger=tensorboard`),
one or several at once (`logger=[wandb,tensorboard]`). Each is a Tracker: the training loop logs
the same scalars and text samples to every tracker through Trackers, and finishes them at the end.

Each library is imported only when its tracker is enabled: they cost seconds of start-up.
wandb without an account or a network logs offline into the run folder (`<run_dir>/wandb/`),
from where `wandb sync` uploads it later; training never fails because of the tracker.
TensorBoard writes event files into `<run_dir>/tensorboard/`.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Protocol

import torch
from omegaconf import DictConfig

from nanogpt.data import load_tokenizer
from nanogpt.errors import ConfigError, install_hint
from nanogpt.generation import generate_ids
from nanogpt.model import GPT
from nanogpt.system import System

log = logging.getLogger(__name__)

TENSORBOARD_DIR = "tensorboard"


class Tracker(Protocol):
    sample_tokens: int  # the length of the text sample it wants at each evaluation (0: none)

    def log(self, metrics: dict[str, Any], step: int) -> None: ...

    def log_sample(self, text: str, step: int) -> None: ...

    def finish(self, exit_code: int = 0) -> None: ...


class WandbRun:
    """One wandb run per training run; a resumed training run continues the same wandb run."""

    def __init__(self, cfg: DictConfig, config: dict[str, Any], run_dir: Path, run_id: str | None, group: str | None):
        import wandb

        mode = cfg.mode or os.environ.get("WANDB_MODE")
        if mode is None and not _logged_in(wandb):
            log.info("wandb: not logged in, logging offline to %s/wandb (upload later with `wandb sync`)", run_dir)
            mode = "offline"
        self.run = wandb.init(
            project=cfg.project,
            entity=cfg.entity,
            name=cfg.name or run_dir.name,
            notes=cfg.notes,
            tags=list(cfg.tags),
            group=group,
            config=config,
            dir=str(run_dir),
            id=run_id,
            resume="allow" if run_id else None,
            mode=mode,
            settings=wandb.Settings(silent=True),
        )
        self._wandb = wandb
        self.sample_tokens = cfg.sample_tokens
        log.info("wandb: run %s (%s mode)", self.run.id, mode or "online")

    @property
    def id(self) -> str:
        return self.run.id

    def log(self, metrics: dict[str, Any], step: int) -> None:
        self.run.log({k: v for k, v in metrics.items() if v is not None}, step=step)

    def log_sample(self, text: str, step: int) -> None:
        self.run.log({"sample": self._wandb.Html(f"<pre>{_escape(text)}</pre>", inject=False)}, step=step)

    def finish(self, exit_code: int = 0) -> None:
        self.run.finish(exit_code=exit_code)


class TensorBoardRun:
    """Event files in log_dir. A resumed training run writes a new event file beside the old ones,
    starting at purge_step: TensorBoard's readers then drop what the old files hold from that step
    on (what a killed run logged after its checkpoint), so that no step shows twice."""

    def __init__(self, cfg: DictConfig, log_dir: Path, purge_step: int):
        SummaryWriter = tensorboard_writer()
        _wait_for_a_later_second(log_dir)
        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)
        self.sample_tokens = cfg.sample_tokens
        log.info("tensorboard: logging to %s (view with `tensorboard --logdir %s`)", log_dir, log_dir.parent)

    def log(self, metrics: dict[str, Any], step: int) -> None:
        for key, value in metrics.items():
            if value is not None:
                self.writer.add_scalar(key, value, global_step=step)
        # Written out at each log line rather than every two minutes (the writer's default), so
        # that what the console showed before a kill is in the files too.
        self.writer.flush()

    def log_sample(self, text: str, step: int) -> None:
        # TensorBoard renders text as Markdown: an indented block shows it verbatim, line breaks kept.
        self.writer.add_text("sample", "\n".join("    " + line for line in text.split("\n")), global_step=step)
        self.writer.flush()

    def finish(self, exit_code: int = 0) -> None:
        self.writer.close()


def _wait_for_a_later_second(log_dir: Path) -> None:
    """TensorBoard reads a log dir's event files in name order, and the names start with the second
    each file was created in (events.out.tfevents.<seconds>.<host>.<pid>...): a file created in the
    same second as an earlier one may be read first, and then the purge would act before the stale
    steps were read. A resume started within a second of the run it continues (a test's) waits for
    the next second; one on a host whose clock is behind by more cannot be helped by waiting."""
    created = [int(p.name.split(".")[3]) for p in log_dir.glob("events.out.tfevents.*") if p.name.split(".")[3].isdigit()]
    wait = max(created, default=0) + 1 - time.time()
    if 0 < wait <= 1:
        time.sleep(wait)


def tensorboard_writer() -> type:
    """torch's SummaryWriter; a ConfigError saying how to install TensorBoard where it is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError(f"logger=tensorboard needs the tensorboard package, which is not installed: {install_hint('tensorboard')}") from None
    return SummaryWriter


class Trackers:
    """Every enabled tracker behind one Tracker: what is logged goes to each of them."""

    def __init__(self, runs: list[Tracker]):
        self.runs = runs
        # One sample per evaluation serves every tracker that wants one.
        self.sample_tokens = max((run.sample_tokens for run in runs), default=0)

    def log(self, metrics: dict[str, Any], step: int) -> None:
        for run in self.runs:
            run.log(metrics, step)

    def log_sample(self, text: str, step: int) -> None:
        for run in self.runs:
            if run.sample_tokens > 0:
                run.log_sample(text, step)

    def finish(self, exit_code: int = 0) -> None:
        for run in self.runs:
            run.finish(exit_code)


def sample_text(model: GPT, meta: dict, max_new_tokens: int, system: System) -> str:
    """A short sample for the trackers, from token 0 and a fixed seed so that the samples of
    successive evaluations differ only by what the model learnt."""
    tokenizer = load_tokenizer(meta)
    generator = torch.Generator(device=system.device).manual_seed(0)
    idx = torch.tensor([[0]], dtype=torch.long, device=system.device)
    was_training = model.training
    model.eval()
    with torch.no_grad(), system.autocast():
        out = generate_ids(model, idx, max_new_tokens, temperature=0.8, top_k=200, generator=generator, vocab_size=meta["vocab_size"])
    model.train(was_training)
    return tokenizer.decode(out[0].tolist())


def _logged_in(wandb: Any) -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return bool(wandb.api.api_key)
    except Exception:  # an unreadable ~/.netrc must not stop training
        return False


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
