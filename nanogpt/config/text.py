"""Text that must stay text in OmegaConf and in Hydra's override grammar: a prompt, a wandb run's
name or a checkpoint's saved config may hold `${...}`, which OmegaConf would otherwise resolve as
an interpolation; a folder's name may hold spaces, commas or `=`, which an override must quote."""

from __future__ import annotations

import re
import shlex
from typing import Any

from hydra.core.override_parser.types import Quote, QuotedString

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


def hydra_quoted(text: str, quote: Quote = Quote.single) -> str:
    """text as one quoted value of Hydra's override grammar that arrives in the config as text."""
    return QuotedString(text=escape_interpolations(text), quote=quote).with_quotes()


# A value Hydra reads unquoted as this very text: no grammar characters (`,` sweeps, `=`, quotes,
# brackets, spaces), and no word that it would read as another type (true, null, 1e3).
_PLAIN_VALUE = re.compile(r"[A-Za-z0-9_./:@%+-]+")
_OTHER_TYPES = re.compile(r"(?i)(true|false|null|[-+]?(\d[\d_]*\.?\d*(e[-+]?\d+)?|\.\d+|inf|nan))")


def pasteable_override(key: str, value: str) -> str:
    """`key=value` as one argument that a shell and then Hydra both read back exactly: for the
    commands we print for a user to paste (the resume command of a stopped run, say)."""
    if not _PLAIN_VALUE.fullmatch(value) or _OTHER_TYPES.fullmatch(value):
        value = hydra_quoted(value, Quote.double)
    return shlex.quote(f"{key}={value}")
