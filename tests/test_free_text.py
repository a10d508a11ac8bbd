"""Free-text values (prompt, stop, wandb.name/notes/tags) arrive exactly as typed: through Hydra's
compose API, through the real sample command, and through training, its records and resume."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from nanogpt.checkpoint import CKPT_FORMAT, load_checkpoint, save_checkpoint
from nanogpt.cli.free_text import quote_free_text
from nanogpt.config import CONF_DIR
from nanogpt.model import GPT, GPTConfig
from tests.conftest import ROOT, TINY, cli_env, one_line_error, run_cli
from tests.wandb_offline import records, run_info

# Text that Hydra's override grammar or OmegaConf would refuse, split, retype or resolve.
AWKWARD = [
    "O Romeo, Romeo!",
    "a,b,c",
    "it's",
    "'Tis but thy name",
    "'quoted'",
    '"double quotes"',
    "\"'mixed'\"",
    "[THE END]",
    "[1, 2]",
    "{a: 1}",
    "a=b",
    "=leading",
    "trailing=",
    "$HOME",
    "${oc.env:HOME}",
    "${x}",
    "${",
    "}",
    "$${x}",
    "${x}${y}",
    "\\${x}",
    "\\\\${x}",
    "\\\\\\${x}\\",
    "#hash",
    "a # comment?",
    " leading and trailing spaces ",
    "   ",
    "true",
    "False",
    "null",
    "None",
    "1e3",
    "42",
    "-7",
    "nan",
    "inf",
    "0x10",
    "line one\nline two\n",
    "\n",
    "\r\n",
    "a\tb",
    "\t",
    "back\\slash",
    "trailing backslash\\",
    "\\",
    "\\\\",
    "\\'",
    "'\\",
    '\\"',
    "C:\\path\\",
    "中文",
    "🎭 emoji",
    "Ünïcödé ½ — “curly”",
    "choice(a,b)",
    "range(1,3)",
    "glob(*)",
    "~key +key ++key @pkg key@pkg:x",
    "hydra/launcher=slurm",
    "FILE",
    "-",
    "",
]
# Single characters that matter to Hydra's grammar, OmegaConf's interpolations or a shell, and a
# few sequences that matter as a whole, for the seeded random strings.
NASTY = list("'\"\\${},=[]#:()~+@%*?|/ \n\t\rab1é中🎭") + ["${", "\\${", "\\\\", "}}"]


def random_strings(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(NASTY) for _ in range(rng.randint(0, 24))) for _ in range(count)]


TEXTS = AWKWARD + random_strings(300)


# Each composition checks a dozen strings at once (one as the prompt or name, the others as list
# items): composing is the slow part.
PARTS = len(TEXTS) // 12


@pytest.fixture(scope="module")
def hydra_compose() -> Iterator[None]:
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        yield


def composed(config_name: str, argv: list[str]) -> tuple[DictConfig, DictConfig]:
    """The config Hydra composes from argv after quote_free_text, and Hydra's own node of it."""
    cfg = compose(config_name=config_name, overrides=quote_free_text(argv, config_name), return_hydra_config=True)
    return OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"]), cfg.hydra


def assert_kept(cfg: DictConfig, key: str, expected: str | list[str]) -> None:
    """key holds exactly `expected`: read, resolved into plain Python (what training saves in
    its checkpoints and hands to wandb), and read back from the config written as YAML (what
    Hydra's .hydra/config.yaml goes through)."""

    def value(config: DictConfig) -> object:
        found = OmegaConf.select(config, key)
        return list(found) if isinstance(expected, list) else found

    assert value(cfg) == expected
    plain = OmegaConf.to_container(cfg, resolve=True)
    for part in key.split("."):
        plain = plain[part]
    assert plain == expected
    assert value(OmegaConf.create(OmegaConf.to_yaml(cfg))) == expected


# ----------------------------------------------------------------------------- quote_free_text


def test_other_arguments_and_other_commands_are_left_alone():
    argv = ["-m", "num_samples=2", "run_dir=a,b", "promptx=1", "system.device=cpu", "--cfg", "job"]
    assert quote_free_text(argv, "sample") == argv
    assert quote_free_text(["prompt=a,b", "wandb.name=a,b"], "export") == ["prompt=a,b", "wandb.name=a,b"]
    assert quote_free_text(["prompt=a,b"], "config") == ["prompt=a,b"]  # not a key of training


