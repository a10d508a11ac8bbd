"""What the help and the refusals know about a command, read from its primary config
(conf/<config_name>.yaml), the schemas (each key's type, default and help) and the options of
its config groups. Nothing here imports torch."""

from __future__ import annotations

import dataclasses
import functools
import typing
from pathlib import Path
from typing import Any

import yaml

from nanogpt.config import CONF_DIR, SCHEMAS
from nanogpt.errors import ConfigError
from nanogpt.settings import Choice, help_of

# The console command of each primary config (`python -m nanogpt.<module>` does the same).
COMMANDS = {"config": "nanogpt-train", "sample": "nanogpt-sample", "prepare": "nanogpt-prepare", "export": "nanogpt-export", "eval": "nanogpt-eval"}


@dataclasses.dataclass(frozen=True)
class Command:
    config_name: str
    name: str  # the console script
    groups: dict[str, str | None]  # config group: its default option (None: none unless chosen)
    optional: frozenset[str]  # the groups that may be left out (`optional` in the defaults list)
    keys: dict[str, Any]  # every dotted key, Hydra's included: its type
    defaults: dict[str, Any]  # top-level key: its default (the schema's, or the YAML file's)
    help: dict[str, str]  # top-level key: what --help says of it

    def children(self, parent: str) -> set[str]:
        """The names directly under a dotted key ("" for the top level, where groups count too)."""
        if not parent:
            return {key for key in self.keys if "." not in key} | set(self.groups) | HYDRA_GROUPS
        prefix = parent + "."
        return {key[len(prefix) :] for key in self.keys if key.startswith(prefix) and "." not in key[len(prefix) :]}


def hydra_defaults() -> dict[str, str | None]:
    """Hydra's own config groups (launcher, sweeper, job_logging, ...) and their defaults."""
    from hydra.conf import HydraConf

    field = next(f for f in dataclasses.fields(HydraConf) if f.name == "defaults")
    return {group: option for entry in field.default_factory() for group, option in entry.items()}


HYDRA_GROUPS = frozenset(f"hydra/{group}" for group in hydra_defaults())


def schema_keys(schema: type, prefix: str = "") -> dict[str, Any]:
    """Every dotted key of a schema dataclass and its type; a nested dataclass is a key of its own
    and so are its keys."""
    keys: dict[str, Any] = {}
    hints = typing.get_type_hints(schema)
    for field in dataclasses.fields(schema):
        key, kind = prefix + field.name, hints[field.name]
        keys[key] = kind
        if dataclasses.is_dataclass(kind):
            keys.update(schema_keys(kind, key + "."))
    return keys


def choice_of(kind: Any) -> type[Choice] | None:
    """The Choice a key of this type takes (Optional[X] included), or None."""
    candidates = [kind, *typing.get_args(kind)]
    return next((k for k in candidates if isinstance(k, type) and issubclass(k, Choice)), None)


def key_help(field: dataclasses.Field, kind: Any) -> str:
    """A key's help: its choices first where it takes a Choice ("best | last: ..."), then the schema's text."""
    text, choice = help_of(field), choice_of(kind)
    if choice is None:
        return text
    return " | ".join(choice.values()) + (f": {text}" if text else "")


def _field_default(field: dataclasses.Field) -> Any:
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


@functools.lru_cache(maxsize=None)
def command(config_name: str) -> Command:
    """The command whose primary config is conf/<config_name>.yaml, as its defaults list, its
    schema (the defaults list's *_schema entry) and the file's own values describe it."""
    path = Path(CONF_DIR) / f"{config_name}.yaml"
    primary = yaml.safe_load(path.read_text())
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

    keys = schema_keys(schema) | {"hydra": HydraConf} | schema_keys(HydraConf, "hydra.")
    top_level = [f for f in dataclasses.fields(schema) if not dataclasses.is_dataclass(keys[f.name])]
    defaults = {f.name: _field_default(f) for f in top_level}
    defaults.update({key: value for key, value in primary.items() if key in defaults})
    helps = {f.name: key_help(f, keys[f.name]) for f in top_level}
    return Command(config_name, COMMANDS[config_name], groups, frozenset(optional), keys, defaults, helps)


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
