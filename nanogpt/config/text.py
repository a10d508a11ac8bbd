"""Text that must stay text in OmegaConf: a prompt, a wandb run's name or a checkpoint's saved
config may hold `${...}`, which OmegaConf would otherwise resolve as an interpolation."""

from __future__ import annotations

import re
from typing import Any

# `${`, with the backslashes right before it: OmegaConf reads 2n+1 backslashes and `${` as n
# backslashes and a literal `${`.
_INTERPOLATION = re.compile(r"(\\*)\$\{")


def escape_interpolations(text: str) -> str:
    """text written for OmegaConf, which reads it back as text: every `${` stays literal (never an
    interpolation), and so do the backslashes before it. Text without `${` is returned as is."""
    return _INTERPOLATION.sub(lambda m: "\\" * (2 * len(m[1]) + 1) + "${", text)


def as_text(value: Any) -> Any:
    """value (plain data: a string, or dicts and lists of them, such as a checkpoint's resolved
    config) with every string escaped, so that OmegaConf reads each back as the same text."""
    if isinstance(value, str):
        return escape_interpolations(value)
    if isinstance(value, dict):
        return {key: as_text(item) for key, item in value.items()}
    if isinstance(value, list):
        return [as_text(item) for item in value]
    return value
