"""The commands' --help, and Hydra's refusals turned into one line.

`nanogpt-train --help` (and -h, for every Hydra command) prints our help instead of Hydra's. It
is read from conf/ each time: the command's config groups with their options, its top-level
keys with their defaults, then examples, where the outputs go, and how to reach Hydra's own help
and tab completion. Hydra's help would also list the schemas and says nothing about the command.

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
import enum
import functools
import inspect
import os
import re
import shlex
import sys
import textwrap
import types
import typing
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, Override
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException, SearchPathException
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

from nanogpt.cli import COMMANDS, EXIT_USER_ERROR
from nanogpt.config import CONF_DIR, SCHEMAS
from nanogpt.errors import ConfigError, first_line

HELP_FLAGS = ("-h", "--help")
WIDTH = 100


@dataclasses.dataclass(frozen=True)
class CommandText:
    """The prose of one command's --help; everything else in it is read from conf/."""

    summary: str
    examples: tuple[tuple[str, str], ...]  # (the arguments after the command's name, what it does)
    outputs: str
    sweeps: bool = False  # the command is meant for -m, so Hydra's launchers are listed too


TEXTS = {
    "config": CommandText(
        summary="Train a GPT: from scratch, from a run's checkpoint (init_from=resume) or from GPT-2's "
        "weights (init_from=gpt2, gpt2-medium, gpt2-large, gpt2-xl, or hf:<a local GPT-2 folder>).",
        examples=(
            ("", "the CPU quickstart (tiny Shakespeare)"),
            ("model=small max_iters=500", "choose an option, set a key"),
            ("experiment=shakespeare_char", "nanoGPT's 10.7M-parameter GPU run"),
            ("init_from=resume", "continue the most recent run"),
            ("init_from=gpt2 dataset=shakespeare eval_only=true", "GPT-2's loss on Shakespeare"),
            ("-m optimizer.learning_rate=1e-3,6e-4", "a sweep: one run per value"),
            ("--cfg job model=small", "print the config, run nothing"),
        ),
        outputs="Each run gets its own folder, outputs/<date>/<time>/ (choose another with hydra.run.dir=...; "
        "init_from=resume continues in the run's folder): .hydra/ (the config and the overrides), train.log, "
        "metrics.jsonl, loss.png, ckpt_best.pt and ckpt_last.pt. A sweep (-m) puts each run in a folder of "
        "multirun/<date>/<time>/ named by its swept values, with summary.md, summary.csv and sweep.png beside them.",
        sweeps=True,
    ),
    "sample": CommandText(
        summary="Print text sampled from a trained run's checkpoint.",
        examples=(
            ('run_dir=outputs/2026-11-25/17-03-11 prompt="ROMEO:" num_samples=2', ""),
            ("run_dir=outputs/2026-11-25/17-03-11 temperature=0.7 top_k=50 max_new_tokens=300", ""),
            ("run_dir=outputs/2026-11-25/17-03-11 prompt=FILE:prompt.txt stream=true", ""),
        ),
        outputs="The samples, on stdout. Nothing is written to disk: no run folder, no log file.",
    ),
    "prepare": CommandText(
        summary="Prepare a dataset (tokenize it into train.bin and val.bin); training does this by itself on first use.",
        examples=(
            ("dataset=shakespeare_char", ""),
            ("dataset=shakespeare_char dataset.source=/path/to/input.txt force=true", ""),
            ("dataset=text dataset.name=mytext dataset.source=corpus/ dataset.tokenizer=gpt2", ""),
            ("dataset=text dataset.name=mybpe dataset.source=corpus/ dataset.tokenizer=bpe dataset.vocab_size=16000", ""),
            ("dataset=hf dataset.name=fineweb dataset.hf_path=HuggingFaceFW/fineweb-edu dataset.hf_config=sample-10BT", ""),
        ),
        outputs="Only the prepared dataset, in <dataset.data_dir>/<dataset.name>/ (data/shakespeare_char/ by default): "
        "train.bin, val.bin, meta.json and, for a BPE of its own or a tokenizer.json, tokenizer.json. "
        "No run folder, no log file.",
    ),
    "export": CommandText(
        summary="Write a run's model as a Hugging Face GPT-2 folder (transformers' GPT2LMHeadModel loads it).",
        examples=(
            ("run_dir=outputs/2026-11-25/17-03-11 out=my-model", ""),
            ("run_dir=outputs/2026-11-25/17-03-11 out=my-model checkpoint=last overwrite=true", ""),
        ),
        outputs="Only the folder that out= names: config.json, model.safetensors and the tokenizer's files "
        "(init_from=hf:<folder> trains from it again). No run folder, no log file.",
    ),
    "eval": CommandText(
        summary="Evaluate a run's checkpoint on benchmarks of EleutherAI's lm-evaluation-harness (pip install -e \".[eval]\").",
        examples=(
            ("run_dir=outputs/2026-11-25/17-03-11 tasks=hellaswag,arc_easy", ""),
            ("run_dir=outputs/2026-11-25/17-03-11 tasks=hellaswag limit=200 batch_size=32", "200 documents"),
            ("run_dir=outputs/2026-11-25/17-03-11 tasks=my_task include_path=my_tasks/", "task YAMLs of your own"),
        ),
        outputs="<run_dir>/eval/<task>.json per task (its metrics, documents, shots and lm_eval's task config) "
        "and a table on stdout. No run folder of its own, no log file.",
    ),
}


