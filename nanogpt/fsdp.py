"""Fully sharded data parallelism (`system.strategy=fsdp`): FSDP2's fully_shard.

Under DDP every rank holds the whole model, its gradients and its optimizer state; under FSDP
each rank holds 1/N of them and gathers a unit's weights just before the unit runs, freeing them
after. Each transformer block is one unit, so that only one block's weights are whole at a time;
the root unit holds the rest (embeddings, final norm, head), so that the tied wte/lm_head matrix
is one parameter of one unit. Its checkpoints are folders of shards: nanogpt.checkpoint.sharded.
"""

from __future__ import annotations

import torch
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

from nanogpt.model import GPT
from nanogpt.system import System


def shard_model(model: GPT, system: System, world_size: int) -> None:
    """Shard model's parameters across the world_size ranks, in place: they become DTensors, so
    build the optimizer after this. Blocks first, then the root (FSDP groups bottom-up)."""
    mesh = init_device_mesh(system.device_type, (world_size,))
    # Weights are gathered and used in the run's dtype (half the traffic in bfloat16); gradients
    # are reduced in float32, so the average over ranks loses nothing, and the optimizer updates
    # the float32 shards. autocast still runs the precision-sensitive ops (softmax, the loss) in float32.
    low = None if system.dtype == "float32" else system.torch_dtype
    policy = MixedPrecisionPolicy(param_dtype=low, reduce_dtype=torch.float32)
    for block in model.transformer.h:
        fully_shard(block, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
