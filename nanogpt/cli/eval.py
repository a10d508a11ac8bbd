"""`nanogpt-eval` (and `python -m nanogpt.eval`): a run on benchmarks of EleutherAI's
lm-evaluation-harness (nanogpt.evaluation).

    nanogpt-eval run_dir=outputs/2026-11-25/17-03-11 tasks=hellaswag,arc_easy
    nanogpt-eval run_dir=... tasks=hellaswag limit=200 batch_size=32 checkpoint=last
    nanogpt-eval run_dir=... tasks=my_task include_path=my_tasks/     # task YAMLs of your own

Each task's results go to `<run_dir>/eval/<task>.json` (written atomically) and a table is
printed. `limit` caps the documents per task (a fraction below 1 takes that share), `include_path`
is a folder of task YAMLs in lm_eval's format (lm_eval's own --include_path). Training runs the
same tasks on a schedule with eval_tasks=[...] eval_tasks_interval=N.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from nanogpt.cli.launch import launch, run_or_exit
from nanogpt.config import CONF_DIR, validate_eval


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Run cfg.tasks on the run's checkpoint; write, print and return the scores."""
    from nanogpt.evaluation.harness import load_tasks, require_lm_eval, run_tasks, scores, write_results

    validate_eval(cfg)
    go_offline_where_the_hub_is_unreachable()
    require_lm_eval()
    tasks = load_tasks(list(cfg.tasks), cfg.include_path)  # before the checkpoint: a bad task fails at once
    from lm_eval.utils import make_table

    from nanogpt.evaluation.lm import NanoGPTLM

    lm = NanoGPTLM.from_run(cfg.run_dir, cfg.checkpoint, cfg.system.device, cfg.system.dtype, cfg.batch_size)
    results = run_tasks(lm, tasks, cfg.limit, cfg.include_path)
    about = {"run_dir": str(cfg.run_dir), "checkpoint": str(cfg.checkpoint), "limit": cfg.limit}
    written = write_results(results, Path(cfg.run_dir) / "eval", about)
    print(make_table(results))
    if results.get("groups"):
        print(make_table(results, "groups"))
    print(f"written: {', '.join(str(p) for p in written)}")
    return scores(results)


def go_offline_where_the_hub_is_unreachable() -> None:
    """Without a network, lm_eval's datasets retry the hub for half a minute, in twenty lines, before
    the task's data is found missing: where one quick request finds the hub silent, the Hugging Face
    libraries are told to read their caches only (before they are imported: they read it then)."""
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return
    from nanogpt.data.hub import hub_unreachable

    reason = hub_unreachable()
    if reason is not None:
        os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
        logging.getLogger(__name__).info("the Hugging Face hub cannot be reached (%s): the tasks' data is read from the cache only", reason)


def task_list_argument(argv: list[str]) -> list[str]:
    """`tasks=hellaswag,arc_easy` (lm_eval's own way to name several tasks) as the list override
    `tasks=[hellaswag,arc_easy]`: Hydra would read the commas as a sweep."""
    return [f"tasks=[{arg[len('tasks=') :]}]" if arg.startswith("tasks=") and not arg.startswith("tasks=[") else arg for arg in argv]


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="eval")
def main(cfg: DictConfig) -> None:
    run_or_exit(lambda: evaluate(cfg))


def cli() -> None:
    """`nanogpt-eval` and `python -m nanogpt.eval`."""
    sys.argv[1:] = task_list_argument(sys.argv[1:])
    launch(main, "eval")