def test_each_occurrence_of_a_list_key_is_one_item_of_one_list_override():
    argv = ["num_samples=1", "stop=a,b", "seed=3", "stop=[x]", "prompt=hi", "stop="]
    assert quote_free_text(argv, "sample") == ["num_samples=1", "stop=['a,b','[x]','']", "seed=3", "prompt='hi'"]
    assert quote_free_text(["wandb.tags=a", "++wandb.notes=n"], "config") == ["wandb.tags=['a']", "++wandb.notes='n'"]


@pytest.mark.parametrize("part", range(PARTS))
def test_sample_prompt_and_stop_come_through_hydra_exactly(hydra_compose, part):
    prompt, *stops = TEXTS[part::PARTS]
    cfg, hydra = composed("sample", [f"prompt={prompt}", "num_samples=2", *(f"stop={s}" for s in stops), "temperature=0"])
    assert_kept(cfg, "prompt", prompt)
    assert_kept(cfg, "stop", stops)
    assert cfg.num_samples == 2 and cfg.temperature == 0
    # Hydra's record of the command (overrides.yaml, a sweep job's folder name) resolves too.
    OmegaConf.to_container(hydra.overrides, resolve=True)


@pytest.mark.parametrize("part", range(PARTS))
def test_wandb_name_notes_and_tags_come_through_hydra_exactly(hydra_compose, part):
    name, notes, *tags = TEXTS[part::PARTS]
    cfg, hydra = composed("config", [f"wandb.name={name}", "logger=wandb", f"wandb.notes={notes}", *(f"wandb.tags={t}" for t in tags)])
    assert_kept(cfg, "wandb.name", name)
    assert_kept(cfg, "wandb.notes", notes)
    assert_kept(cfg, "wandb.tags", tags)
    assert cfg.wandb.enabled is True
    OmegaConf.to_container(hydra.overrides, resolve=True)


# ----------------------------------------------------------------------------- the sample command

# What the scripted model says, over and over, whatever the prompt: every stop string of CASES
# occurs in it. Each piece is encoded on its own so that the script's tokens are all different
# (the model knows where it is in the script from the last token alone).
SCRIPT_PIECES = (
    "Exit, pursued by a bear.",
    ' "Adieu" quoth he;',
    " it's [THE END]",
    "\n\n",
    "x=1 ${y} $HOME #2",
    " C:\\path\\",
    "\ttab",
    " 中文 🎭",
    " true null 1e3",
)
SCRIPT = "".join(SCRIPT_PIECES)
NEW_TOKENS = 60  # more than the script's 50 tokens: every stop string occurs wherever it starts


def scripted_model(script: list[int], vocab_size: int) -> GPT:
    """A GPT whose greedy continuation of any text is the token cycle `script`. Its blocks add
    nothing (zero output projections) and positions are zero, so the logits depend on the last
    token alone: script[i] is embedded as the unit vector i and the head maps it to script[i+1];
    every other token is the last unit vector, mapped to script[0]."""
    model = GPT(
        GPTConfig(vocab_size=vocab_size, block_size=64, n_layer=1, n_head=1, n_embd=len(script) + 1, tie_embeddings=False, zero_init_proj=True)
    )
    wte, head = model.transformer.wte.weight, model.lm_head.weight
    with torch.no_grad():
        model.transformer.wpe.weight.zero_()
        wte.zero_()
        head.zero_()
        wte[:, -1] = 1
        for i, token in enumerate(script):
            wte[token, -1] = 0
            wte[token, i] = 1
            head[script[(i + 1) % len(script)], i] = 1
        head[script[0], -1] = 1
    return model.eval()


@pytest.fixture(scope="module")
def scripted_run(tmp_path_factory) -> Path:
    """A run folder whose GPT-2 BPE model says SCRIPT: GPT-2's BPE encodes any text, so every
    prompt is sampled and echoed, and stop strings with quotes, brackets and tabs do occur."""
    from nanogpt.data import gpt2_tokenizer

    tokenizer = gpt2_tokenizer()
    script = [token for piece in SCRIPT_PIECES for token in tokenizer.encode(piece)]
    assert len(set(script)) == len(script) < NEW_TOKENS
    model = scripted_model(script, tokenizer.vocab_size)
    run_dir = tmp_path_factory.mktemp("scripted") / "run"
    meta = {"tokenizer": "gpt2", "vocab_size": tokenizer.vocab_size}
    state = {"format": CKPT_FORMAT, "model": model.state_dict(), "model_args": dataclasses.asdict(model.config), "dataset_meta": json.dumps(meta)}
    save_checkpoint(run_dir / "ckpt_best.pt", state)
    return run_dir


