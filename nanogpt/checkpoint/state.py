"""What a checkpoint holds besides the weights and the optimizer's state: everything that exact
resume needs (the position in training, the data sampler, the GradScaler, every rank's random
streams) and what the run is (its config, the dataset's metadata, the model's arguments).

TrainState gathers these as one component with `state_dict()` and `load_state_dict()`, as
torchtitan's components do; nanogpt.checkpoint.store adds the weights and the optimizer's state
and writes the whole as one .pt file or a folder of shards.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from typing import Any

import numpy as np
import torch

from nanogpt.checkpoint.format import CKPT_FORMAT
from nanogpt.distributed import Dist, gather_to_main
from nanogpt.version import __version__

log = logging.getLogger(__name__)


class TrainState:
    """The progress of a training run (iteration, best val loss, training time) and the pieces of
    state beside the model that a checkpoint must restore for the run to continue bit for bit."""

    def __init__(
        self,
        *,
        model_args: dict[str, Any],
        config: dict[str, Any],
        meta: dict[str, Any],
        system: dict[str, Any],
        scaler: torch.amp.GradScaler,
        sampler: torch.Generator,
        world: Dist,
    ):
        self.model_args, self.config, self.meta, self.system = model_args, config, meta, system
        self.scaler, self.sampler, self.world = scaler, sampler, world
        self.iter_num = 0
        self.best_val_loss = math.inf
        self.wandb_run_id: str | None = None
        self._time_before = 0.0  # seconds trained by the runs this one continues
        self._clock_started: float | None = None

    def start_clock(self) -> None:
        """Start counting training time, once this process's first step is done: warm-up
        (compiling the first step, an evaluation at start, which compiles its own graph) is no
        part of a time budget."""
        if self._clock_started is None:
            self._clock_started = time.perf_counter()

    @property
    def elapsed(self) -> float:
        """Seconds of training, which time_budget_s limits and checkpoints carry over."""
        running = time.perf_counter() - self._clock_started if self._clock_started is not None else 0.0
        return self._time_before + running

    def state_dict(self) -> dict[str, Any]:
        """Every key of a checkpoint but "model" and "optimizer". A collective: every rank's random
        streams are gathered to rank 0, so call it on every rank."""
        return {
            "format": CKPT_FORMAT,
            "model_args": self.model_args,
            "scaler": self.scaler.state_dict(),
            "iter_num": self.iter_num,
            "best_val_loss": self.best_val_loss,
            "train_time_s": self.elapsed,
            "data": {"train_generator": self.sampler.get_state()},
            "rng": gather_to_main(capture_rng_state(), self.world),
            "system": self.system,
            "config": json.dumps(self.config),
            "dataset_meta": json.dumps(self.meta),
            "versions": {"nanogpt": __version__, "torch": str(torch.__version__)},
            "wandb_run_id": self.wandb_run_id,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint's state: this rank's random streams (rank r of a run saved by
        fewer ranks takes rank r mod their number's: its dropout masks then differ, and it says so)."""
        self.scaler.load_state_dict(state["scaler"])
        self.sampler.set_state(state["data"]["train_generator"])
        rng = state["rng"]
        if len(rng) != self.world.world_size:
            log.warning("the checkpoint holds RNG states of %d rank(s), this run has %d: dropout masks will differ", len(rng), self.world.world_size)
        restore_rng_state(rng[self.world.rank % len(rng)])
        self.iter_num = state["iter_num"]
        self.best_val_loss = state["best_val_loss"]
        self._time_before = state["train_time_s"]
        self.wandb_run_id = state.get("wandb_run_id")


def capture_rng_state() -> dict[str, Any]:
    """Every global random stream, as plain data (numpy's key array becomes a list)."""
    version, mt_state, gauss = random.getstate()
    np_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "python": [version, list(mt_state), gauss],
        "numpy": {
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": np_state["state"]["pos"],
            "has_gauss": np_state["has_gauss"],
            "gauss": np_state["gauss"],
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        # The stream of this process's own GPU only: a run resumed on a machine with fewer GPUs
        # (or another CUDA_VISIBLE_DEVICES) must not need a state for every GPU this one saw.
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    version, mt_state, gauss = state["python"]
    random.setstate((version, tuple(mt_state), gauss))
    np_state = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": "MT19937",
            "state": {"key": np_state["key"].numpy().astype(np.uint32), "pos": np_state["pos"]},
            "has_gauss": np_state["has_gauss"],
            "gauss": np_state["gauss"],
        }
    )
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if isinstance(cuda, list):  # checkpoints before 2026-11-26 hold every visible GPU's state
            index = torch.cuda.current_device()
            cuda = cuda[index] if index < len(cuda) else cuda[0]
        torch.cuda.set_rng_state(cuda.cpu())
