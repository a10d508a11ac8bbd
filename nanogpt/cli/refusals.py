"""Hydra's refusals of a command line turned into one line.

Hydra reports a bad command line (an unknown key, a wrong type, an unknown option, bad override
syntax) in several lines and exits with status 1. Inside `one_line_hydra_errors` each of these
becomes one `error: ...` line and exit status 2, like every other refusal of ours. Before Hydra
starts, the arguments are also checked for what Hydra lets through although the command cannot
use it: an unknown option of an optional group (Hydra silently skips `experiment=nope`), and keys
added with + or removed with ~ (the configs are schemas with a fixed set of keys).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import re
import shlex
import sys
import types
import typing
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, Override
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException, SearchPathException
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

from nanogpt.cli.commands import Command, command, group_options
from nanogpt.cli.help import show_value
from nanogpt.cli.hydra_compat import LEXER_PREFIX, PARSE_ERROR_PREFIX, merged_override, parse_hydra_arguments, unknown_key
from nanogpt.config import CONF_DIR
from nanogpt.config.validation import choices_text
from nanogpt.errors import EXIT_USER_ERROR, ConfigError, first_line, install_hint
from nanogpt.settings import Choice


@contextmanager
def one_line_hydra_errors(config_name: str) -> Iterator[None]:
    """Run Hydra's @hydra.main inside: the arguments are checked first, and a refusal of Hydra's
    (or of the check) is printed as one `error: ...` line on stderr, with exit status 2. Every
    other exception propagates unchanged; so do Hydra's own where the user set HYDRA_FULL_ERROR=1
    to see them in full."""
    full_error = os.environ.get("HYDRA_FULL_ERROR")
    # HYDRA_FULL_ERROR=1 makes Hydra raise its exceptions instead of printing them in several
    # lines and exiting 1 (hydra._internal.utils.run_and_report is all that reads the variable).
    os.environ["HYDRA_FULL_ERROR"] = "1"
    cmd = command(config_name)
    args: argparse.Namespace | None = None
    try:
        args = check_arguments(cmd, sys.argv[1:])
        yield
    except (ConfigError, OverrideParseException, ConfigCompositionException, SearchPathException) as exc:
        if full_error == "1" and not isinstance(exc, ConfigError):
            raise
        if args is not None and args.multirun:
            _remove_refused_sweep(cmd, args.overrides)
        print(f"error: {explain(exc, cmd)}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_USER_ERROR) from None
    finally:
        if full_error is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = full_error


def _remove_refused_sweep(cmd: Command, overrides: Sequence[str]) -> None:
    """Hydra's sweeper writes the sweep folder's multirun.yaml before it composes the jobs' configs,
    so a sweep refused then leaves a folder that holds only that file. Remove it, and the folders
    above it that this leaves empty, up to the working directory."""
    from hydra import compose, initialize_config_dir

    # Where the sweep went: the command's config with the arguments' Hydra settings only (a task
    # override may be the one refused); nanogpt.now gives the same time as in the sweep.
    settings = [override for override in overrides if override.lstrip("+~").startswith("hydra.")]
    try:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            sweep_dir = Path(compose(cmd.config_name, overrides=settings, return_hydra_config=True).hydra.sweep.dir).absolute()
    except (OverrideParseException, ConfigCompositionException):
        return  # a Hydra setting was refused: no sweep started
    if not sweep_dir.is_dir() or [path.name for path in sweep_dir.iterdir()] != ["multirun.yaml"]:
        return  # a sweep folder with jobs in it (a sweep being re-run) is left alone
    (sweep_dir / "multirun.yaml").unlink()
    cwd = Path.cwd()
    for folder in (sweep_dir, *sweep_dir.parents):
        if cwd not in folder.parents or any(folder.iterdir()):
            break
        folder.rmdir()


def check_arguments(cmd: Command, argv: Sequence[str]) -> argparse.Namespace:
    """The arguments as Hydra reads them. Refuses (ConfigError) what Hydra would accept although
    the command cannot use it; a syntax error raises Hydra's OverrideParseException, as Hydra would."""

    def refuse(message: str) -> typing.NoReturn:
        raise ConfigError(f"{message}; see {cmd.name} --help")

    args = parse_hydra_arguments(argv, refuse)
    if args.shell_completion or args.experimental_rerun:
        return args  # their "overrides" are instructions (install=bash, query=bash), not config
    for override in OverridesParser.create().parse_overrides(args.overrides):
        name = override.key_or_group
        if name == "hydra" or name.startswith(("hydra.", "hydra/")):
            continue  # Hydra's settings: Hydra checks them
        if name in cmd.groups:
            _check_group_choice(cmd, override)
        elif override.is_delete():
            if name in cmd.keys:
                raise ConfigError(f"~{name}: a key cannot be removed (the command reads every key); set it instead: {name}=...")
            raise ConfigError(_unknown_key(cmd, name))
        elif override.is_add() or override.is_force_add():
            if name not in cmd.keys:
                raise ConfigError(_unknown_key(cmd, name, adding=True))
            if override.is_add():
                raise ConfigError(f"{name} is already a config key; set it without the +: {override.input_line.lstrip('+')}")
    return args