@pytest.fixture(scope="module")
def generator(scripted_run):
    from nanogpt.generation import Generator

    generator = Generator.from_run(scripted_run, device="cpu", dtype="float32")
    assert generator.generate(SCRIPT, max_new_tokens=100, temperature=0)[0] == SCRIPT * 3
    return generator


class Case(NamedTuple):
    name: str
    prompt: str  # the prompt's exact text
    stop: tuple[str, ...] = ()
    via: str = "argument"  # argument: prompt=<text>; file: prompt=FILE:<path>; stdin: prompt=-


# A prompt file's name that Hydra's grammar could not take unquoted either.
PROMPT_FILE = "Romeo's prompt, v2 [draft] ${x}.txt"
# One launch per prompt (a launch is mostly start-up, so each also checks a stop string or more).
CASES = [
    Case("comma", "O Romeo, Romeo!", (", pursued",)),
    Case("apostrophes", "'Tis Juliet's nurse", ("it's",)),
    Case("brackets", "[Enter ROMEO] [1, 2] {a: 1}", ("[THE END]",)),
    Case("double quotes", 'He said "adieu"', ('"Adieu"',)),
    Case("equals", "a=b", ("x=1",)),
    Case("dollar", "$HOME", ("$HOME",)),
    Case("env interpolation", "${oc.env:HOME}", ("${y}",)),
    Case("interpolations", "${x} \\${x} \\\\${x}", ("null",)),
    Case("hash", "#hash", (" #2",)),
    Case("spaces", " leading and trailing spaces ", (" a bear",)),
    Case("true", "true", (" true",)),
    Case("null", "null", ("bear. ",)),
    Case("float", "1e3", ("1e3",)),
    Case("int", "42", ("\n\n",)),
    Case("newlines", "ROMEO:\nJULIET:\n", ("\ttab",)),
    Case("tabs", "a\tb\t", ("C:\\path\\",)),
    Case("backslashes", "C:\\Users\\romeo\\", ("path\\",)),
    Case("chinese", "中文", ("中文 🎭",)),
    Case("emoji and hydra syntax", "🎭 a,b,c choice(a,b) ~key +key @pkg", ("zzz", "[THE END]", "\n\n")),
    Case("file", 'ROMEO:\n\'Tis "so", a=b ${x}\n', ("it's",), via="file"),
    Case("stdin", "JULIET:\n[aside] ${oc.env:HOME} 中文\n", ("[THE END]", "\n\n"), via="stdin"),
]


# The commands run side by side: one thread each, or their threads wait on one another.
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def sample_command(run_dir: Path, *overrides: str, stdin: str = "") -> subprocess.CompletedProcess:
    """`python -m nanogpt.sample` on run_dir, greedy, one sample; stdin fed to it (UTF-8)."""
    args = [f"run_dir={run_dir}", "system.device=cpu", "num_samples=1", f"max_new_tokens={NEW_TOKENS}", "temperature=0", *overrides]
    return subprocess.run(
        [sys.executable, "-m", "nanogpt.sample", *args],
        cwd=ROOT,
        env=cli_env(ONE_THREAD),
        input=stdin,
        capture_output=True,
        encoding="utf-8",
        timeout=300,
    )


def run_case(case: Case, run_dir: Path, folder: Path) -> subprocess.CompletedProcess:
    stops = [f"stop={s}" for s in case.stop]
    if case.via == "stdin":
        return sample_command(run_dir, "prompt=-", *stops, stdin=case.prompt)
    if case.via == "file":
        path = folder / PROMPT_FILE
        path.write_text(case.prompt, encoding="utf-8")
        return sample_command(run_dir, f"prompt=FILE:{path}", *stops)
    return sample_command(run_dir, f"prompt={case.prompt}", *stops)


@pytest.fixture(scope="module")
def sampled(scripted_run, tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    """Every case's command, run a few at a time: each launch is mostly start-up."""
    folder = tmp_path_factory.mktemp("prompts")
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        futures = {case.name: pool.submit(run_case, case, scripted_run, folder) for case in CASES}
    return {name: future.result() for name, future in futures.items()}


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_the_sample_command_echoes_the_prompt_and_cuts_at_the_stop_strings(case, sampled, generator):
    proc = sampled[case.name]
    assert proc.returncode == 0, proc.stderr
    uncut = generator.generate(case.prompt, max_new_tokens=NEW_TOKENS, temperature=0)[0]
    generated = uncut[len(case.prompt) :]
    cuts = [generated.find(s) for s in case.stop if s in generated]
    assert bool(cuts) == bool(case.stop), "each case's stop strings must occur in the script"
    expected = case.prompt + generated[: min(cuts)] if cuts else uncut
    assert proc.stdout == expected + "\n"


def test_an_empty_prompt_and_non_utf8_input_are_refused_with_one_line(scripted_run):
    assert one_line_error(sample_command(scripted_run, "prompt=")) == "error: prompt is empty: give at least one character (the default is a newline)"
    proc = subprocess.run(
        [sys.executable, "-m", "nanogpt.sample", f"run_dir={scripted_run}", "prompt=-"],
        cwd=ROOT,
        env=cli_env(),
        input=b"\xff\xfe",
        capture_output=True,
    )
    assert one_line_error(subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(), proc.stderr.decode())) == (
        "error: prompt=-: cannot read standard input as UTF-8 text (UnicodeDecodeError)"
    )


