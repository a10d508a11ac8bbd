"""Everything a training run works with, built from its config: the device and precision, the
data, the model (from scratch, GPT-2's weights or a checkpoint), the optimizer, the train state,
the checkpointer and the trackers. The loop (nanogpt.training.loop) only uses them."""

from __future__ import annotations

import functools
import json
import logging
import random
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.nn.parallel import DistributedDataParallel as DDP

from nanogpt import memory
from nanogpt.checkpoint import Checkpointer, TrainState
from nanogpt.config import Strategy, validate_parallelism
from nanogpt.config.resume import override_keys
from nanogpt.data import TRAIN_DATA_STREAM, TokenFile, dataset_dir, open_splits, padded_vocab_size, prepare_config, same_tokenizer, stream_seed
from nanogpt.distributed import Dist, split_accumulation
from nanogpt.dtype_probe import DtypeProbe, choose_cpu_dtype
from nanogpt.errors import ConfigError, DataError, first_line
from nanogpt.evaluation.harness import TrainingBenchmarks
from nanogpt.huggingface.pretrained import load_pretrained
from nanogpt.model import GPT, GPTConfig
from nanogpt.optim import build_optimizer
from nanogpt.system import System, peak_flops
from nanogpt.training.guards import GradientHealth
from nanogpt.training.tracking import TENSORBOARD_DIR, TensorBoardRun, Tracker, Trackers, WandbRun

log = logging.getLogger(__name__)


@dataclass
class TrainingRun:
    """One training run's parts. Rank 0 alone writes into the run folder."""

    cfg: DictConfig
    run_dir: Path
    system: System
    world: Dist
    meta: dict[str, Any]  # the dataset's meta.json: tokenizer, vocabulary, token counts
    splits: dict[str, TokenFile]
    model_args: dict[str, Any]  # GPTConfig's arguments
    model: GPT  # the model itself, whose weights checkpoints hold
    step_model: torch.nn.Module  # what the steps call: the model in DDP across ranks, compiled if system.compile
    sharded: bool  # FSDP on several ranks: each rank holds a shard of the model
    micro_steps: int  # micro-batches per step on this rank
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    state: TrainState  # iteration, best val loss, clock, sampler and random streams
    checkpoints: Checkpointer
    health: GradientHealth
    tracker: Tracker | None
    benchmarks: TrainingBenchmarks | None
    dtype_probe: DtypeProbe | None
    tokens_per_iter: int
    flops_per_iter: int
    peak_flops: float | None  # of this device at this dtype, for MFU; None where unknown

    @property
    def sampler(self) -> torch.Generator:
        """The training batches' generator: one stream for all ranks (see loop.train_step)."""
        return self.state.sampler


