"""Free-text values (prompt, stop, wandb.name, ...) taken verbatim from the command line.

Hydra reads every `key=value` argument with its override grammar: a comma makes a sweep,
brackets a list, quotes are stripped, `true` and `1e3` become a bool and a float, and unquoted
spaces, `=`, `'` or non-ASCII text are syntax errors; OmegaConf then resolves `${...}`. For a
prompt, a stop string or a wandb run's name, notes and tags, the user means the text typed, so
`quote_free_text` rewrites each such argument, before Hydra sees it, into an override whose
quoted value Hydra and then OmegaConf turn back into exactly that text. Hydra's own records of
the command (`.hydra/config.yaml`, `overrides.yaml`) hold the value the command used.
"""

from __future__ import annotations

import re
from typing import Any

from hydra.core.override_parser.types import Quote, QuotedString

# Per primary config (the `config_name` of the command), its free-text keys: False for a key
# that takes one string, True for a list of strings, one per occurrence of `key=`.
FREE_TEXT_KEYS: dict[str, dict[str, bool]] = {
    "sample": {"prompt": False, "stop": True},
    "config": {"wandb.name": False, "wandb.notes": False, "wandb.tags": True},
}

# `key=`, `+key=` or `++key=` at the start of an argument; the value is everything after the `=`.
_OVERRIDE = re.compile(r"(?P<prefix>\+{0,2})(?P<key>[\w.]+)=")
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


def hydra_quoted(text: str) -> str:
    """text as one quoted value of Hydra's override grammar that arrives in the config as text."""
    return QuotedString(text=escape_interpolations(text), quote=Quote.single).with_quotes()


def quote_free_text(argv: list[str], config_name: str) -> list[str]:
    """argv (the command's arguments) with each free-text `key=<text>` of config_name's command
    turned into a Hydra override of exactly <text>. A list key given several times becomes one
    list override, where the first occurrence was; every other argument is left as it is."""
    keys = FREE_TEXT_KEYS.get(config_name, {})
    out: list[str] = []
    lists: dict[str, tuple[int, str, list[str]]] = {}  # key: (its index in out, prefix, texts)
    for arg in argv:
        match = _OVERRIDE.match(arg)
        if match is None or match["key"] not in keys:
            out.append(arg)
            continue
        prefix, key, text = match["prefix"], match["key"], arg[match.end() :]
        if not keys[key]:
            out.append(f"{prefix}{key}={hydra_quoted(text)}")
        elif key in lists:
            lists[key][2].append(text)
        else:
            lists[key] = (len(out), prefix, [text])
            out.append("")  # filled in below, once every occurrence is known
    for key, (index, prefix, texts) in lists.items():
        out[index] = f"{prefix}{key}=[{','.join(hydra_quoted(t) for t in texts)}]"
    return out
