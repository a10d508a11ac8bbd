"""The commands' --help, printed instead of Hydra's.

It is read from conf/ and the schemas each time: the command's config groups with their options,
its top-level keys with their defaults and help (the schemas' `setting(..., help)`, with a Choice
key's choices), then examples, where the outputs go, and how to reach Hydra's own help and tab
completion. Hydra's --help (its hydra/help template, $APP_CONFIG_GROUPS and $CONFIG) would print
the composed config without a word on any key, and composes it first; this one says what each
key is for and answers before Hydra, or torch, starts.
"""

from __future__ import annotations

import dataclasses
import re
import textwrap
from collections.abc import Sequence
from typing import Any

from nanogpt.cli.commands import command, group_options, hydra_defaults

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
        summary="Evaluate a run's checkpoint on benchmarks of EleutherAI's lm-evaluation-harness (pip install \"nanogpt[eval]\").",
        examples=(
            ("run_dir=outputs/2026-11-25/17-03-11 tasks=hellaswag,arc_easy", ""),
            ("run_dir=outputs/2026-11-25/17-03-11 tasks=hellaswag limit=200 batch_size=32", "200 documents"),
            ("run_dir=outputs/2026-11-25/17-03-11 tasks=my_task include_path=my_tasks/", "task YAMLs of your own"),
        ),
        outputs="<run_dir>/eval/<task>.json per task (its metrics, documents, shots and lm_eval's task config) "
        "and a table on stdout. No run folder of its own, no log file.",
    ),
}


def wants_help(argv: Sequence[str]) -> bool:
    """Whether the arguments ask for the command's help, wherever -h or --help stands among them."""
    return any(arg in HELP_FLAGS for arg in argv)


def show_value(value: Any) -> str:
    """A value as it is written on the command line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ",".join(show_value(v) for v in value) + "]"
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
        groups["hydra/launcher"] = hydra_defaults()["launcher"]
    group_rows = []
    for group, default in groups.items():
        options = ", ".join(f"[{o}]" if o == default else o for o in group_options(group))
        if default is None:
            options += " (none by default)"
        if group.startswith("hydra/launcher"):
            options += " (for -m)"
        group_rows.append((group, options))
    key_rows = [(f"{key}={show_value(value)}", cmd.help.get(key, "")) for key, value in cmd.defaults.items()]
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
    parts.append(f'Tab completion of groups, options and keys in bash (add the line to ~/.bashrc):\n  eval "$({name} -sc install=bash)"')
    return "\n\n".join(parts)


def _examples(name: str, examples: Sequence[tuple[str, str]]) -> str:
    """The example command lines, the comments of those that have one in one column."""
    lines = [f"  {name} {args}".rstrip() for args, _ in examples]
    column = max((len(line) for line, (_, what) in zip(lines, examples) if what), default=0) + 2
    return "\n".join(f"{line:<{column}}# {what}" if what else line for line, (_, what) in zip(lines, examples))