def build(
    cfg: DictConfig, run_dir: Path, system: System, world: Dist, resume: dict[str, Any] | None, overrides: list[str], wandb_group: str | None
) -> TrainingRun:
    """The run's parts; from the checkpoint `resume` (loaded by nanogpt.checkpoint) where it continues one."""
    system = device_for(system, world)
    validate_parallelism(cfg, world.world_size, system.dtype)
    seed_everything(cfg.seed)
    if system.device_type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    meta, splits = open_data(cfg, system, resume)
    pretrained = load_pretrained(cfg, override_keys(overrides), meta) if cfg.init_from not in ("scratch", "resume") else None
    model_args = model_arguments(cfg, meta)
    # fsdp on one process trains the plain model (nothing to shard) but saves sharded
    # checkpoints, which any number of ranks can continue.
    sharded = cfg.system.strategy == Strategy.fsdp and world.enabled
    if cfg.system.check_memory:  # before anything of the run's size is allocated (the dtype probe's block included)
        dtype_bound = "float32" if system.dtype == "auto" else system.dtype  # auto: the larger of its choices
        needs = memory.training(
            model_args, cfg.dataset.batch_size, cfg.gradient_accumulation_steps, dtype_bound, world.world_size if sharded else 1, cfg.eval_only
        )
        memory.check(needs, system.device, "this run")
    probe = None
    if system.dtype == "auto":
        dtype, probe = settle_cpu_dtype(model_args, cfg.dataset.batch_size, world, resume)
        system = replace(system, dtype=dtype)
    if system.compile and (failure := compile_failure(system.device)):
        log.warning("system.compile: torch.compile cannot build kernels on this machine (%s); training without it", failure)
        system = replace(system, compile=False)

    model = GPT(GPTConfig(**model_args))
    if pretrained is not None:
        model.load_state_dict(pretrained)
    model.to(system.device)
    if sharded:
        from nanogpt.fsdp import shard_model  # torch.distributed.fsdp: only where a run shards

        shard_model(model, system, world.world_size)  # before the optimizer: parameters become DTensors
    optimizer = build_optimizer(model, cfg.optimizer, system.device_type)
    scaler = torch.amp.GradScaler(system.device_type, enabled=system.dtype == "float16")
    # One training-data stream for all ranks: each step draws every rank's micro-batch offsets
    # and each rank takes its own share, so N ranks see exactly the batches that one process
    # with N times the accumulation would.
    sampler = torch.Generator().manual_seed(stream_seed(cfg.seed, TRAIN_DATA_STREAM))
    if world.enabled:
        torch.manual_seed(cfg.seed + world.rank)  # after the weights: same init, own dropout masks
    state = TrainState(
        model_args=model_args,
        config=OmegaConf.to_container(cfg, resolve=True),
        meta=meta,
        system={"device": system.device, "dtype": system.dtype, "compile": system.compile},
        scaler=scaler,
        sampler=sampler,
        world=world,
    )
    checkpoints = Checkpointer(
        run_dir, world, sharded_format=cfg.system.strategy == Strategy.fsdp, model_sharded=sharded, keep_last_k=cfg.keep_last_k
    )
    if resume is not None:
        checkpoints.restore(resume, model, optimizer, state)

    tokens_per_iter = cfg.gradient_accumulation_steps * cfg.dataset.batch_size * cfg.dataset.block_size
    return TrainingRun(
        cfg=cfg,
        run_dir=run_dir,
        system=system,
        world=world,
        meta=meta,
        splits=splits,
        model_args=model_args,
        model=model,
        step_model=wrap_model(model, system, world, sharded),
        sharded=sharded,
        micro_steps=split_accumulation(cfg.gradient_accumulation_steps, world),
        optimizer=optimizer,
        scaler=scaler,
        state=state,
        checkpoints=checkpoints,
        health=GradientHealth(torch.device(system.device), world),
        tracker=trackers(cfg, run_dir, world, state, wandb_group),
        benchmarks=benchmarks(cfg, world),
        dtype_probe=probe,
        tokens_per_iter=tokens_per_iter,
        flops_per_iter=model.flops_per_token() * tokens_per_iter,
        peak_flops=peak_flops(system),
    )


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


def open_data(cfg: DictConfig, system: System, resume: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, TokenFile]]:
    """The dataset's metadata and its train and val token files, prepared first where they are
    not. A resumed run must see the tokens it trained on: the same tokenizer, and (unless it only
    evaluates) the same corpus."""
    data = cfg.dataset
    meta = prepare_config(data)
    splits = open_splits(dataset_dir(data.data_dir, data.name), meta, data.block_size, system.device)
    if resume is not None:
        saved = json.loads(resume["dataset_meta"])
        if not same_tokenizer(saved, meta):
            raise ConfigError(
                f"dataset {data.name} is tokenized differently from the data this checkpoint was trained on; "
                f"evaluate it on a dataset with the same tokenizer"
            )
        if not cfg.eval_only and saved.get("source_sha256") != meta.get("source_sha256"):
            raise DataError(
                f"dataset {data.name} now holds another corpus than the one this run trained on "
                f"({meta.get('source')} changed since: sha256 {str(saved.get('source_sha256'))[:12]}... then, "
                f"{str(meta.get('source_sha256'))[:12]}... now); to continue this run, put the original text back "
                f"or give it dataset.data_dir=<a copy prepared from it>; to train on the new text, start a new run"
            )
    return meta, splits


def model_arguments(cfg: DictConfig, meta: dict[str, Any]) -> dict[str, Any]:
    """GPTConfig's arguments, as plain data (a checkpoint holds them): cfg.model, the dataset's
    context length, and a vocabulary that is model.vocab_size or else the dataset's (padded for
    GPT-2 BPE)."""
    args = {**OmegaConf.to_container(cfg.model, enum_to_str=True), "block_size": cfg.dataset.block_size}
    args["vocab_size"] = args["vocab_size"] or padded_vocab_size(meta)
    if args["vocab_size"] < meta["vocab_size"]:
        raise ConfigError(f"model.vocab_size={args['vocab_size']} is invalid: dataset {meta['dataset']} has {meta['vocab_size']} tokens")
    return args


def settle_cpu_dtype(model_args: dict[str, Any], batch_size: int, world: Dist, resume: dict[str, Any] | None) -> tuple[str, DtypeProbe | None]:
    """system.dtype=auto on a CPU: the precision a resumed CPU run trained in (so that it
    continues exactly), else the faster one measured at this run's shapes, by rank 0 alone
    (ranks timing at once would slow each other, and must agree anyway)."""
    trained_in = (resume or {}).get("system", {})
    if str(trained_in.get("device", "")).startswith("cpu") and trained_in.get("dtype") in ("float32", "bfloat16"):
        log.info("dtype=auto: %s, the precision this run trained in", trained_in["dtype"])
        return trained_in["dtype"], None
    probe = choose_cpu_dtype(model_args, batch_size) if world.is_main else None
    if world.enabled:
        shared = [probe]
        torch.distributed.broadcast_object_list(shared, src=0)
        probe = shared[0]
    assert probe is not None
    log.info("%s", probe.describe())
    return probe.dtype, probe