@dataclasses.dataclass(frozen=True)
class Command:
    """What the help and the error messages know about one command, read from its primary config
    (conf/<config_name>.yaml) and the schemas."""

    config_name: str
    name: str  # the console script
    groups: dict[str, str | None]  # config group: its default option (None: none unless chosen)
    optional: frozenset[str]  # the groups that may be left out (`optional` in the defaults list)
    keys: dict[str, Any]  # every dotted key, Hydra's included: its type
    defaults: dict[str, Any]  # top-level key: its default (the schema's, or the YAML file's)
    comments: dict[str, str]  # top-level key: the comment beside it in the schema, else in the YAML file

    def children(self, parent: str) -> set[str]:
        """The names directly under a dotted key ("" for the top level, where groups count too)."""
        if not parent:
            return {key for key in self.keys if "." not in key} | set(self.groups) | HYDRA_GROUPS
        prefix = parent + "."
        return {key[len(prefix) :] for key in self.keys if key.startswith(prefix) and "." not in key[len(prefix) :]}


def _hydra_defaults() -> dict[str, str | None]:
    """Hydra's own config groups (launcher, sweeper, job_logging, ...) and their defaults."""
    from hydra.conf import HydraConf

    field = next(f for f in dataclasses.fields(HydraConf) if f.name == "defaults")
    return {group: option for entry in field.default_factory() for group, option in entry.items()}


HYDRA_GROUPS = frozenset(f"hydra/{group}" for group in _hydra_defaults())


def _schema_keys(schema: type, prefix: str = "") -> dict[str, Any]:
    """Every dotted key of a schema dataclass and its type; a nested dataclass is a key of its own
    and so are its keys."""
    keys: dict[str, Any] = {}
    hints = typing.get_type_hints(schema)
    for field in dataclasses.fields(schema):
        key, kind = prefix + field.name, hints[field.name]
        keys[key] = kind
        if dataclasses.is_dataclass(kind):
            keys.update(_schema_keys(kind, key + "."))
    return keys


def _field_default(field: dataclasses.Field) -> Any:
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


# A `key: value  # comment` line of a YAML file or `key: type = default  # comment` of a dataclass.
_COMMENTED_LINE = re.compile(r"""^(?P<indent>\s*)(?P<key>\w+):(?:"[^"]*"|'[^']*'|[^#"'])*?\s#\s*(?P<comment>.*)$""")


def _comments(text: str, top_level_only: bool) -> dict[str, str]:
    """The comment beside each key in a YAML file or a dataclass's source."""
    matches = filter(None, map(_COMMENTED_LINE.match, text.splitlines()))
    return {m["key"]: m["comment"] for m in matches if not (top_level_only and m["indent"])}


@functools.lru_cache(maxsize=None)
def command(config_name: str) -> Command:
    """The command whose primary config is conf/<config_name>.yaml, as its defaults list, its
    schema (the defaults list's *_schema entry) and the file's own values describe it."""
    path = Path(CONF_DIR) / f"{config_name}.yaml"
    text = path.read_text()
    primary = yaml.safe_load(text)
    schema: type | None = None
    groups: dict[str, str | None] = {}
    optional: set[str] = set()
    for entry in primary.get("defaults", []):
        if isinstance(entry, str):
            schema = SCHEMAS.get(entry, schema)
            continue
        ((spec, option),) = entry.items()
        *flags, group = spec.split()
        group = group.split("@")[0].lstrip("/")
        if "override" in flags or group.startswith("hydra/"):
            continue  # settings of Hydra's own groups, not choices offered to the user
        groups[group] = option
        if "optional" in flags:
            optional.add(group)
    if schema is None:
        raise ConfigError(f"{path} names no schema in its defaults list")
    from hydra.conf import HydraConf

    keys = _schema_keys(schema) | {"hydra": HydraConf} | _schema_keys(HydraConf, "hydra.")
    defaults = {f.name: _field_default(f) for f in dataclasses.fields(schema) if not dataclasses.is_dataclass(keys[f.name])}
    defaults.update({key: value for key, value in primary.items() if key in defaults})
    # The schema's comment says what a key is for; the YAML file's, beside the value it sets, comes second.
    comments = _comments(text, top_level_only=True) | _comments(inspect.getsource(schema), top_level_only=False)
    comments = {key: comment for key, comment in comments.items() if key in defaults}
    return Command(config_name, COMMANDS[config_name], groups, frozenset(optional), keys, defaults, comments)


