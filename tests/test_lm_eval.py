"""Benchmarks through EleutherAI's lm-evaluation-harness: nanogpt-eval and eval_tasks during training.

A multiple-choice task in HellaSwag's format is made here (a jsonl file and a task YAML that
lm_eval loads with include_path), so that everything runs offline. The numbers are checked
against log-probabilities computed here token by token, and against lm_eval's own Hugging Face
model (HFLM) on the same run exported to a GPT-2 folder. One command-line launch; the rest runs
in this process.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from nanogpt.checkpoint import load_model
from nanogpt.cli.eval import evaluate
from nanogpt.cli.export import export
from nanogpt.cli.launch import run_or_exit
from nanogpt.config import ConfigError
from nanogpt.data import CharTokenizer, GPT2Tokenizer, Tokenizer
from nanogpt.data.tokenizers import train_bpe
from nanogpt.evaluation.harness import load_tasks
from nanogpt.evaluation.lm import NanoGPTLM
from nanogpt.model import GPT, GPTConfig
from nanogpt.system import System
from tests.conftest import TINY, copy_run, run_cli, train_here

TASK = "tiny_hellaswag"
# HellaSwag's fields (ctx, endings, label as a string), in characters that tiny Shakespeare has.
DOCS = [
    {
        "activity_label": "Romeo",
        "ctx": "ROMEO: But soft, what light through yonder",
        "endings": ["window breaks", "qqq zx", "is it", "kkk"],
        "label": "0",
    },
    {
        "activity_label": "Juliet",
        "ctx": "JULIET: O Romeo, Romeo! wherefore art",
        "endings": ["xq", "thou Romeo?", "the night", "zz zz zz"],
        "label": "1",
    },
    {
        "activity_label": "Citizen",
        "ctx": "First Citizen: Before we proceed any",
        "endings": ["qjx", "vv", "further, hear me speak.", "me"],
        "label": "2",
    },
    {
        "activity_label": "Hamlet",
        "ctx": "HAMLET: To be, or not to be, that is the",
        "endings": ["zzq", "question", "jjjj jj", "answer"],
        "label": "1",
    },
    {"activity_label": "Duke", "ctx": "DUKE: Now, what news", "endings": ["my lord?", "xxx", "qz", "of the king?"], "label": "3"},
]
TASK_YAML = """task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
output_type: multiple_choice
test_split: test
doc_to_text: "{{{{ctx}}}}"
doc_to_choice: "endings"
doc_to_target: "{{{{label}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""


def write_task(folder: Path, task: str, docs: list[dict], dataset_path: str = "json") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / f"{task}.jsonl"
    data.write_text("".join(json.dumps(doc) + "\n" for doc in docs))
    text = TASK_YAML.format(task=task, data=data).replace("dataset_path: json", f"dataset_path: {dataset_path}")
    (folder / f"{task}.yaml").write_text(text)
    return folder


