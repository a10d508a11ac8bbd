"""Free-text values (prompt, stop, wandb.name, ...) taken verbatim from the command line."""

from __future__ import annotations


def quote_free_text(argv: list[str], config_name: str) -> list[str]:
    # TODO(helper): quote free-text values so that Hydra passes them on verbatim.
    return argv