def _check_group_choice(cmd: Command, override: Override) -> None:
    group, value = override.key_or_group, override.value()
    options = group_options(group)
    if override.is_delete():
        if group not in cmd.optional:
            raise ConfigError(f"~{group}: {cmd.name} needs a {group}; choose one instead: {', '.join(options)}")
        return
    if isinstance(value, ChoiceSweep):
        chosen = list(override.sweep_iterator())
    elif override.is_sweep_override():
        return  # glob() picks among the existing options only
    else:
        chosen = value if isinstance(value, list) else [value]
    for option in chosen:
        if option is None and group not in cmd.optional:
            raise ConfigError(f"{group}=null: {cmd.name} needs a {group}; the options are {', '.join(options)}")
        if option is not None and str(option) not in options:
            raise ConfigError(_unknown_option(group, str(option), options))


# Options of Hydra's groups that come from plugins outside the dependencies (hparams_search=optuna
# needs the first), and the package and extra of pyproject.toml that install each.
PLUGIN_EXTRAS = {"hydra/sweeper/optuna": ("hydra-optuna-sweeper", "sweep"), "hydra/launcher/joblib": ("hydra-joblib-launcher", "sweep")}


def explain(exc: Exception, cmd: Command) -> str:
    """The one line (without `error: `) that says what was wrong with the command line."""
    if isinstance(exc, ConfigError):
        return str(exc)
    if isinstance(exc, OverrideParseException):
        return _bad_syntax(exc.override, exc.message, cmd)
    if isinstance(exc, MissingConfigException) and exc.missing_cfg_file in PLUGIN_EXTRAS:
        package, extra = PLUGIN_EXTRAS[exc.missing_cfg_file]
        group, _, option = exc.missing_cfg_file.rpartition("/")
        return f"{group}={option} needs Hydra's {package} plugin, which is not installed: {install_hint(extra)}"
    if isinstance(exc, MissingConfigException) and exc.missing_cfg_file and "/" in exc.missing_cfg_file:
        group, _, option = exc.missing_cfg_file.rpartition("/")
        return _unknown_option(group, option, list(exc.options or group_options(group)))
    headline, cause = first_line(exc), exc.__cause__
    unknown = unknown_key(headline)
    if unknown or isinstance(cause, (ConfigKeyError, ConfigAttributeError)):
        key = unknown or str(getattr(cause, "full_key", ""))
        # The node OmegaConf names is the key's parent only where the whole key was found wanting.
        parent_type = getattr(cause, "object_type", None) if str(getattr(cause, "full_key", "")) == key else None
        return _unknown_key(cmd, key, parent_type)
    if isinstance(cause, ValidationError):
        return _wrong_type(cmd, merged_override(headline), cause)
    return headline.rstrip(".") + (f" ({first_line(cause)})" if cause is not None else "")


def _unknown_key(cmd: Command, key: str, parent_type: Any = None, adding: bool = False) -> str:
    """`<key> is not a config key; did you mean <the closest key>?`, or where none is close, the
    keys beside it (or how to see every key)."""
    kind = "config group" if "/" in key and "." not in key else "config key"
    parent, _, leaf = key.rpartition(".")
    siblings = cmd.children(parent)
    if dataclasses.is_dataclass(parent_type) and parent:
        siblings |= {field.name for field in dataclasses.fields(parent_type)}  # e.g. a launcher's keys
    head = f"{key} is not a {kind}" + (", and the config takes no new keys" if adding else "")
    if siblings:
        close = difflib.get_close_matches(leaf, sorted(siblings), n=1, cutoff=0.6)
        suggestion = f"{parent}.{close[0]}" if close and parent else (close[0] if close else None)
        if suggestion is None and not parent:
            # A group's key written bare (learning_rate=1e-3): the key of that name, or a close one, in a group.
            nested = sorted(k for k in cmd.keys if "." in k and not k.startswith("hydra."))
            leaves = {k.rpartition(".")[2]: k for k in reversed(nested)}  # the first group's, where several have one
            close = difflib.get_close_matches(leaf, sorted(leaves), n=1, cutoff=0.8)
            suggestion = leaves[close[0]] if close else None
    else:  # the parent is unknown too (a typo in it): compare the whole key
        close = difflib.get_close_matches(key, sorted(cmd.keys), n=1, cutoff=0.6)
        suggestion = close[0] if close else None
    if suggestion:
        return f"{head}; did you mean {suggestion}?"
    if parent and siblings:
        return f"{head}; the keys of {parent} are {', '.join(sorted(siblings))}"
    return f"{head}; see every key with {cmd.name} --cfg job"