# The same task with its data on the hub, where nobody has it: offline, it cannot be had.
HUB_TASK = "tiny_hellaswag_from_the_hub"


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The include_path folder of the tests (one, since lm_eval indexes its ~15,000 tasks anew
    for each folder)."""
    folder = write_task(tmp_path_factory.mktemp("tasks"), TASK, DOCS)
    write_task(folder, f"{TASK}_reversed", DOCS[::-1])
    return write_task(folder, HUB_TASK, DOCS, dataset_path="nanogpt-tests/never-cached")


def reference_logprob(model: GPT, vocab_size: int, context: list[int], continuation: list[int]) -> float:
    """log P(continuation | context), one token at a time: each from the model's last-position
    logits on the tokens before it, over the tokenizer's vocabulary. Too long for the model, the
    text loses its first tokens, one window for the whole continuation (lm_eval's hf model)."""
    start = max(0, len(context) + len(continuation) - 1 - model.config.block_size)
    total = 0.0
    with torch.no_grad():
        for i, token in enumerate(continuation):
            logits, _ = model(torch.tensor([(context + continuation[:i])[start:]]))
            total += F.log_softmax(logits[0, -1, :vocab_size].double(), dim=-1)[token].item()
    return total


def hand_scores(model: GPT, tokenizer: Tokenizer, docs: list[dict]) -> tuple[list[list[float]], float, float]:
    """Each ending's log-probability after its context (lm_eval's pair: the context's tokens, then
    what the whole text adds), and the accuracies lm_eval's acc and acc_norm (divided by the
    ending's length in characters) should report."""
    logprobs, acc, acc_norm = [], 0, 0
    for doc in docs:
        context = tokenizer.encode(doc["ctx"])
        scores = []
        for ending in doc["endings"]:
            whole = tokenizer.encode(doc["ctx"] + " " + ending)  # lm_eval's target delimiter is a space
            scores.append(reference_logprob(model, tokenizer.vocab_size, context, whole[len(context) :]))
        logprobs.append(scores)
        gold = int(doc["label"])
        acc += max(range(4), key=lambda i: scores[i]) == gold
        acc_norm += max(range(4), key=lambda i: scores[i] / len(doc["endings"][i])) == gold
    return logprobs, acc / len(docs), acc_norm / len(docs)


def requests(docs: list[dict]) -> list:
    from lm_eval.api.instance import Instance

    pairs = [(doc["ctx"], " " + ending) for doc in docs for ending in doc["endings"]]
    return [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)]


# ----------------------------------------------------------------------------- the command


def test_nanogpt_eval_scores_a_local_task_as_computed_by_hand(finished_run, task_dir, tmp_path):
    run_dir = copy_run(finished_run, tmp_path / "run")
    # Two tasks as lm_eval's own command names them: comma-separated.
    proc = run_cli(
        "nanogpt.eval",
        f"run_dir={run_dir}",
        f"tasks={TASK},{TASK}_reversed",
        f"include_path={task_dir}",
        "limit=4",
        "batch_size=3",
        "system.device=cpu",
    )
    assert f"{TASK}_reversed" in proc.stdout and "acc_norm" in proc.stdout  # lm_eval's table
    assert sorted(p.name for p in (run_dir / "eval").iterdir()) == [f"{TASK}.json", f"{TASK}_reversed.json"]  # no temp file left
    result = json.loads((run_dir / "eval" / f"{TASK}.json").read_text())
    assert result["task"] == TASK and result["limit"] == 4 and result["n_samples"]["effective"] == 4

    model, meta, _ = load_model(run_dir, "best", "cpu")
    from nanogpt.data import load_tokenizer

    _, acc, acc_norm = hand_scores(model, load_tokenizer(meta), DOCS[:4])
    assert result["metrics"]["acc,none"] == pytest.approx(acc)
    assert result["metrics"]["acc_norm,none"] == pytest.approx(acc_norm)


# ----------------------------------------------------------------------------- the model


def random_model(vocab_size: int, block_size: int = 64, **options) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=vocab_size, block_size=block_size, n_layer=2, n_head=2, n_embd=32, **options)).eval()


def tokenizer_of(kind: str) -> Tokenizer:
    text = " ".join(doc["ctx"] + " " + " ".join(doc["endings"]) for doc in DOCS)
    if kind == "char":
        return CharTokenizer(sorted(set(text) | {"\n"}))
    if kind == "gpt2":
        return GPT2Tokenizer()
    return train_bpe([text] * 20, 300)


CPU = System(device="cpu", dtype="float32", compile=False)
ARCHITECTURES = {
    "gpt2": {},
    "rope-rmsnorm-qknorm": dict(position="rope", norm="rmsnorm", qk_norm=True),
    "relu2-untied-bias": dict(activation="relu2", tie_embeddings=False, bias=True, gelu_approximate="tanh"),
}


