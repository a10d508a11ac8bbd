"""Training a GPT, in five modules:

    loop      the loop, top to bottom as in nanoGPT's train.py: schedule, step, evaluate, checkpoint, log
    setup     the run's parts built from its config: data, model, optimizer, train state, trackers
    guards    beside the loop: stop signals and the gradients' health
    run       around the loop: the run folder's lock, resuming, the process group, what is kept
    tracking  wandb and TensorBoard

`train(cfg, run_dir)` runs one, as `nanogpt-train` does (nanogpt.cli.train) without Hydra's part.
"""

from nanogpt.training.run import train

__all__ = ["train"]
