"""Benchmarks of EleutherAI's lm-evaluation-harness (lm_eval) on a trained GPT: loading tasks,
running them on a model (nanogpt.evaluation.lm), the scores, and the result files. Used by
`nanogpt-eval` (nanogpt.cli.eval) and by training's eval_tasks (TrainingBenchmarks).

lm_eval's task definitions, prompts and metrics are used, not ours. lm_eval is an optional
dependency, imported only here and only when benchmarks are asked for.
"""

from __future__ import annotations

import difflib
import functools
import importlib.metadata
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nanogpt.checkpoint import capture_rng_state, restore_rng_state
from nanogpt.data import Tokenizer
from nanogpt.errors import ConfigError, DataError, first_line, install_hint
from nanogpt.files import atomic_write_bytes
from nanogpt.model import GPT
from nanogpt.system import System

if TYPE_CHECKING:
    from lm_eval.api.model import LM
    from lm_eval.tasks import TaskManager

INSTALL_HINT = install_hint("eval")


def require_lm_eval() -> None:
    """Refuse in one line, before any work, where lm_eval is not installed."""
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        raise ConfigError(f"benchmarks need EleutherAI's lm-evaluation-harness (lm_eval), which is not installed: {INSTALL_HINT}") from None


@functools.cache
def task_manager(include_path: str | None) -> TaskManager:
    """lm_eval's index of its ~15,000 task configs (and include_path's): seconds to build, so one
    per process (training evaluates many times)."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=include_path)


def _unreachable_hub(exc: BaseException) -> bool:
    """Whether exc, or an exception it came from, says the Hugging Face hub could not be reached
    (no network, or HF_HUB_OFFLINE/HF_DATASETS_OFFLINE) for data that is not cached."""
    from huggingface_hub.errors import LocalEntryNotFoundError

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, (ConnectionError, LocalEntryNotFoundError)):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def load_tasks(names: list[str], include_path: str | None, key: str = "tasks") -> list[Any]:
    """lm_eval's Task (or Group) objects of the named tasks, their data loaded. An unknown name,
    data that cannot be downloaded, or a task that lm_eval cannot build is a one-line refusal naming
    the task (and `key`, the option that named it) and the way out."""
    manager = task_manager(include_path)
    for name in names:
        if name not in manager.all_tasks:
            close = difflib.get_close_matches(name, manager.all_tasks, n=1)
            hint = f" (did you mean {close[0]}?)" if close else " (`lm_eval ls tasks` lists them)"
            folder = "eval_tasks_include_path" if key == "eval_tasks" else "include_path"
            local = "" if include_path else f"; a task of your own needs {folder}=<a folder of task YAMLs>"
            raise ConfigError(f"{key}={name}: no such lm_eval task{hint}{local}")
    loaded = []
    for name in names:
        try:
            found = manager.load([name])
        except Exception as exc:  # lm_eval and datasets raise many kinds; each ends this command alike
            if _unreachable_hub(exc):
                raise DataError(
                    f"task {name}: its data is not in the Hugging Face cache and cannot be downloaded ({first_line(exc)}); "
                    f"run it once with a network connection to cache it, or point HF_HOME at a cache that holds it"
                ) from None
            raise DataError(f"task {name} cannot be loaded: {type(exc).__name__}: {first_line(exc)}") from None
        if name in found["groups"]:
            loaded.append(found["groups"][name])
        else:
            loaded += found["tasks"].values()  # the task, or a tag's tasks
    return loaded


def run_tasks(lm: LM, tasks: list[Any], limit: float | None, include_path: str | None) -> dict[str, Any]:
    """lm_eval's results of tasks (load_tasks') on lm: simple_evaluate's dict (results, configs,
    ...). It seeds Python's, numpy's and torch's generators; a caller with streams of its own (a
    training run) saves and restores them around it."""
    from lm_eval.evaluator import simple_evaluate

    # Our own lines and the table are the output; lm_eval's INFO lines are its inner workings.
    logging.getLogger("lm_eval").setLevel(logging.WARNING)
    count = int(limit) if limit is not None and limit >= 1 else limit
    # The manager that loaded the tasks: simple_evaluate would otherwise build one of its own (seconds).
    results = simple_evaluate(model=lm, tasks=tasks, limit=count, task_manager=task_manager(include_path), log_samples=False)
    assert results is not None  # None only on the ranks other than 0 of a multi-process lm_eval model
    return results


def scores(results: dict[str, Any]) -> dict[str, float]:
    """Each task's metrics as `<task>/<metric>` (acc, acc_norm, ...; a filter other than lm_eval's
    default `none` stays in the name), without standard errors: what training logs."""
    flat = {}
    for task, metrics in results["results"].items():
        for key, value in metrics.items():
            # lm_eval names each metric `<metric>,<filter>`; the other entries (name, sample_len) are no scores.
            if "," not in key or "_stderr" in key or not isinstance(value, (int, float)):
                continue
            flat[f"{task}/{key.removesuffix(',none')}"] = float(value)
    return flat


def write_results(results: dict[str, Any], folder: Path, about: dict[str, Any]) -> list[Path]:
    """`<folder>/<task>.json` per task (and group): its metrics, documents and shots, lm_eval's
    config of the task, and `about` (which checkpoint, which limit). Written atomically."""
    from lm_eval.utils import handle_non_serializable

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for task, metrics in results["results"].items():
        payload = {
            "task": task,
            **about,
            "metrics": {key: value for key, value in metrics.items() if key != "alias"},
            "n_samples": results.get("n-samples", {}).get(task),
            "n_shot": results.get("n-shot", {}).get(task),
            "version": results.get("versions", {}).get(task),
            "config": results.get("configs", {}).get(task),
            "lm_eval_version": importlib.metadata.version("lm_eval"),
        }
        path = folder / f"{task}.json"
        text = json.dumps(payload, indent=1, default=handle_non_serializable, allow_nan=True)
        atomic_write_bytes(path, (text + "\n").encode())
        written.append(path)
    return written


class TrainingBenchmarks:
    """Training's eval_tasks (nanogpt.training), on rank 0: the tasks are loaded when the run starts,
    so that an unknown task or data that cannot be downloaded stops it before it trains, and then
    run on the model as it trains."""

    def __init__(self, names: list[str], limit: float | None, include_path: str | None, batch_size: int):
        require_lm_eval()
        self.tasks = load_tasks(names, include_path, key="eval_tasks")
        self.limit, self.include_path, self.batch_size = limit, include_path, batch_size

    def run(self, model: GPT, tokenizer: Tokenizer, system: System) -> dict[str, float]:
        """The scores of the model now; the model's mode and every random stream are left as they
        were (lm_eval seeds the global generators), so training goes on as it would have."""
        from nanogpt.evaluation.lm import NanoGPTLM

        rng, was_training = capture_rng_state(), model.training
        try:
            return scores(run_tasks(NanoGPTLM(model, tokenizer, system, self.batch_size), self.tasks, self.limit, self.include_path))
        finally:
            restore_rng_state(rng)
            model.train(was_training)
