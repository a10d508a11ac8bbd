"""Config validation against an independent table of rules (hypothesis).

RULES below is written from the README ("Configuration") and the comments of the config schemas,
not from nanogpt/config.py's checks: for each key, values the documentation allows and values it
does not. Every drawn invalid value must be refused by the validation functions with one ConfigError
line `<key>=<value> is invalid: <rule>` (README: "one line naming the key, the value and the
rule"); every drawn valid value must be accepted. A key whose schema type is a Choice cannot even
hold an invalid value in a composed config (OmegaConf refuses it, which the command line reports
in the same one-line form); the validation functions, which also check what Python callers pass,
are then given an untyped copy of the config. `context` sets the other keys a rule depends on,
so that the rule under test is the only one that can decide. NaN is invalid wherever a float must
lie in a range. One command-line launch checks that such a refusal is one line and exit status 2.
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ValidationError

from nanogpt.cli.commands import choice_of, schema_keys
from nanogpt.config import (
    ConfigError,
    ExportConfig,
    SampleConfig,
    SystemConfig,
    TrainConfig,
    validate_export,
    validate_generation,
    validate_sample,
    validate_train,
)
from nanogpt.config import ExportConfig as _Export
from nanogpt.config import SampleConfig as _Sample
from tests.conftest import TINY, one_line_error, run_cli
from tests.test_config import compose_train

# ----------------------------------------------------------------------------- values


@dataclass(frozen=True)
class Values:
    """Values of one kind: a hypothesis strategy, and examples that are always checked (the edges
    of a range among them, which a few random draws would rarely hit)."""

    drawn: st.SearchStrategy
    examples: tuple = ()

    def __or__(self, other: Values) -> Values:
        return Values(self.drawn | other.drawn, self.examples + other.examples)


def ints(lo: int | None = None, hi: int | None = None) -> Values:
    return Values(st.integers(lo, hi), tuple(x for x in (lo, hi) if x is not None))


def reals(lo: float | None = None, hi: float | None = None, *, open_lo: bool = False, open_hi: bool = False) -> Values:
    """Finite floats in the interval; its edges (or the floats next to an open edge) as examples."""
    edges = []
    if lo is not None:
        edges.append(math.nextafter(lo, math.inf) if open_lo else lo)
    if hi is not None:
        edges.append(math.nextafter(hi, -math.inf) if open_hi else hi)
    drawn = st.floats(lo, hi, exclude_min=open_lo, exclude_max=open_hi, allow_nan=False, allow_infinity=False)
    return Values(drawn, tuple(edges))


def choice(*allowed: Any) -> Values:
    return Values(st.sampled_from(allowed), allowed)


def text(strategy: st.SearchStrategy[str] | None = None, examples: tuple = ()) -> Values:
    return Values(strategy if strategy is not None else TEXT, examples)


def other_text(*allowed: str, normalise: Callable[[str], str] = lambda s: s) -> Values:
    """Text that is none of `allowed`; near misses (case, spaces, a letter more or less) as examples."""
    near = tuple(n for a in allowed for n in (a.upper(), a + "x", " " + a, a + " ", a[:-1], "") if normalise(n) not in allowed)
    return Values(TEXT.filter(lambda s: normalise(s) not in allowed), tuple(dict.fromkeys(near)))


# Text as a command line or a YAML file can carry it; `$` would start an OmegaConf interpolation.
TEXT = st.text(st.characters(blacklist_characters="$", blacklist_categories=("Cs",)), max_size=16)
NAN = Values(st.just(math.nan), (math.nan,))
NONE = Values(st.none(), (None,))
POSITIVE_INT, NON_POSITIVE_INT = ints(1, 10**9), ints(-(10**9), 0)
NON_NEGATIVE_INT, NEGATIVE_INT = ints(0, 10**9), ints(-(10**9), -1)
POSITIVE, NON_POSITIVE = reals(0, open_lo=True), reals(hi=0) | NAN
NON_NEGATIVE, NEGATIVE = reals(0), reals(hi=0, open_hi=True) | NAN
UNIT_RIGHT_OPEN, NOT_UNIT_RIGHT_OPEN = reals(0, 1, open_hi=True), reals(hi=0, open_hi=True) | reals(1) | NAN  # [0, 1)


# ----------------------------------------------------------------------------- the rules


@dataclass
class Rule:
    key: str
    valid: Values
    invalid: Values | None  # None: the documentation allows any value of the type
    context: dict[str, Any] = field(default_factory=dict)
    where: str = "train"  # train | generation | sample | export: which validation function
    note: str = ""  # tells two rules of one key apart

    @property
    def id(self) -> str:
        return self.key + (f" ({self.note})" if self.note else "")


N_EMBD_840_DIVISORS = tuple(d for d in range(1, 841) if 840 % d == 0)
ROPE = {"model.position": "rope", "model.n_embd": 128, "model.n_head": 4}  # head size 32: even
MUON = {"optimizer.name": "muon"}
DEVICE = re.compile(r"auto|cpu|cuda|cuda:[0-9]+|mps")  # README: auto | cpu | cuda | cuda:N | mps
PRETRAINED = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")

RULES = [
    # model: sizes are positive integers; n_embd is a multiple of n_head; dropout in [0, 1)
    Rule("model.n_layer", POSITIVE_INT, NON_POSITIVE_INT),
    Rule("model.n_head", choice(*N_EMBD_840_DIVISORS), NON_POSITIVE_INT, {"model.n_embd": 840}),
    Rule(
        "model.n_embd",
        Values(st.integers(1, 10**6).map(lambda k: 4 * k), (4, 128, 768)),
        NON_POSITIVE_INT | Values(st.integers(1, 10**9).filter(lambda n: n % 4 != 0), (1, 2, 3, 5, 130)),
        {"model.n_head": 4},
    ),
    Rule("model.dropout", UNIT_RIGHT_OPEN, NOT_UNIT_RIGHT_OPEN),
    Rule("model.gelu_approximate", choice("none", "tanh"), other_text("none", "tanh")),
    Rule("model.vocab_size", NONE | POSITIVE_INT, NON_POSITIVE_INT),
    Rule("model.position", choice("learned", "rope"), other_text("learned", "rope"), {"model.n_embd": 128, "model.n_head": 4}),
    Rule("model.rope_base", reals(1, open_lo=True) | choice(10000.0), reals(hi=1) | NAN, ROPE),
    Rule("model.norm", choice("layernorm", "rmsnorm"), other_text("layernorm", "rmsnorm")),
    Rule("model.activation", choice("gelu", "relu2"), other_text("gelu", "relu2")),
    # dataset
    Rule("dataset.batch_size", POSITIVE_INT, NON_POSITIVE_INT),
    Rule("dataset.block_size", POSITIVE_INT, NON_POSITIVE_INT),
    Rule("dataset.val_fraction", reals(0, 1, open_lo=True, open_hi=True), reals(hi=0) | reals(1) | NAN),
    Rule("dataset.vocab_size", NONE | POSITIVE_INT, NON_POSITIVE_INT),
    Rule("dataset.prepare_wait_s", NONE | NON_NEGATIVE, NEGATIVE),
    # char | gpt2 | bpe | a tokenizer.json file or a folder holding one (checked when preparing)
    Rule(
        "dataset.tokenizer",
        NONE | choice("char", "gpt2", "bpe", "tokenizer.json", "/models/tok/", "~/tok.json"),
        text(st.text(" \t", max_size=4), ("", " ", "\t")),
    ),
    # optimizer: rates > 0, min_lr in [0, learning_rate] (any >= 0 when the rate is constant),
    # decays >= 0, betas and momentum in [0, 1), grad_clip >= 0 (0: off), warmup >= 0,
    # lr_decay_iters > 0 or null (max_iters); the Muon keys with optimizer=muon
    Rule("optimizer.name", choice("adamw", "muon"), other_text("adamw", "muon")),
    Rule("optimizer.learning_rate", POSITIVE, NON_POSITIVE, {"optimizer.min_lr": 0.0}),
    Rule(
        "optimizer.min_lr",
        reals(0, 1e-3),
        reals(hi=0, open_hi=True) | reals(1e-3, open_lo=True) | NAN,
        {"optimizer.learning_rate": 1e-3, "optimizer.decay_lr": True},
    ),
    Rule(
        "optimizer.min_lr", NON_NEGATIVE | choice(1.0), NEGATIVE, {"optimizer.learning_rate": 1e-3, "optimizer.decay_lr": False}, note="constant rate"
    ),
    Rule("optimizer.weight_decay", NON_NEGATIVE, NEGATIVE),
    Rule("optimizer.beta1", UNIT_RIGHT_OPEN, NOT_UNIT_RIGHT_OPEN),
    Rule("optimizer.beta2", UNIT_RIGHT_OPEN, NOT_UNIT_RIGHT_OPEN),
    Rule("optimizer.grad_clip", NON_NEGATIVE, NEGATIVE),
    Rule("optimizer.warmup_iters", NON_NEGATIVE_INT, NEGATIVE_INT),
    Rule("optimizer.lr_decay_iters", NONE | POSITIVE_INT, NON_POSITIVE_INT),
    Rule("optimizer.muon_learning_rate", POSITIVE, NON_POSITIVE, MUON),
    Rule("optimizer.muon_momentum", UNIT_RIGHT_OPEN, NOT_UNIT_RIGHT_OPEN, MUON),
    Rule("optimizer.muon_weight_decay", NON_NEGATIVE, NEGATIVE, MUON),
    Rule("optimizer.embedding_learning_rate", NONE | POSITIVE, NON_POSITIVE, MUON),
    # system
    Rule(
        "system.device",
        choice("auto", "cpu", "cuda", "mps", "cuda:0", "cuda:7") | Values(st.integers(0, 10**4).map(lambda n: f"cuda:{n}")),
        Values(
            TEXT.filter(lambda s: DEVICE.fullmatch(s) is None),
            ("gpu", "", "cuda:", "cuda:x", "cuda:-1", "cpu:0", "mps:0", "CUDA", "cuda:²", "cuda:٣"),
        ),
    ),
    Rule("system.dtype", choice("auto", "float32", "bfloat16", "float16"), other_text("auto", "float32", "bfloat16", "float16")),
    # auto | true | false; a YAML `true` arrives in this text key as "True"
    Rule("system.compile", choice("auto", "true", "false", "True", "False"), other_text("auto", "true", "false", normalise=str.lower)),
    Rule("system.strategy", choice("ddp", "fsdp"), other_text("ddp", "fsdp")),
    # top level
    Rule("max_iters", NON_NEGATIVE_INT, NEGATIVE_INT),
    Rule("time_budget_s", NONE | POSITIVE, NON_POSITIVE),
    Rule("keep_last_k", NON_NEGATIVE_INT, NEGATIVE_INT),
    Rule("eval_interval", POSITIVE_INT, NON_POSITIVE_INT),
    Rule("eval_iters", POSITIVE_INT, NON_POSITIVE_INT),
    Rule("log_interval", POSITIVE_INT, NON_POSITIVE_INT),
    Rule("gradient_accumulation_steps", POSITIVE_INT, NON_POSITIVE_INT),
    # every generator takes a seed from -2**63 to 2**63-1 (torch's own range, a rank added)
    Rule("seed", ints(-(2**63), 2**63 - 1) | choice(0, 1337), ints(2**63, 2**80) | ints(-(2**80), -(2**63) - 1)),
    Rule(
        "init_from",
        choice("scratch", "resume", *PRETRAINED, "hf:x", "hf:/models/gpt2") | Values(TEXT.filter(bool).map(lambda s: "hf:" + s)),
        Values(
            other_text("scratch", "resume", *PRETRAINED).drawn.filter(lambda s: not (s.startswith("hf:") and len(s) > 3)),
            ("hf:", "hf", "gpt3", "/models/gpt2", "Scratch"),
        ),
    ),
    # wandb: mode online | offline | disabled | null; sample_tokens >= 0 (0: none); the texts are free
    Rule("wandb.mode", NONE | choice("online", "offline", "disabled"), other_text("online", "offline", "disabled")),
    Rule("wandb.sample_tokens", NON_NEGATIVE_INT, NEGATIVE_INT),
    Rule("wandb.project", text(examples=("nanogpt", "")), None),
    Rule("wandb.entity", NONE | text(), None),
    Rule("wandb.name", NONE | text(examples=("lr 6e-4, take 2",)), None),
    Rule("wandb.notes", NONE | text(), None),
    # sampling (nanogpt-sample and nanogpt.generate)
    Rule("num_samples", POSITIVE_INT, NON_POSITIVE_INT, where="generation"),
    Rule("max_new_tokens", POSITIVE_INT, NON_POSITIVE_INT, where="generation"),
    Rule("temperature", NON_NEGATIVE, NEGATIVE, where="generation"),  # 0 = greedy
    Rule("top_k", NONE | POSITIVE_INT, NON_POSITIVE_INT, where="generation"),
    Rule("top_p", reals(0, 1, open_lo=True), reals(hi=0) | reals(1, open_lo=True) | NAN, where="generation"),
    Rule(
        "stop",
        Values(st.lists(TEXT.filter(bool), max_size=3), ([], ["\n\n"], ["a", "b"])),
        Values(
            st.tuples(st.lists(TEXT.filter(bool), max_size=2), st.integers(0, 2)).map(lambda t: t[0][: t[1]] + [""] + t[0][t[1] :]),
            ([""], ["a", ""]),
        ),
        where="generation",
    ),
    Rule("window", choice("halve", "slide"), other_text("halve", "slide"), where="generation"),
    Rule("seed", ints(-(2**63), 2**63 - 1), ints(2**63, 2**80) | ints(-(2**80), -(2**63) - 1), where="generation", note="sampling"),
    Rule("checkpoint", choice("best", "last"), other_text("best", "last"), where="sample"),
    Rule("checkpoint", choice("best", "last"), other_text("best", "last"), where="export", note="export"),
    Rule("run_dir", text(TEXT.filter(bool), ("outputs/2026-11-25/17-03-11",)), NONE, where="export"),  # required
    Rule("out", text(TEXT.filter(bool), ("my-model",)), NONE, where="export"),  # required
]

GENERATION_DEFAULTS = dict(num_samples=3, max_new_tokens=500, temperature=0.8, top_k=200, top_p=1.0, stop=[], window="halve", seed=1337)


@cache
def base_train() -> DictConfig:
    return compose_train(*TINY)


def config_for(rule: Rule, value: Any) -> tuple[Callable[[], None], Any]:
    """The validation call for `value` at rule.key (context applied), and the value as stored."""
    if rule.where == "generation":
        kwargs = {**GENERATION_DEFAULTS, rule.key: value}
        return lambda: validate_generation(**kwargs), value
    if rule.where == "train":
        cfg, validate = copy.deepcopy(base_train()), validate_train
    elif rule.where == "sample":
        cfg, validate = OmegaConf.structured(SampleConfig(system=SystemConfig())), validate_sample
    else:
        cfg, validate = OmegaConf.structured(ExportConfig(run_dir="runs/a", out="hf/a")), validate_export
    if is_choice_key(rule):
        cfg = OmegaConf.create(OmegaConf.to_container(cfg))  # untyped: it may hold any value
    for key, setting in {**rule.context, rule.key: value}.items():
        OmegaConf.update(cfg, key, setting, merge=False)
    return lambda: validate(cfg), OmegaConf.select(cfg, rule.key)


def is_choice_key(rule: Rule) -> bool:
    schema = {"train": TrainConfig, "sample": _Sample, "export": _Export}.get(rule.where)
    return schema is not None and choice_of(schema_keys(schema)[rule.key]) is not None


def assert_accepted(rule: Rule, value: Any) -> None:
    validate, _ = config_for(rule, value)
    validate()


def assert_refused(rule: Rule, value: Any) -> None:
    validate, stored = config_for(rule, value)
    with pytest.raises(ConfigError) as refused:
        validate()
    message = str(refused.value)
    assert "\n" not in message
    if stored is None:  # a required key left out
        assert message.startswith(f"{rule.key} is required"), message
    else:
        assert message.startswith(f"{rule.key}={stored!r} is invalid: "), message


def test_the_base_configs_are_valid():
    validate_train(base_train())
    for rule in RULES:
        if rule.context:
            validate, _ = config_for(rule, OmegaConf.select(base_train(), rule.key))
            validate()


EXAMPLES = [
    pytest.param(rule, value, valid, id=f"{rule.id}={value!r}")
    for rule in RULES
    for valid, values in ((True, rule.valid), (False, rule.invalid))
    if values is not None
    for value in values.examples
]


@pytest.mark.parametrize("rule, value, valid", EXAMPLES)
def test_the_examples_and_the_edges_of_each_range(rule: Rule, value: Any, valid: bool):
    (assert_accepted if valid else assert_refused)(rule, value)


@pytest.mark.parametrize("rule", RULES, ids=lambda rule: rule.id)
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_every_valid_value_is_accepted(rule: Rule, data: st.DataObject):
    assert_accepted(rule, data.draw(rule.valid.drawn, label=rule.key))


@pytest.mark.parametrize("rule", [r for r in RULES if r.invalid is not None], ids=lambda rule: rule.id)
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_every_invalid_value_is_refused_in_one_line_naming_the_key_and_the_value(rule: Rule, data: st.DataObject):
    assert_refused(rule, data.draw(rule.invalid.drawn, label=rule.key))


CHOICE_RULES = [rule for rule in RULES if is_choice_key(rule)]


@pytest.mark.parametrize("rule", CHOICE_RULES, ids=lambda rule: rule.id)
def test_a_choice_keys_invalid_values_never_reach_a_composed_config(rule: Rule):
    """The composed (structured) config refuses every invalid example of a Choice key while it is
    set, and takes every valid one."""
    assert {r.key for r in CHOICE_RULES} >= {"model.position", "model.norm", "optimizer.name", "system.dtype", "checkpoint"}
    cfg = (
        copy.deepcopy(base_train())
        if rule.where == "train"
        else OmegaConf.structured(_Sample(system=SystemConfig()) if rule.where == "sample" else _Export())
    )
    for value in rule.valid.examples:
        OmegaConf.update(cfg, rule.key, value, merge=False)
        assert OmegaConf.select(cfg, rule.key) == value
    for value in rule.invalid.examples:
        with pytest.raises(ValidationError):
            OmegaConf.update(cfg, rule.key, value, merge=False)


def test_a_refused_value_on_the_command_line_is_one_line_exit_2_and_writes_nothing(tmp_path):
    proc = run_cli(
        "nanogpt.train", *TINY, "optimizer.beta2=1.0", f"dataset.data_dir={tmp_path / 'data'}", f"hydra.run.dir={tmp_path / 'run'}", check=False
    )
    assert one_line_error(proc) == "error: optimizer.beta2=1.0 is invalid: must be in [0, 1)"
    assert list(tmp_path.iterdir()) == []