# ----------------------------------------------------------------------------- training and wandb

WANDB_NAME = "O Romeo, Romeo! [run 1] a=b ${x} $HOME #1 "
WANDB_NOTES = "Tried:\n\t'quoted', \"double\", ${oc.env:HOME}, C:\\path\\"
WANDB_TAGS = ["a,b", "[x]", " true ", "${y}"]
WANDB_KEYS = {"name": WANDB_NAME, "notes": WANDB_NOTES, "tags": WANDB_TAGS}


def free_text_of(wandb: object) -> dict[str, object]:
    """The free-text keys of a wandb config node or dict, resolved."""
    plain = OmegaConf.to_container(wandb, resolve=True) if isinstance(wandb, DictConfig) else wandb
    return {key: plain[key] for key in WANDB_KEYS}


def logged_run(wandb_file: Path) -> dict[str, object]:
    """What a wandb log holds of its run: id, name, notes, tags and the logged wandb.* config."""
    [run] = [r.run for r in records(wandb_file) if r.WhichOneof("record_type") == "run"]
    config = run_info(wandb_file)["config"]["wandb"]
    return {"id": run.run_id, "name": run.display_name, "notes": run.notes, "tags": list(run.tags), "config": free_text_of(config)}


@pytest.fixture(scope="module")
def wandb_run(data_dir, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("wandb") / "run"
    free_text = [f"wandb.name={WANDB_NAME}", f"wandb.notes={WANDB_NOTES}", *(f"wandb.tags={tag}" for tag in WANDB_TAGS)]
    run_cli(
        "nanogpt.train",
        *TINY,
        "max_iters=2",
        "eval_interval=2",
        "logger=wandb",
        "wandb.sample_tokens=0",
        *free_text,
        f"dataset.data_dir={data_dir}",
        f"hydra.run.dir={run_dir}",
    )
    return run_dir


def test_training_hands_wandb_and_its_records_the_exact_text(wandb_run, hydra_compose):
    assert free_text_of(OmegaConf.load(wandb_run / ".hydra" / "config.yaml").wandb) == WANDB_KEYS
    assert free_text_of(json.loads(load_checkpoint(wandb_run / "ckpt_last.pt")["config"])["wandb"]) == WANDB_KEYS
    [wandb_file] = wandb_run.glob("wandb/offline-run-*/run-*.wandb")
    logged = logged_run(wandb_file)
    assert {key: logged[key] for key in WANDB_KEYS} == WANDB_KEYS and logged["config"] == WANDB_KEYS
    # The overrides Hydra recorded compose the same text again (read as plain YAML: OmegaConf
    # would resolve the escapes they hold).
    recorded = yaml.safe_load((wandb_run / ".hydra" / "overrides.yaml").read_text())
    assert free_text_of(compose(config_name="config", overrides=[o for o in recorded if not o.startswith("hydra.")]).wandb) == WANDB_KEYS


def test_a_resumed_run_keeps_the_exact_text_and_takes_new_notes_exactly(wandb_run, data_dir):
    # The checkpoint holds the resolved config, where ${x} is plain text: resuming must not turn
    # it back into an interpolation, nor the ${z} of notes given on resume.
    notes = "resumed: ${z}, \\${w} 'again'"
    run_cli("nanogpt.train", "init_from=resume", f"run_dir={wandb_run}", "max_iters=4", f"wandb.notes={notes}", f"dataset.data_dir={data_dir}")
    first, second = (logged_run(f) for f in sorted(wandb_run.glob("wandb/offline-run-*/run-*.wandb")))
    assert second["id"] == first["id"] and second["name"] == WANDB_NAME and second["tags"] == WANDB_TAGS
    assert second["notes"] == notes
    assert free_text_of(json.loads(load_checkpoint(wandb_run / "ckpt_last.pt")["config"])["wandb"]) == {**WANDB_KEYS, "notes": notes}
