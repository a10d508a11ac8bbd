"""Data-parallel training across processes: torchrun, or the tasks of a SLURM job.

Every rank runs the same command. Rank 0 alone writes the run folder, logs and checkpoints; the
others only compute. Rank 0 chooses the run folder and the other ranks take its path, so that all
ranks use one folder, on one node or several. "Rank 0" is always the global rank (RANK,
SLURM_PROCID): on a node other than the first, the process whose LOCAL_RANK is 0 is a worker
like any other.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from nanogpt.errors import ConfigError


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def _submitit_tasks() -> tuple[int, int]:
    """(number of tasks, this task's rank) of the submitit job we run in; (1, 0) outside one."""
    if os.environ.get("SUBMITIT_EXECUTOR") == "slurm":
        return int(os.environ.get("SLURM_NTASKS", "1")), int(os.environ.get("SLURM_PROCID", "0"))
    if "SUBMITIT_LOCAL_NTASKS" in os.environ:
        return int(os.environ["SUBMITIT_LOCAL_NTASKS"]), int(os.environ.get("SUBMITIT_LOCAL_GLOBALID", "0"))
    return 1, 0


def env_rank() -> int:
    """This process's global rank, readable before any process group exists."""
    if "RANK" in os.environ:
        return int(os.environ["RANK"])
    return _submitit_tasks()[1]


def wants_distributed() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 or _submitit_tasks()[0] > 1


def backend() -> str:
    """The process group's backends: gloo for CPU tensors, and where there is a GPU, NCCL for CUDA
    tensors, so that gradients go GPU to GPU while the small agreements (stop, clock, RNG
    states) stay in host memory and never wait for the GPU. Whichever process opens the group
    first (agree_on_start_time, before the run's device is known) opens this one."""
    return "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"


def init() -> Dist:
    """Join the process group that torchrun or SLURM describes."""
    if not wants_distributed():
        return Dist()
    if "RANK" not in os.environ:
        export_submitit_env()
    if not dist.is_initialized():
        dist.init_process_group(backend=backend())
    return Dist(rank=dist.get_rank(), local_rank=int(os.environ.get("LOCAL_RANK", "0")), world_size=dist.get_world_size())


def export_submitit_env() -> None:
    """Inside a multi-task submitit job (SLURM: one task per GPU on each of its nodes), set torch's
    variables from the job's, as torchrun would: RANK from SLURM_PROCID, WORLD_SIZE from
    SLURM_NTASKS, LOCAL_RANK from SLURM_LOCALID, MASTER_ADDR the first node of SLURM_JOB_NODELIST
    (where task 0 runs) and MASTER_PORT a port drawn from the job id, the same in every task and
    in a requeued job (submitit's TorchDistributedEnvironment). sbatch passes the submitting
    shell's environment on, whose values describe no group of this job: they are replaced, but
    for a MASTER_PORT, which submitit takes as the port to use."""
    from submitit.helpers import TorchDistributedEnvironment

    TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)


def rank0_path(key: str, choose: Callable[[], str]) -> str:
    """choose() on rank 0, and rank 0's choice as an absolute path on every other rank, so that a
    rank started in another directory (on another node) or a moment later (when rank 0 already
    holds a run that choose() would pass over) uses rank 0's folder. It goes through the process
    group's key-value store, not a collective: Hydra may resolve a path more than once, and not
    equally often on every rank. Without a process group (one process, or a SLURM task before
    init), choose()."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return choose()
    store = dist.distributed_c10d._get_default_store()
    if dist.get_rank() == 0:
        path = choose()
        store.set(f"nanogpt/{key}", str(Path(path).absolute()))
        return path
    return store.get(f"nanogpt/{key}").decode()


def agree_on_start_time() -> None:
    """Give every rank rank 0's start time (NANOGPT_START_TIME), which names the run folder;
    without it each rank could make its own timestamped folder."""
    if "NANOGPT_START_TIME" in os.environ or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    if not dist.is_initialized():
        dist.init_process_group(backend=backend())
    stamp = [time.time() if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(stamp, src=0)
    os.environ["NANOGPT_START_TIME"] = repr(stamp[0])


def split_accumulation(total_steps: int, world: Dist) -> int:
    """Micro-steps per rank: the global batch stays gradient_accumulation_steps micro-batches."""
    if total_steps % world.world_size:
        raise ConfigError(
            f"gradient_accumulation_steps={total_steps} is invalid: must be divisible by the world size "
            f"{world.world_size} (each rank runs gradient_accumulation_steps / world_size micro-steps)"
        )
    return total_steps // world.world_size


def max_over_ranks(value: float, world: Dist) -> float:
    """The largest of the ranks' values, on every rank (so that all ranks decide alike). A CPU
    tensor, so gloo carries it: no GPU sync, no copy between host and device."""
    if not world.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.item()


def any_rank(flag: bool, world: Dist) -> bool:
    """True on every rank if it is true on any rank (so all ranks stop at the same step)."""
    return max_over_ranks(1.0 if flag else 0.0, world) > 0


def mean_over_ranks(value: torch.Tensor, world: Dist) -> torch.Tensor:
    if world.enabled:
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        value /= world.world_size
    return value


def gather_to_main(obj: Any, world: Dist) -> list[Any] | None:
    """[obj of rank 0, obj of rank 1, ...] on rank 0, None elsewhere."""
    if not world.enabled:
        return [obj]
    out: list[Any] | None = [None] * world.world_size if world.is_main else None
    dist.gather_object(obj, out, dst=0)
    return out


def shutdown(all_ranks_done: bool) -> None:
    """Leave the process group. When every rank finished, they first meet at a barrier, so that no
    rank tears its connections down while another still uses them (gloo can abort a process that
    sees its peer vanish). After an error the others may never arrive: no barrier then."""
    if dist.is_initialized():
        if all_ranks_done:
            dist.barrier()
        dist.destroy_process_group()