def device_for(system: System, world: Dist) -> System:
    """The run's system with the device this process trains on: under DDP on GPUs, its local
    rank's GPU. That GPU becomes the current CUDA device, also for one process on cuda:N, so that
    kernels and allocations that name no device (NCCL's, torch.compile's) go there too."""
    if system.device_type != "cuda":
        return system
    if world.enabled:
        system = replace(system, device=f"cuda:{world.local_rank}")
    device = torch.device(system.device)
    if device.index is not None:  # plain "cuda" is the current device already (set_device refuses it)
        torch.cuda.set_device(device)
    return system


@functools.cache
def compile_failure(device: str) -> str | None:
    """Why torch.compile cannot build kernels for `device` here, in one line; None if it can.
    Compilation is lazy: without this probe a machine without a C++ compiler (CPU kernels) or
    Python's headers (the launchers of GPU kernels) would fail at the first step."""
    try:
        torch.compile(lambda x: x * 2 + 1)(torch.ones(8, device=device))
    except Exception as exc:  # whatever the toolchain raises, training can go on without compile
        return first_line(exc)
    return None


def wrap_model(model: GPT, system: System, world: Dist, sharded: bool = False) -> torch.nn.Module:
    """What the training steps call: the model in DDP across ranks (a sharded model is already
    distributed: nanogpt.fsdp), compiled if system.compile. compile(DDP(model)) rather than
    DDP(compile(model)): dynamo then splits the graph at DDP's gradient buckets (its
    DDPOptimizer), so that each bucket's all-reduce overlaps the backward of the layers below it
    instead of waiting for the whole compiled backward."""
    if world.enabled and not sharded:
        model = DDP(model, device_ids=[world.local_rank] if system.device_type == "cuda" else None)
    return torch.compile(model) if system.compile else model


def trackers(cfg: DictConfig, run_dir: Path, world: Dist, state: TrainState, wandb_group: str | None) -> Trackers | None:
    """The experiment trackers the config enables, on rank 0, for training (not eval_only)."""
    if not world.is_main or cfg.eval_only:
        return None
    runs: list[Tracker] = []
    if cfg.wandb.enabled:
        wandb_run = WandbRun(cfg.wandb, OmegaConf.to_container(cfg, resolve=True, enum_to_str=True), run_dir, state.wandb_run_id, wandb_group)
        state.wandb_run_id = wandb_run.id  # a resumed run continues its wandb run
        runs.append(wandb_run)
    if cfg.tensorboard.enabled:
        # The checkpoint holds everything up to iter_num: what the event files hold after it
        # was logged by a run killed before its next checkpoint, and is logged again.
        runs.append(TensorBoardRun(cfg.tensorboard, run_dir / TENSORBOARD_DIR, purge_step=state.iter_num + 1 if state.iter_num else 0))
    return Trackers(runs) if runs else None


def benchmarks(cfg: DictConfig, world: Dist) -> TrainingBenchmarks | None:
    """eval_tasks' benchmarks, loaded now (on rank 0) so that a bad task stops the run before it trains."""
    if not world.is_main or not cfg.eval_tasks or cfg.eval_only:
        return None
    return TrainingBenchmarks(list(cfg.eval_tasks), cfg.eval_tasks_limit, cfg.eval_tasks_include_path, cfg.dataset.batch_size)


def describe(run: TrainingRun) -> None:
    """The run's first log lines: where it writes, on what, which model, which data."""
    cfg, data = run.cfg, run.cfg.dataset
    log.info("run folder: %s", run.run_dir)
    ranks = f", {run.world.world_size} ranks ({cfg.system.strategy})" if run.world.enabled else ""
    log.info("system: %s%s", run.system.describe(), ranks)
    log.info(
        "model: %.2fM parameters, %d layers, %d heads, %d wide, context %d, vocabulary %d",
        run.model.num_params() / 1e6, cfg.model.n_layer, cfg.model.n_head, cfg.model.n_embd, data.block_size, run.model_args["vocab_size"],
    )  # fmt: skip
    log.info(
        "data: %s, %d train / %d val tokens; %d tokens per iteration",
        data.name,
        run.meta["train_tokens"],
        run.meta["val_tokens"],
        run.tokens_per_iter,
    )