def _unknown_option(group: str, option: str, options: Sequence[str]) -> str:
    close = difflib.get_close_matches(option, options, n=1, cutoff=0.6)
    guess = f"; did you mean {group}={close[0]}?" if close else ""
    return f"{group}={option}: no such {group}; the options are {', '.join(options)}{guess}"


def _expected(kind: Any) -> str | None:
    """What a value of a schema type must be, in words."""
    args = typing.get_args(kind)
    if typing.get_origin(kind) in (typing.Union, types.UnionType) and type(None) in args:  # Optional[X], X | None
        inner = [a for a in args if a is not type(None)]
        text = _expected(inner[0]) if len(inner) == 1 else None
        return f"{text} or null" if text else None
    if kind is bool:
        return "true or false"
    if kind is int:
        return "an integer"
    if kind is float:
        return "a number"
    if kind is str:
        return "a string"
    if typing.get_origin(kind) in (list, tuple) or kind in (list, tuple):
        return "a list, e.g. [a,b]"
    if typing.get_origin(kind) is dict or kind is dict:
        return "a mapping, e.g. {a:1}"
    if isinstance(kind, type) and issubclass(kind, Choice):
        return choices_text(kind)
    return None


# OmegaConf's wording of a type mismatch, for keys whose schema type is not known here.
_OMEGACONF_TYPES = {
    "to Integer": "an integer",
    "to Float": "a number",
    "valid bool": "true or false",
    "ListConfig": "a list, e.g. [a,b]",
    "to string": "a string",
}


def _wrong_type(cmd: Command, override_text: str | None, cause: ValidationError) -> str:
    """`<key>=<value> is invalid: must be <type>`, the value as the command line gave it."""
    key = str(cause.full_key)
    expected = _expected(cmd.keys.get(key)) or next((t for words, t in _OMEGACONF_TYPES.items() if words in str(cause)), None)
    rule = f"must be {expected}" if expected else first_line(cause)
    if override_text is not None:
        override = OverridesParser.create().parse_override(override_text)
        if override.key_or_group == key:
            value = override.value()
            shown = repr(value) if isinstance(value, str) else show_value(value)  # as config.validate_* show values
            return f"{key}={shown} is invalid: {rule}"
        return f"{override_text}: {key} {rule}"
    return f"{key} is invalid: {rule}"


def _bad_syntax(argument: str, message: str, cmd: Command) -> str:
    """Which argument Hydra could not read, why, and how to write it."""
    if "=" not in argument and not argument.startswith("~"):
        return f"{argument!r} is not an override: write KEY=VALUE or GROUP=OPTION (see {cmd.name} --help)"
    lines = [line for line in message.splitlines() if line.strip() and not line.startswith("See https://")]
    if lines[0].startswith(LEXER_PREFIX) and len(lines) > 1:
        at = len(lines[1]) - len(LEXER_PREFIX) - 1  # the second line is a caret under the character
        reason = f"unexpected {argument[at]!r}" if 0 <= at < len(argument) else ""
    elif lines[0].startswith(PARSE_ERROR_PREFIX):
        reason = lines[1] if len(lines) > 1 else ""
    else:
        reason = lines[0]
    reason = re.sub(r" expecting .*", "", reason.strip())  # the grammar's token names help nobody
    what = f"cannot read the argument {argument!r}" + (f" ({reason})" if reason else "")
    key, _, value = argument.partition("=")
    if not re.fullmatch(r"[+~]{0,2}[\w.@/-]+", key):
        return f"{what}; a key is made of letters, digits and _ . / - @"
    quoted = shlex.quote(f'{key}="' + value.replace("\\", "\\\\").replace('"', '\\"') + '"')
    return f"{what}; quote a value that holds ()[]{{}},=:'\" or spaces for Hydra, inside the shell's quotes: {quoted}"
