"""Optional Weights & Biases logging (`logger=wandb` or `wandb.enabled=true`).

wandb is imported only when enabled: it costs seconds of start-up. Without an account or a
network the run logs offline into the run folder (`<run_dir>/wandb/`), from where
`wandb sync` uploads it later; training never fails because of the tracker.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

log = logging.getLogger(__name__)


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


def _logged_in(wandb: Any) -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return bool(wandb.api.api_key)
    except Exception:  # an unreadable ~/.netrc must not stop training
        return False


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
