"""The building blocks of the config schemas (nanogpt.config, nanogpt.architecture): `Choice`, a
value from a fixed list, and `setting`, a field with its default and the help that `--help`
shows beside it. Each default and each list of choices is stated once, here in code; the YAML
files under conf/ state only what an option changes."""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, Callable


class Choice(str, enum.Enum):
    """A config value from a fixed list. OmegaConf refuses any other value while the config is
    composed (`model.norm=foo`: "expected one of [layernorm, rmsnorm]"), and `--help` lists the
    choices. A str, so code compares it with plain strings and JSON writes it as one; it prints
    as its plain value, never as `Norm.rmsnorm`."""

    def __str__(self) -> str:
        return self.value

    def __repr__(self) -> str:
        return repr(self.value)

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @classmethod
    def values(cls) -> list[str]:
        return [member.value for member in cls]


def setting(default: Any = dataclasses.MISSING, help: str = "", *, factory: Callable[[], Any] | None = None) -> Any:
    """A dataclass field with its default (or a factory for a mutable one) and its help text."""
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata={"help": help})
    return dataclasses.field(default=default, metadata={"help": help})


def help_of(field: dataclasses.Field) -> str:
    return field.metadata.get("help", "")