def group_options(group: str) -> list[str]:
    """The options of a config group: its YAML files in conf/ and, for Hydra's own groups
    (hydra/launcher, ...), the configs that Hydra and its plugins store."""
    names = {path.stem for path in (Path(CONF_DIR) / group).glob("*.yaml")}
    if group.startswith("hydra/"):
        from hydra.core.config_store import ConfigStore
        from hydra.core.plugins import Plugins

        Plugins.instance()  # discovering the plugins (submitit, ...) stores their configs
        try:
            names.update(name.removesuffix(".yaml") for name in ConfigStore.instance().list(group))
        except OSError:  # a group Hydra stores nothing in
            pass
    return sorted(names)


# --help


def wants_help(argv: Sequence[str]) -> bool:
    """Whether the arguments ask for the command's help, wherever -h or --help stands among them."""
    return any(arg in HELP_FLAGS for arg in argv)


def _show(value: Any) -> str:
    """A value as it is written on the command line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ",".join(_show(v) for v in value) + "]"
    if isinstance(value, str) and (not value or not re.fullmatch(r"[\w./:+-]+", value)):
        return '"' + value.encode("unicode_escape").decode().replace('"', '\\"') + '"'
    return str(value)


def _fill(text: str, indent: str = "", first: str | None = None) -> str:
    """text wrapped to WIDTH, never inside a word with a hyphen (nanogpt-train, gpt2-xl)."""
    return textwrap.fill(text, WIDTH, initial_indent=indent if first is None else first, subsequent_indent=indent, break_on_hyphens=False)


def _section(title: str, rows: Sequence[tuple[str, str]], indent: int = 2) -> str:
    """A titled block of `name  text` rows, the text wrapped beside the names."""
    column = indent + max(len(name) for name, _ in rows) + 2
    lines = [title]
    for name, text in rows:
        first = " " * indent + name.ljust(column - indent)
        lines.append(_fill(text, " " * column, first) if text else first.rstrip())
    return "\n".join(lines)


def command_help(config_name: str) -> str:
    """The help of the command whose primary config is conf/<config_name>.yaml."""
    cmd, text = command(config_name), TEXTS[config_name]
    groups = dict(cmd.groups)
    if text.sweeps:
        groups["hydra/launcher"] = _hydra_defaults()["launcher"]
    group_rows = []
    for group, default in groups.items():
        options = ", ".join(f"[{o}]" if o == default else o for o in group_options(group))
        if default is None:
            options += " (none by default)"
        if group.startswith("hydra/launcher"):
            options += " (for -m)"
        group_rows.append((group, options))
    key_rows = [(f"{key}={_show(value)}", cmd.comments.get(key, "")) for key, value in cmd.defaults.items()]
    nested = [key for key, kind in cmd.keys.items() if dataclasses.is_dataclass(kind) and "." not in key and key != "hydra"]
    name = cmd.name
    parts = [
        f"usage: {name} [GROUP=OPTION ...] [KEY=VALUE ...]" + (" [-m]" if text.sweeps else "") + " [--cfg job] [--hydra-help]",
        _fill(text.summary),
    ]
    if group_rows:
        parts.append(_section("Config groups, one option each (GROUP=OPTION; the default in brackets):", group_rows))
    keys = _section("Keys (KEY=VALUE) and their defaults:", key_rows)
    if nested:
        more = f"The groups' keys ({', '.join(k + '.*' for k in nested)}) and their values: {name} --cfg job [GROUP=OPTION ...]"
        keys += "\n" + _fill(more, "  ")
    parts.append(keys)
    parts.append("Examples:\n" + _examples(name, text.examples))
    parts.append("Outputs:\n" + _fill(text.outputs, "  "))
    parts.append(
        _section(
            "Hydra:",
            [
                (f"{name} --cfg job [...]", "print the composed config, run nothing (--cfg hydra: Hydra's part)"),
                (f"{name} --info", "where the configs come from and how they compose"),
                (f"{name} --hydra-help", "Hydra's own help and flags"),
            ],
        )
    )
    parts.append(
        "Tab completion of groups, options and keys in bash (add the line to ~/.bashrc):\n"
        f'  eval "$({name} -sc install=bash)"'
    )
    return "\n\n".join(parts)


def _examples(name: str, examples: Sequence[tuple[str, str]]) -> str:
    """The example command lines, the comments of those that have one in one column."""
    lines = [f"  {name} {args}".rstrip() for args, _ in examples]
    column = max((len(line) for line, (_, what) in zip(lines, examples) if what), default=0) + 2
    return "\n".join(f"{line:<{column}}# {what}" if what else line for line, (_, what) in zip(lines, examples))


# Refusals


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
    from hydra._internal.utils import get_args_parser  # Hydra's own flags, as @hydra.main reads them

    parser = get_args_parser()

    def refuse(message: str) -> typing.NoReturn:
        raise ConfigError(f"{message}; see {cmd.name} --help")

    parser.error = refuse  # type: ignore[method-assign]  # one line instead of argparse's usage text
    args = parser.parse_args(list(argv))
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
        return f'{group}={option} needs Hydra\'s {package} plugin, which is not installed: pip install -e ".[{extra}]"'
    if isinstance(exc, MissingConfigException) and exc.missing_cfg_file and "/" in exc.missing_cfg_file:
        group, _, option = exc.missing_cfg_file.rpartition("/")
        return _unknown_option(group, option, list(exc.options or group_options(group)))
    headline, cause = first_line(exc), exc.__cause__
    unknown = re.match(r"Could not override '(.+?)'", headline)
    if unknown or isinstance(cause, (ConfigKeyError, ConfigAttributeError)):
        key = unknown[1] if unknown else str(getattr(cause, "full_key", ""))
        # The node OmegaConf names is the key's parent only where the whole key was found wanting.
        parent_type = getattr(cause, "object_type", None) if str(getattr(cause, "full_key", "")) == key else None
        return _unknown_key(cmd, key, parent_type)
    if isinstance(cause, ValidationError):
        merging = re.match(r"Error merging override (.+)", headline)
        return _wrong_type(cmd, merging[1] if merging else None, cause)
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
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return "one of " + ", ".join(member.name for member in kind)
    return None


# OmegaConf's wording of a type mismatch, for keys whose schema type is not known here.
_OMEGACONF_TYPES = {"to Integer": "an integer", "to Float": "a number", "valid bool": "true or false", "ListConfig": "a list, e.g. [a,b]", "to string": "a string"}


def _wrong_type(cmd: Command, override_text: str | None, cause: ValidationError) -> str:
    """`<key>=<value> is invalid: must be <type>`, the value as the command line gave it."""
    key = str(cause.full_key)
    expected = _expected(cmd.keys.get(key)) or next((t for words, t in _OMEGACONF_TYPES.items() if words in str(cause)), None)
    rule = f"must be {expected}" if expected else first_line(cause)
    if override_text is not None:
        override = OverridesParser.create().parse_override(override_text)
        if override.key_or_group == key:
            value = override.value()
            shown = repr(value) if isinstance(value, str) else _show(value)  # as config.validate_* show values
            return f"{key}={shown} is invalid: {rule}"
        return f"{override_text}: {key} {rule}"
    return f"{key} is invalid: {rule}"


# How Hydra's parser starts the message of a character its grammar has no place for.
_LEXER_PREFIX = "LexerNoViableAltException: "


def _bad_syntax(argument: str, message: str, cmd: Command) -> str:
    """Which argument Hydra could not read, why, and how to write it."""
    if "=" not in argument and not argument.startswith("~"):
        return f"{argument!r} is not an override: write KEY=VALUE or GROUP=OPTION (see {cmd.name} --help)"
    lines = [line for line in message.splitlines() if line.strip() and not line.startswith("See https://")]
    if lines[0].startswith(_LEXER_PREFIX) and len(lines) > 1:
        at = len(lines[1]) - len(_LEXER_PREFIX) - 1  # the second line is a caret under the character
        reason = f"unexpected {argument[at]!r}" if 0 <= at < len(argument) else ""
    elif lines[0].startswith("Error parsing override"):
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
