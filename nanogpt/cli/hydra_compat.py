"""The places where the commands lean on what Hydra does not promise: its argument parser (a
private function) and the wording of three of its error messages. Each is used only through this
module, and tests/test_hydra_compat.py provokes Hydra into each of them, so that a Hydra upgrade
that changes one fails there, loudly, rather than turning a one-line refusal into a traceback.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Sequence
from typing import NoReturn

# Hydra refuses an override of a key that the config does not have with "Could not override
# '<key>'." (its ConfigCompositionException), and one whose value does not fit the key's type
# with "Error merging override <key>=<value>" (the ValidationError as its cause).
_UNKNOWN_KEY = re.compile(r"Could not override '(.+?)'")
_MERGING = re.compile(r"Error merging override (.+)")
# How Hydra's override parser starts the message of a character its grammar has no place for
# (the next line holds a caret under it), and the message of any other parse error.
LEXER_PREFIX = "LexerNoViableAltException: "
PARSE_ERROR_PREFIX = "Error parsing override"


def parse_hydra_arguments(argv: Sequence[str], refuse: Callable[[str], NoReturn]) -> argparse.Namespace:
    """The command line as @hydra.main reads it (its flags: -m, --cfg, -sc, ...; the rest are
    overrides), parsed by Hydra's own parser; refuse(message) instead of argparse's usage text
    and exit status 2."""
    from hydra._internal.utils import get_args_parser  # private: Hydra exports no parser

    parser = get_args_parser()
    parser.error = refuse  # type: ignore[method-assign]
    return parser.parse_args(list(argv))


def unknown_key(headline: str) -> str | None:
    """The key of Hydra's "Could not override '<key>'" message, else None."""
    match = _UNKNOWN_KEY.match(headline)
    return match[1] if match else None


def merged_override(headline: str) -> str | None:
    """The override of Hydra's "Error merging override <override>" message, else None."""
    match = _MERGING.match(headline)
    return match[1] if match else None
