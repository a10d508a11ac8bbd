"""The commands' own --help, Hydra's refusals as one line, a fast offline init_from=gpt2, and tab
completion that offers the config folder's options (no schemas), all through the real commands."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, cli_env, one_line_error, run_cli

CONF = ROOT / "conf"
# Torch is imported by every command; one thread keeps parallel test runs from oversubscribing.
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def options(group: str) -> list[str]:
    return sorted(path.stem for path in (CONF / group).glob("*.yaml"))


def console_script(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is not on PATH: install the project with pip install -e ."
    return path


def run_script(name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [console_script(name), *args], cwd=ROOT, env=cli_env({**ONE_THREAD, **(env or {})}), capture_output=True, text=True, timeout=120
    )


def help_groups(text: str) -> dict[str, list[str]]:
    """The config groups of a --help text and the options it lists for each (defaults unmarked)."""
    block = re.search(r"^Config groups.*?\n(.*?)(?:\n\n|\Z)", text, re.S | re.M)
    if block is None:
        return {}
    groups: dict[str, str] = {}
    group = ""
    for line in block[1].splitlines():
        if re.match(r"  \S", line):  # a group's first line; wrapped options are indented further
            group, _, line = line.strip().partition(" ")
            groups[group] = ""
        groups[group] += " " + line.strip()
    return {g: sorted(o.strip(" []") for o in re.sub(r"\(.*?\)", "", listed).split(",")) for g, listed in groups.items()}


COMMAND_GROUPS = {
    "nanogpt-train": ["model", "dataset", "optimizer", "system", "logger", "experiment", "hparams_search", "hydra/launcher"],
    "nanogpt-sample": ["system"],
    "nanogpt-prepare": ["dataset"],
    "nanogpt-export": [],
}


@pytest.mark.parametrize("name", list(COMMAND_GROUPS))
def test_help_is_ours_and_lists_the_config_folder(name):
    proc = run_script(name, "--help")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    text = proc.stdout
    assert text.startswith(f"usage: {name} ") and "Powered by Hydra" not in text
    assert "_schema" not in text
    groups = help_groups(text)
    assert list(groups) == COMMAND_GROUPS[name]
    for group, listed in groups.items():
        if group == "hydra/launcher":  # ours, and Hydra's own launchers
            assert set(options(group)) | {"basic", "submitit_local", "submitit_slurm"} <= set(listed)
        else:
            assert listed == options(group), group
    examples = re.search(r"^Examples:\n(.*?)\n\n", text, re.S | re.M)[1].splitlines()
    assert examples and all(line.startswith(f"  {name}") for line in examples)
    assert f'eval "$({name} -sc install=bash)"' in text and f"{name} --hydra-help" in text and f"{name} --cfg job" in text


def test_train_help_lists_the_top_level_keys_with_their_defaults():
    proc = run_script("nanogpt-train", "-h")
    assert proc.returncode == 0
    for line in ("max_iters=2000", "init_from=scratch", "eval_at_start=true", "time_budget_s=null"):
        assert f"\n  {line}" in proc.stdout, line
    assert "outputs/<date>/<time>/" in proc.stdout and "multirun/<date>/<time>/" in proc.stdout


@pytest.mark.parametrize("module", ["nanogpt.train", "nanogpt.sample"])
def test_help_wherever_the_flag_stands(module, tmp_path):
    proc = run_cli(module, "model.n_layer=2", "--help", "max_iters=3", cwd=tmp_path, env=ONE_THREAD)
    assert proc.stdout.startswith("usage: nanogpt-")
    assert list(tmp_path.iterdir()) == []


def test_help_needs_no_torch():
    code = "import sys; from nanogpt.cli.help import command_help; command_help('config'); assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=cli_env(), check=True, timeout=60)


@pytest.mark.parametrize("args", [["--help"], ["-sc", "query=bash"]])
def test_console_help_and_completion_never_import_torch(args):
    # Each Tab press runs the command with -sc: importing torch would cost ~2 s per press.
    code = (
        "import atexit, sys\n"
        "atexit.register(lambda: print('torch imported' if 'torch' in sys.modules else 'no torch', file=sys.stderr))\n"
        f"sys.argv = ['nanogpt-train', *{args!r}]\n"
        "from nanogpt.cli import train\n"
        "train()\n"
    )
    env = cli_env({"COMP_LINE": "nanogpt-train model=", "COMP_POINT": "20"})
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stderr.strip().splitlines()[-1] == "no torch", proc.stderr
    assert "model=small" in proc.stdout


def options_line(group: str) -> str:
    return f"{group}=nope: no such {group}; the options are {', '.join(options(group))}"


REFUSALS = [
    ("nanogpt.train", ["optimizer.learnig_rate=1e-3"], "optimizer.learnig_rate is not a config key; did you mean optimizer.learning_rate?"),
    ("nanogpt.train", ["max_iter=5"], "max_iter is not a config key; did you mean max_iters?"),
    ("nanogpt.train", ["optimzer.learning_rate=1e-3"], "optimzer.learning_rate is not a config key; did you mean optimizer.learning_rate?"),
    ("nanogpt.train", ["optimizer.foo=1"], "optimizer.foo is not a config key; the keys of optimizer are beta1, beta2,"),
    ("nanogpt.train", ["+max_iter=5"], "max_iter is not a config key, and the config takes no new keys; did you mean max_iters?"),
    ("nanogpt.train", ["+model.n_layer=3"], "model.n_layer is already a config key; set it without the +: model.n_layer=3"),
    ("nanogpt.train", ["~max_iters"], "~max_iters: a key cannot be removed"),
    ("nanogpt.train", ["model.n_layer=abc"], "model.n_layer='abc' is invalid: must be an integer"),
    ("nanogpt.train", ["model.dropout=high"], "model.dropout='high' is invalid: must be a number"),
    ("nanogpt.train", ["eval_at_start=maybe"], "eval_at_start='maybe' is invalid: must be true or false"),
    ("nanogpt.train", ["time_budget_s=soon"], "time_budget_s='soon' is invalid: must be a number or null"),
    ("nanogpt.train", ["model=nope"], options_line("model")),
    ("nanogpt.train", ["model=smal"], "did you mean model=small?"),
    ("nanogpt.train", ["experiment=nope"], options_line("experiment")),
    ("nanogpt.train", ["model=null"], "model=null: nanogpt-train needs a model"),
    ("nanogpt.train", ["hydra/launcher=nope"], "hydra/launcher=nope: no such hydra/launcher; the options are basic, joblib, slurm_cpu, slurm_gpu,"),
    (
        "nanogpt.train",
        ["optimizer.learning_rate=("],
        """cannot read the argument 'optimizer.learning_rate=(' (extraneous input '('); quote a value""",
    ),
    ("nanogpt.train", ["foo"], "'foo' is not an override: write KEY=VALUE or GROUP=OPTION"),
    ("nanogpt.train", ["--bogus"], "unrecognized arguments: --bogus; see nanogpt-train --help"),
    ("nanogpt.train", ["-m", "model.n_layer=2,abc"], "model.n_layer='abc' is invalid: must be an integer"),
    ("nanogpt.train", ["-m", "optimizer.learnig_rate=1e-3,6e-4"], "did you mean optimizer.learning_rate?"),
    ("nanogpt.train", ["--cfg", "job", "max_iter=5"], "did you mean max_iters?"),
    ("nanogpt.sample", ["tempreature=0.5"], "tempreature is not a config key; did you mean temperature?"),
    ("nanogpt.sample", ["top_k=many"], "top_k='many' is invalid: must be an integer or null"),
    ("nanogpt.prepare", ["dataset=nope"], options_line("dataset")),
    ("nanogpt.export", ["overwrite=perhaps"], "overwrite='perhaps' is invalid: must be true or false"),
]


@pytest.mark.parametrize("module, args, message", REFUSALS, ids=[" ".join(args) for _, args, _ in REFUSALS])
def test_hydra_refusals_are_one_line_and_leave_nothing(module, args, message, tmp_path):
    proc = run_cli(module, *args, cwd=tmp_path, check=False, env=ONE_THREAD)
    line = one_line_error(proc)
    assert line.startswith("error: ") and message in line, line
    assert list(tmp_path.iterdir()) == []  # no outputs/ or multirun/ folder, no data prepared


def test_the_bad_syntax_advice_works(tmp_path):
    """The quoting that the refusal of `run_dir=(` suggests is read by Hydra as that very text."""
    advice = one_line_error(run_cli("nanogpt.train", "run_dir=(", cwd=tmp_path, check=False, env=ONE_THREAD)).rsplit(": ", 1)[1]
    (argument,) = shlex.split(advice)
    proc = run_cli("nanogpt.train", argument, "--cfg", "job", cwd=tmp_path, env=ONE_THREAD)
    assert "run_dir: (" in proc.stdout


# Online (HF_HUB_OFFLINE=0) with a refused port or a silent server: tests/test_faults.py.
@pytest.mark.parametrize("offline", ["1"])
def test_pretrained_gpt2_without_network_fails_fast(offline, data_dir, tmp_path):
    # Nothing cached, and the hub's address a closed local port: the no-network path on any machine.
    env = {**ONE_THREAD, "HF_HOME": str(tmp_path / "empty_hf_home"), "HF_HUB_OFFLINE": offline, "HF_ENDPOINT": "http://127.0.0.1:9"}
    start = time.monotonic()
    proc = run_cli(
        "nanogpt.train",
        "init_from=gpt2",
        f"dataset.data_dir={data_dir}",
        f"hydra.run.dir={tmp_path / 'run'}",
        "system.device=cpu",
        cwd=tmp_path,
        check=False,
        env=env,
        timeout=60,
    )
    elapsed = time.monotonic() - start
    line = one_line_error(proc)
    assert line.startswith("error: init_from=gpt2: OpenAI's GPT-2 weights (openai-community/gpt2) are not in the Hugging Face cache")
    assert ("HF_HUB_OFFLINE=1 forbids downloading them" if offline == "1" else "127.0.0.1:9 cannot be reached") in line
    assert "init_from=hf:<folder>" in line
    assert "Retry" not in proc.stdout + proc.stderr
    assert elapsed < 5, f"{elapsed:.1f} s"
    assert not (tmp_path / "run").exists()


def install_script(name: str) -> str:
    proc = run_script(name, "-sc", "install=bash")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_tab_completion_offers_the_options_of_conf_and_no_schema():
    script = install_script("nanogpt-train")
    function = re.search(r"complete .*-F (\w+) nanogpt-train", script)[1]
    line = "nanogpt-train model="
    bash = f"""
        eval "$(nanogpt-train -sc install=bash)"
        COMP_LINE={line!r}; COMP_POINT={len(line)}; COMP_WORDS=(nanogpt-train model=); COMP_CWORD=1
        {function}
        printf '%s\\n' "${{COMPREPLY[@]}}"
    """
    env = cli_env(ONE_THREAD)
    env["PATH"] = str(Path(console_script("nanogpt-train")).parent) + os.pathsep + env["PATH"]
    proc = subprocess.run(["bash", "-c", bash], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    offered = proc.stdout.split()
    assert sorted(offered) == [f"model={o}" for o in options("model")], proc.stdout + proc.stderr
    assert not any("schema" in o for o in offered)


def test_completion_query_works_for_the_console_name_and_python_m():
    for command in ([console_script("nanogpt-train")], [sys.executable, "-m", "nanogpt.train"]):
        env = cli_env({**ONE_THREAD, "COMP_LINE": "nanogpt-train optimizer=", "COMP_POINT": "24"})
        proc = subprocess.run([*command, "-sc", "query=bash"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0 and sorted(proc.stdout.split()) == [f"optimizer={o}" for o in options("optimizer")], proc.stdout + proc.stderr


def test_hydra_flags_still_work():
    assert "n_layer: 6" in run_script("nanogpt-train", "--cfg", "job", "model=small").stdout
    assert "Hydra (" in run_script("nanogpt-train", "--hydra-help").stdout
    assert "file://" in run_script("nanogpt-sample", "--info", "searchpath").stdout
    assert "complete -o nospace -o default -F" in install_script("nanogpt-prepare")