@pytest.mark.parametrize("kind", ["char", "gpt2", "bpe"])
@pytest.mark.parametrize("architecture", list(ARCHITECTURES))
def test_loglikelihoods_are_the_models_own_for_every_tokenizer_and_architecture(kind, architecture):
    tokenizer = tokenizer_of(kind)
    # GPT-2's vocabulary padded as training pads it: the padding rows must not count.
    vocab = 50304 if kind == "gpt2" else tokenizer.vocab_size
    model = random_model(vocab, **ARCHITECTURES[architecture])
    lm = NanoGPTLM(model, tokenizer, CPU, batch_size=3)
    docs = DOCS[:3]
    expected, _, _ = hand_scores(model, tokenizer, docs)
    got = [logprob for logprob, _ in lm.loglikelihood(requests(docs))]
    assert got == pytest.approx([x for row in expected for x in row], abs=1e-4)


def test_unknown_characters_are_scored_as_an_exported_char_tokenizer_would():
    tokenizer = CharTokenizer(list(" abc"))
    lm = NanoGPTLM(random_model(4), tokenizer, CPU)
    assert lm.tok_encode("ab9c") == [1, 2, 0, 3]


# ----------------------------------------------------------------------------- against lm_eval's hf model


@pytest.fixture(scope="module")
def exported(tmp_path_factory, bpe_data_dir) -> tuple[Path, Path]:
    """A tiny GPT-2 BPE run (GPT-2's architecture) and its export to a transformers GPT-2 folder."""
    run_dir = tmp_path_factory.mktemp("bpe") / "run"
    train_here(run_dir, *TINY, "dataset=shakespeare", f"dataset.data_dir={bpe_data_dir}", "max_iters=4", "eval_interval=4", "eval_iters=2")
    folder = run_dir.parent / "hf"
    export(OmegaConf.create({"run_dir": str(run_dir), "checkpoint": "best", "out": str(folder), "overwrite": False}))
    return run_dir, folder


def test_same_numbers_as_lm_evals_hf_model_on_the_exported_run(exported, task_dir):
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from nanogpt.evaluation.harness import run_tasks, scores

    run_dir, folder = exported
    ours = NanoGPTLM.from_run(run_dir, device="cpu", dtype="float32", batch_size=4)
    theirs = HFLM(pretrained=str(folder), device="cpu", dtype="float32", batch_size=4)
    tasks = load_tasks([TASK], str(task_dir))
    assert scores(run_tasks(ours, tasks, None, str(task_dir))) == scores(run_tasks(theirs, tasks, None, str(task_dir)))

    long = "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer " * 3  # > block_size tokens
    pairs = [*(r.args for r in requests(DOCS)), ("", "Hello there"), (long, " the slings and arrows"), (long * 2, " of outrageous fortune")]
    lls = [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)]
    ours_ll, theirs_ll = ours.loglikelihood(lls), theirs.loglikelihood(lls)
    assert [x for x, _ in ours_ll] == pytest.approx([x for x, _ in theirs_ll], abs=1e-4)
    assert [greedy for _, greedy in ours_ll] == [greedy for _, greedy in theirs_ll]

    texts = [Instance("loglikelihood_rolling", {}, (text,), i) for i, text in enumerate([long, "A short text."])]
    assert ours.loglikelihood_rolling(texts) == pytest.approx(theirs.loglikelihood_rolling(texts), rel=1e-6)

    prompts = [
        Instance("generate_until", {}, (prompt, {"until": ["\n"], "max_gen_toks": 12}), i) for i, prompt in enumerate(["ROMEO:", "JULIET: O", long])
    ]
    assert ours.generate_until(prompts) == theirs.generate_until(prompts)


# ----------------------------------------------------------------------------- refusals


def compose_eval(*overrides: str):
    from tests.test_config import CONF

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="eval", overrides=list(overrides))


