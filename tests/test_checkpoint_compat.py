"""Checkpoints written before the package was re-laid (tests/fixtures/run_before_refactor, made by
the code of commit 24600ad) still resume bit for bit: every piece of state is put back exactly,
a new checkpoint has the same layout, and the run continues as the old code's did."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from nanogpt.checkpoint import checkpoint_path, load_checkpoint
from nanogpt.config import validate_train
from nanogpt.distributed import Dist
from nanogpt.metrics import read_metrics
from nanogpt.system import cpu_flags, cpu_model_name, resolve_system
from nanogpt.training.loop import save
from nanogpt.training.run import load_resume
from nanogpt.training.setup import build
from tests.conftest import ROOT, run_cli, state_digest
from tests.test_config import compose_train

FIXTURE = ROOT / "tests" / "fixtures" / "run_before_refactor"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text())


def fixture_run(tmp_path: Path) -> Path:
    return Path(shutil.copytree(FIXTURE, tmp_path / "run", ignore=shutil.ignore_patterns("expected.json", "README.md")))


def test_every_piece_of_an_old_checkpoints_state_is_put_back_exactly(tmp_path, data_dir):
    run_dir = fixture_run(tmp_path)
    saved = load_checkpoint(checkpoint_path(run_dir, "last"))
    overrides = ["init_from=resume", f"run_dir={run_dir}", f"dataset.data_dir={data_dir}"]
    state, cfg = load_resume(compose_train(*overrides), run_dir, overrides)
    validate_train(cfg)
    run = build(cfg, run_dir, resolve_system(cfg.system.device, cfg.system.dtype, cfg.system.compile), Dist(), state, overrides, None)

    weights = run.model.state_dict()
    assert weights.keys() == saved["model"].keys() and all(torch.equal(weights[k], saved["model"][k]) for k in weights)
    optimizer = run.optimizer.state_dict()
    # The groups keep the config's hyperparameters (the schedule sets lr at every step).
    without_lr = lambda groups: [{k: v for k, v in group.items() if k != "lr"} for group in groups]  # noqa: E731
    assert without_lr(optimizer["param_groups"]) == without_lr(saved["optimizer"]["param_groups"])
    for index, per_param in saved["optimizer"]["state"].items():
        assert all(torch.equal(optimizer["state"][index][key], value) for key, value in per_param.items())
    assert torch.equal(run.sampler.get_state(), saved["data"]["train_generator"])
    streams = saved["rng"][0]
    assert torch.equal(torch.get_rng_state(), streams["torch"])  # dropout's stream, as the old run left it
    assert list(random.getstate()[1]) == streams["python"][1]
    assert np.array_equal(np.random.get_state()[1], streams["numpy"]["key"].numpy().astype(np.uint32))
    assert (run.state.iter_num, run.state.best_val_loss, run.state.elapsed) == (4, saved["best_val_loss"], saved["train_time_s"])
    assert run.model_args == saved["model_args"]

    # What the new code writes has the old layout, key for key.
    save(run, "last")
    written = load_checkpoint(checkpoint_path(run_dir, "last"))
    assert written.keys() == saved.keys()
    assert {key: written[key] for key in ("model_args", "system", "iter_num", "format")} == {
        key: saved[key] for key in ("model_args", "system", "iter_num", "format")
    }


def test_an_old_checkpoint_continues_as_the_old_code_continued_it(tmp_path, data_dir):
    run_dir = fixture_run(tmp_path)
    run_cli("nanogpt.train", "init_from=resume", f"run_dir={run_dir}", f"dataset.data_dir={data_dir}")
    records = read_metrics(run_dir / "metrics.jsonl")
    losses = {str(r["iter"]): r["loss"] for r in records if r["event"] == "train" and r["iter"] > 4}
    assert losses.keys() == EXPECTED["train_losses"].keys()
    # The same batches and dropout masks as the old run's (a wrong sampler or stream moves a
    # loss by ~1e-2); float rounding may differ on another CPU's kernels.
    for it, loss in EXPECTED["train_losses"].items():
        assert abs(losses[it] - loss) < 1e-4, (it, losses[it], loss)
    val = [r["val_loss"] for r in records if r["event"] == "eval" and r["iter"] == 8]
    assert val and abs(val[0] - EXPECTED["val_loss_at_8"]) < 1e-4
    same_machine = (
        cpu_model_name() == EXPECTED["cpu"]
        and sorted(f for f in cpu_flags() if f.startswith(("avx", "amx", "fma"))) == EXPECTED["cpu_flags"]
        and torch.__version__ == EXPECTED["torch"]
    )
    if same_machine:  # the kind of CPU that wrote the fixture: bit for bit
        assert state_digest(checkpoint_path(run_dir, "last")) == EXPECTED["digest_at_8"]
