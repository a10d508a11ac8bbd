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

from nanogpt.config.text import hydra_quoted

# Per primary config (the `config_name` of the command), its free-text keys: False for a key
# that takes one string, True for a list of strings, one per occurrence of `key=`.
FREE_TEXT_KEYS: dict[str, dict[str, bool]] = {
    "sample": {"prompt": False, "stop": True},
    "config": {"wandb.name": False, "wandb.notes": False, "wandb.tags": True},
}

# `key=`, `+key=` or `++key=` at the start of an argument; the value is everything after the `=`.
_OVERRIDE = re.compile(r"(?P<prefix>\+{0,2})(?P<key>[\w.]+)=")


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