def refusal(capsys, cfg) -> str:
    """The one line (and exit status 2) of nanogpt-eval refusing cfg."""
    with pytest.raises(SystemExit) as exit_info:
        run_or_exit(lambda: evaluate(cfg))
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def test_refusals_are_one_line(finished_run, task_dir, capsys, monkeypatch):
    run = f"run_dir={finished_run}"
    local = f"include_path={task_dir}"
    line = refusal(capsys, compose_eval(run, "tasks=[tiny_helaswag]", local, "system.device=cpu"))
    assert line == f"error: tasks=tiny_helaswag: no such lm_eval task (did you mean {TASK}?)"

    # Data on the hub that is not cached, and no network (HF_DATASETS_OFFLINE=1, tests/conftest.py).
    line = refusal(capsys, compose_eval(run, f"tasks=[{HUB_TASK}]", local, "system.device=cpu"))
    assert line.startswith(f"error: task {HUB_TASK}: its data is not in the Hugging Face cache and cannot be downloaded")
    assert "nanogpt-tests/never-cached" in line and "run it once with a network connection" in line

    assert (
        refusal(capsys, compose_eval(run, f"tasks=[{TASK}]", local, "batch_size=0")) == "error: batch_size=0 is invalid: must be a positive integer"
    )
    assert "limit=0.0 is invalid" in refusal(capsys, compose_eval(run, f"tasks=[{TASK}]", local, "limit=0"))
    assert "include_path='nowhere' is invalid" in refusal(capsys, compose_eval(run, f"tasks=[{TASK}]", "include_path=nowhere"))
    assert refusal(capsys, compose_eval(run)).startswith("error: tasks is required")

    monkeypatch.setitem(sys.modules, "lm_eval", None)  # as if it were not installed
    assert refusal(capsys, compose_eval(run, f"tasks=[{TASK}]", local)).endswith('not installed: pip install "nanogpt[eval]"')


def test_eval_tasks_need_a_schedule():
    from nanogpt.config import validate_train
    from tests.test_config import compose_train

    with pytest.raises(ConfigError, match="^eval_tasks_interval=None is invalid: must be >= 1 when eval_tasks are given"):
        validate_train(compose_train(f"eval_tasks=[{TASK}]"))
    with pytest.raises(ConfigError, match="^eval_tasks_interval=0 is invalid"):
        validate_train(compose_train(f"eval_tasks=[{TASK}]", "eval_tasks_interval=0"))
    validate_train(compose_train("eval_tasks_interval=0"))  # no tasks, no schedule to check


def test_training_refuses_an_unknown_task_before_it_trains(data_dir, task_dir, tmp_path):
    with pytest.raises(ConfigError, match=rf"^eval_tasks=tiny_helaswag: no such lm_eval task \(did you mean {TASK}\?\)$"):
        train_here(
            tmp_path / "run",
            *TINY,
            f"dataset.data_dir={data_dir}",
            "eval_tasks=[tiny_helaswag]",
            "eval_tasks_interval=2",
            f"eval_tasks_include_path={task_dir}",
        )
    assert not list((tmp_path / "run").glob("ckpt_*.pt")) and not (tmp_path / "run" / "metrics.jsonl").exists()


# ----------------------------------------------------------------------------- during training


def records(run_dir: Path, event: str) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["event"] == event]


def test_training_runs_the_tasks_on_schedule_and_trains_as_without(data_dir, task_dir, tmp_path):
    # Dropout draws from torch's global generator, which lm_eval seeds.
    common = (*TINY, f"dataset.data_dir={data_dir}", "max_iters=5", "eval_interval=5", "log_interval=1", "eval_at_start=false", "model.dropout=0.1")
    train_here(
        tmp_path / "with", *common, f"eval_tasks=[{TASK}]", "eval_tasks_interval=2", f"eval_tasks_include_path={task_dir}", "eval_tasks_limit=3"
    )
    train_here(tmp_path / "without", *common)

    benchmarks = records(tmp_path / "with", "benchmark")
    assert [r["iter"] for r in benchmarks] == [2, 4, 5]  # every 2 iterations, and at the end
    assert all(set(r) >= {f"{TASK}/acc", f"{TASK}/acc_norm"} and 0 <= r[f"{TASK}/acc"] <= 1 for r in benchmarks)
    # Training's random streams are restored after each evaluation: the same losses as without.
    for event in ("train", "eval"):
        assert [r.get("loss", r.get("val_loss")) for r in records(tmp_path / "with", event)] == [
            r.get("loss", r.get("val_loss")) for r in records(tmp_path / "without", event)
        ]
