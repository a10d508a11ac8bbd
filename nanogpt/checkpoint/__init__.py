"""A checkpoint's whole life, in one package:

    format   what a ckpt_*.pt file is: its names, the atomic write, the safe load
             (weights_only=True), and the check that its model_args fit its weights
    state    what it holds besides weights and optimizer: TrainState (state_dict/load_state_dict),
             every rank's random streams
    sharded  system.strategy=fsdp's ckpt_*.dcp/ folders of shards (DCP), written and read safely
    store    a run folder's checkpoints: the newest valid one, the Checkpointer that saves and
             restores a training run, clean-up after a killed save, loading a model for inference

A run writes ckpt_last (every evaluation, or at the end) and ckpt_best (whenever the val loss
improves); both are replaced by rename, never rewritten, so a kill leaves the previous one.
"""

from nanogpt.checkpoint.format import (
    CKPT_FORMAT,
    CKPT_NAMES,
    SHARDED_NAMES,
    check_model_args,
    checkpoint_path,
    load_checkpoint,
    save_checkpoint,
    sharded_checkpoint_path,
)
from nanogpt.checkpoint.state import TrainState, capture_rng_state, restore_rng_state
from nanogpt.checkpoint.store import (
    Checkpointer,
    all_checkpoints,
    clean_interrupted_saves,
    has_checkpoint,
    keep_snapshot,
    load_model,
    load_newest_valid,
    newest_checkpoint,
)
from nanogpt.errors import CheckpointError

__all__ = [
    "CKPT_FORMAT",
    "CKPT_NAMES",
    "SHARDED_NAMES",
    "CheckpointError",
    "Checkpointer",
    "TrainState",
    "all_checkpoints",
    "capture_rng_state",
    "check_model_args",
    "checkpoint_path",
    "clean_interrupted_saves",
    "has_checkpoint",
    "keep_snapshot",
    "load_checkpoint",
    "load_model",
    "load_newest_valid",
    "newest_checkpoint",
    "restore_rng_state",
    "save_checkpoint",
    "sharded_checkpoint_path",
]
