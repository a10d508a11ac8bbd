"""Train a GPT.

    python -m nanogpt.train                                    # CPU quickstart: tiny Shakespeare, 4-layer model
    python -m nanogpt.train experiment=shakespeare_char         # nanoGPT's 10.7M-parameter GPU run
    python -m nanogpt.train init_from=resume run_dir=outputs/2026-11-25/17-03-11
    python -m nanogpt.train experiment=finetune_shakespeare_cpu         # fine-tune OpenAI's GPT-2 (124M)
    python -m nanogpt.train experiment=eval_gpt2                        # loss of GPT-2 on OpenWebText

Everything the run produces goes to its run folder (Hydra's output dir): `.hydra/`, `train.log`,
`metrics.jsonl`, `loss.png`, `ckpt_last.pt`, `ckpt_best.pt`; `.lock` while it trains (nanogpt.runlock).
A run stopped by a signal exits EXIT_STOPPED, one ended at once by a second Ctrl-C EXIT_INTERRUPTED.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import importlib
import json
import logging
import math
import os
import random
import signal
import socket
import sys
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel as DDP

import nanogpt
from nanogpt import distributed
from nanogpt.checkpoint import (
    CKPT_FORMAT,
    CheckpointError,
    check_model_args,
    capture_rng_state,
    checkpoint_path,
    has_checkpoint,
    restore_rng_state,
    keep_snapshot,
    newest_checkpoint,
    save_checkpoint,
    sharded_checkpoint_path,
)
from nanogpt.cli import PROCESS_START, launch, run_or_exit, run_sweep_job, undo_hydra_outputs
from nanogpt.config import CONF_DIR, validate_train
from nanogpt.errors import ConfigError, TrainingError, first_line
from nanogpt.free_text import as_text, quote_free_text
from nanogpt.distributed import Dist, any_rank, env_rank, gather_to_main, max_over_ranks, mean_over_ranks, split_accumulation
from nanogpt.data import DataError, TokenFile, dataset_dir, load_tokenizer, open_splits, padded_vocab_size, prepare_config, same_tokenizer
from nanogpt.metrics import MetricsLog, keep_metrics_until, plot_losses
from nanogpt.generation import generate_ids
from nanogpt.model import GPT, GPTConfig
from nanogpt.optim import build_optimizer
from nanogpt.pretrained import load_pretrained
from nanogpt.resume import check_belongs_to_run, live_runs, load_newest_valid, note_sweep_keys, override_keys, resumed_config
from nanogpt.runlock import RunFolderBusy, remove_temp_files, run_lock
from nanogpt.dtype_probe import DtypeProbe, choose_cpu_dtype
from nanogpt.fsdp import keep_sharded_snapshot, load_sharded, recover_interrupted_saves, save_sharded, shard_model
from nanogpt.eval import TrainingBenchmarks
from nanogpt.system import System, peak_flops, peak_memory_mb, resolve_system
from nanogpt.tracking import TENSORBOARD_DIR, TensorBoardRun, Tracker, Trackers, WandbRun, tensorboard_writer

log = logging.getLogger("nanogpt.train")

# Seeds of the random streams, derived from cfg.seed so that each stream is independent of the
# others: evaluation draws its batches from its own generator and so can never shift the
# training batches, whatever eval_interval or eval_iters are.
TRAIN_DATA_STREAM = 1
EVAL_DATA_STREAM = 2

# Under DDP the ranks decide together whether to stop (a signal, the time budget): a collective,
# which waits for every rank. They do so every AGREE_INTERVAL iterations and at each log line
# and evaluation (which wait anyway), so that other steps run without waiting; a signal then
# stops DDP training within AGREE_INTERVAL steps. A single process decides at every step.
AGREE_INTERVAL = 10

# Exit statuses besides nanogpt.errors' 1, 2 and 3 (README, "Where outputs go"). A run
# stopped by SIGINT, SIGTERM or SIGUSR2 at a step boundary, its checkpoint saved: not finished,
# but resumable; sysexits.h's EX_TEMPFAIL ("try again later"), so that scripts and schedulers
# can tell it from a finished run (0) and from a failure.
EXIT_STOPPED = 75
# A second Ctrl-C: ended at once, without a new checkpoint (the previous one is intact, since
# checkpoints are replaced by rename); 128 + SIGINT, as shells report an interrupted command.
EXIT_INTERRUPTED = 130


class RunStopped(BaseException):
    """Training stopped at a signal and saved what there was to save. A BaseException, like
    KeyboardInterrupt, so that a sweep's handling of failed jobs does not take it for one: the
    user asked the whole command to stop."""


def stream_seed(seed: int, stream: int) -> int:
    return (seed * 1_000_003 + stream * 7_919) % (2**63)


def agreement_due(iter_num: int, cfg: DictConfig, world: Dist) -> bool:
    """Whether this step boundary is one where the ranks decide whether to stop (AGREE_INTERVAL)."""
    return not world.enabled or any(iter_num % n == 0 for n in (AGREE_INTERVAL, cfg.log_interval, cfg.eval_interval))


def lr_at(it: int, opt: DictConfig, max_iters: int, budget_used: float = 0.0) -> float:
    """Linear warmup, then cosine decay to min_lr at lr_decay_iters, then min_lr. Under a time
    budget the decay follows whichever is further along: the iterations or the clock."""
    if not opt.decay_lr:
        return opt.learning_rate
    decay_iters = opt.lr_decay_iters if opt.lr_decay_iters is not None else max_iters
    if it < opt.warmup_iters:
        return opt.learning_rate * (it + 1) / (opt.warmup_iters + 1)
    if it >= decay_iters:
        return opt.min_lr
    progress = min(1.0, max((it - opt.warmup_iters) / max(1, decay_iters - opt.warmup_iters), budget_used))
    return opt.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (opt.learning_rate - opt.min_lr)


@torch.no_grad()
def estimate_loss(model: torch.nn.Module, splits: dict[str, TokenFile], cfg: DictConfig, system: System) -> dict[str, float]:
    """Mean loss over eval_iters batches per split. The batches are the same at every
    evaluation (a fresh generator with a fixed seed), so successive evaluations are comparable."""
    model.eval()
    losses = {}
    for split, tokens in splits.items():
        generator = torch.Generator().manual_seed(stream_seed(cfg.seed, EVAL_DATA_STREAM))
        total = torch.zeros((), device=system.device)
        for _ in range(cfg.eval_iters):
            x, y = tokens.batch(cfg.dataset.batch_size, generator)
            with system.autocast():
                _, loss = model(x, y)
            total += loss.float()
        losses[split] = (total / cfg.eval_iters).item()
    model.train()
    return losses


class StopRequest:
    """Turns SIGINT, SIGTERM and SIGUSR2 into a flag the loop checks at each step boundary, so a
    stop ends with a checkpoint instead of a half-finished step. A second Ctrl-C stops at once.

    Inside a submitit job (SLURM), submitit's own handlers requeue the job: SIGUSR2 (preemption
    or time limit) is handed over to them once the checkpoint is written, and SIGTERM, which
    SLURM sends before the USR2 of a preemption, only asks for a checkpoint and training goes on."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._checkpoint_only = False
        self._previous: dict[int, Any] = {}
        self._signum: int | None = None

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.signal_name is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if signum == signal.SIGTERM and _in_submitit_job():
            self._checkpoint_only = True
            return
        self.signal_name = signal.Signals(signum).name
        self._signum = signum

    def requested(self, world: Dist) -> bool:
        return any_rank(self.signal_name is not None, world)

    @contextmanager
    def installed(self) -> Iterator[StopRequest]:
        self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        try:
            yield self
        finally:
            for s, handler in self._previous.items():
                signal.signal(s, handler)

    def hand_over(self) -> bool:
        """After training stopped on SIGUSR2 and saved its checkpoint, let the handler that was
        there before (submitit's: requeue the job, then exit) do its part; True if there was one,
        which then decides how the process ends."""
        previous = self._previous.get(self._signum) if self._signum == signal.SIGUSR2 else None
        if callable(previous):
            previous(self._signum, None)
            return True
        return False


def _in_submitit_job() -> bool:
    return "SUBMITIT_EXECUTOR" in os.environ or "SUBMITIT_LOCAL_JOB_ID" in os.environ


class GradientHealth:
    """Watches every step for a non-finite loss and counts clipped steps, on the device, so
    that only the log line (which syncs anyway) pays for reading them."""

    def __init__(self, device: torch.device, world: Dist):
        self.device, self.world = device, world
        self._reset()

    def _reset(self) -> None:
        self.nonfinite = torch.zeros((), dtype=torch.bool, device=self.device)
        self.clipped = torch.zeros((), device=self.device)
        self.steps = 0
        self.grad_norm = torch.zeros((), device=self.device)

    def update(self, loss: torch.Tensor, grad_norm: torch.Tensor, grad_clip: float) -> None:
        self.nonfinite |= ~torch.isfinite(loss.detach())
        if grad_clip > 0:
            self.clipped += (grad_norm > grad_clip).float()
        self.grad_norm = grad_norm.detach()
        self.steps += 1

    def read(self, iter_num: int, run_dir: Path) -> dict[str, float]:
        """Grad norm and the fraction of clipped steps since the last read; raises TrainingError
        if any loss since then was NaN or infinite."""
        if any_rank(bool(self.nonfinite.item()), self.world):
            raise self.diverged(iter_num, "a training loss that is NaN or infinite", run_dir)
        stats = {"grad_norm": self.grad_norm.item(), "clip_fraction": self.clipped.item() / max(1, self.steps)}
        self._reset()
        return stats

    @staticmethod
    def diverged(iter_num: int, what: str, run_dir: Path) -> TrainingError:
        last = newest_checkpoint(run_dir, "last")
        kept = f"the last good checkpoint is kept in {last}" if last is not None else "no checkpoint was written"
        return TrainingError(
            f"training diverged by iter {iter_num} ({what}); stopped, {kept}. "
            f"Lower optimizer.learning_rate, raise optimizer.warmup_iters or set optimizer.grad_clip, then resume or restart"
        )


@contextmanager
def running_marker(run_dir: Path, write: bool) -> Iterator[None]:
    """`<run_dir>/.running` (host and pid) while training runs, so a report can tell a running
    run from one that crashed (the marker stays behind after a kill)."""
    if not write:
        yield
        return
    marker = run_dir / ".running"
    marker.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid()}))
    try:
        yield
    finally:
        marker.unlink(missing_ok=True)


def sample_text(model: GPT, meta: dict, max_new_tokens: int, system: System) -> str:
    """A short sample for the tracker, from token 0 and a fixed seed so that the samples of
    successive evaluations differ only by what the model learnt."""
    tokenizer = load_tokenizer(meta)
    start_ids = [0]
    generator = torch.Generator(device=system.device).manual_seed(0)
    idx = torch.tensor([start_ids], dtype=torch.long, device=system.device)
    was_training = model.training
    model.eval()
    with torch.no_grad(), system.autocast():
        out = generate_ids(model, idx, max_new_tokens, temperature=0.8, top_k=200, generator=generator, vocab_size=meta["vocab_size"])
    model.train(was_training)
    return tokenizer.decode(out[0].tolist())


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


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


class Trainer:
    """The state of one training run (model, optimizer, data streams, counters) and the steps
    that advance it. Rank 0 alone writes into the run folder."""

    def __init__(
        self,
        cfg: DictConfig,
        run_dir: Path,
        system: System,
        world: Dist,
        resume_state: dict[str, Any] | None,
        overrides: list[str],
        wandb_group: str | None,
    ):
        self.cfg, self.run_dir, self.world = cfg, run_dir, world
        self.system = system = device_for(system, world)
        self.micro_steps = split_accumulation(cfg.gradient_accumulation_steps, world)
        # fsdp on one process trains the plain model (nothing to shard) but saves sharded
        # checkpoints, which any number of ranks can continue.
        self.sharded = cfg.system.strategy == "fsdp" and world.enabled
        if self.sharded and system.dtype == "float16":
            raise ConfigError(
                "system.dtype='float16' is invalid with system.strategy=fsdp: its GradScaler would skip steps on some ranks only; "
                "use bfloat16 (or system.strategy=ddp)"
            )
        if self.sharded and cfg.eval_tasks and not cfg.eval_only:
            raise ConfigError(
                "eval_tasks is invalid with system.strategy=fsdp on several ranks: benchmarks run on rank 0 alone, "
                "which holds a shard of the model; train with system.strategy=ddp, or without eval_tasks"
            )

        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        np.random.seed(cfg.seed % 2**32)
        if system.device_type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True

        data = cfg.dataset
        self.meta = prepare_config(data)
        self.splits = open_splits(dataset_dir(data.data_dir, data.name), self.meta, data.block_size, system.device)
        if resume_state is not None:
            saved_meta = json.loads(resume_state["dataset_meta"])
            if not same_tokenizer(saved_meta, self.meta):
                raise ConfigError(
                    f"dataset {data.name} is tokenized differently from the data this checkpoint was trained on; "
                    f"evaluate it on a dataset with the same tokenizer"
                )
            if not cfg.eval_only and saved_meta.get("source_sha256") != self.meta.get("source_sha256"):
                raise DataError(
                    f"dataset {data.name} now holds another corpus than the one this run trained on "
                    f"({self.meta.get('source')} changed since: sha256 {str(saved_meta.get('source_sha256'))[:12]}... then, "
                    f"{str(self.meta.get('source_sha256'))[:12]}... now); to continue this run, put the original text back "
                    f"or give it dataset.data_dir=<a copy prepared from it>; to train on the new text, start a new run"
                )

        pretrained_state = None
        if cfg.init_from not in ("scratch", "resume"):
            pretrained_state = load_pretrained(cfg, override_keys(overrides), self.meta)
        self.model_args = _model_args(cfg, self.meta)
        self.dtype_probe: DtypeProbe | None = None
        if system.dtype == "auto":
            self.system = system = replace(system, dtype=self._settle_cpu_dtype(resume_state))
        self.raw_model = GPT(GPTConfig(**self.model_args))
        if pretrained_state is not None:
            self.raw_model.load_state_dict(pretrained_state)
        self.raw_model.to(system.device)
        if self.sharded:
            shard_model(self.raw_model, system, world.world_size)  # before the optimizer: parameters become DTensors
        self.optimizer = build_optimizer(self.raw_model, cfg.optimizer, system.device_type)
        self.scaler = torch.amp.GradScaler(system.device_type, enabled=system.dtype == "float16")
        # One training-data stream for all ranks: each step draws every rank's micro-batch
        # offsets and each rank takes its own share, so N ranks see exactly the batches that
        # one process with N times the accumulation would.
        self.train_generator = torch.Generator().manual_seed(stream_seed(cfg.seed, TRAIN_DATA_STREAM))
        if world.enabled:
            torch.manual_seed(cfg.seed + world.rank)  # after the weights: same init, own dropout masks

        self.iter_num, self.best_val_loss, self.elapsed_before = 0, float("inf"), 0.0
        self.stopped = False  # by a signal, before max_iters or the time budget
        self.wandb_run_id = resume_state.get("wandb_run_id") if resume_state else None
        if resume_state is not None:
            self._restore(resume_state)

        if system.compile and (failure := compile_failure(system.device)):
            log.warning("system.compile: torch.compile cannot build kernels on this machine (%s); training without it", failure)
            self.system = system = replace(system, compile=False)
        self.model = wrap_model(self.raw_model, system, world, self.sharded)
        self.tokens_per_iter = cfg.gradient_accumulation_steps * data.batch_size * data.block_size
        self.flops_per_iter = self.raw_model.flops_per_token() * self.tokens_per_iter
        self.peak = peak_flops(system)
        self.health = GradientHealth(torch.device(system.device), world)
        self.clock_started: float | None = None  # see elapsed
        runs: list[Tracker] = []
        if world.is_main and cfg.wandb.enabled and not cfg.eval_only:
            config = OmegaConf.to_container(cfg, resolve=True)
            wandb_run = WandbRun(cfg.wandb, config, run_dir, self.wandb_run_id, wandb_group)
            self.wandb_run_id = wandb_run.id
            runs.append(wandb_run)
        if world.is_main and cfg.tensorboard.enabled and not cfg.eval_only:
            # The checkpoint holds everything up to iter_num: what the event files hold after it
            # was logged by a run killed before its next checkpoint, and is logged again.
            runs.append(TensorBoardRun(cfg.tensorboard, run_dir / TENSORBOARD_DIR, purge_step=self.iter_num + 1 if self.iter_num else 0))
        self.tracker = Trackers(runs) if runs else None
        self.benchmarks = None
        if world.is_main and cfg.eval_tasks and not cfg.eval_only:
            self.benchmarks = TrainingBenchmarks(list(cfg.eval_tasks), cfg.eval_tasks_limit, cfg.eval_tasks_include_path, data.batch_size)

    def _settle_cpu_dtype(self, resume_state: dict[str, Any] | None) -> str:
        """system.dtype=auto on a CPU: the precision a resumed CPU run trained in (so that it
        continues exactly), else the faster one measured at this run's shapes, by rank 0 alone
        (ranks timing at once would slow each other, and must agree anyway)."""
        trained_in = (resume_state or {}).get("system", {})
        if str(trained_in.get("device", "")).startswith("cpu") and trained_in.get("dtype") in ("float32", "bfloat16"):
            log.info("dtype=auto: %s, the precision this run trained in", trained_in["dtype"])
            return trained_in["dtype"]
        probe = choose_cpu_dtype(self.model_args, self.cfg.dataset.batch_size) if self.world.is_main else None
        if self.world.enabled:
            shared = [probe]
            torch.distributed.broadcast_object_list(shared, src=0)
            probe = shared[0]
        assert probe is not None
        log.info("%s", probe.describe())
        self.dtype_probe = probe
        return probe.dtype

    def _restore(self, state: dict[str, Any]) -> None:
        configured = [{k: v for k, v in group.items() if k != "params"} for group in self.optimizer.param_groups]
        if "sharded" in state:  # a .dcp folder (nanogpt.fsdp.read_sharded), written by any number of ranks
            load_sharded(Path(state["sharded"]), self.raw_model, self.optimizer)
        elif self.sharded:
            raise ConfigError(
                f"system.strategy=fsdp cannot continue {self.run_dir}'s single-file checkpoint on several ranks: "
                f"continue it with system.strategy=ddp, or with system.strategy=fsdp on one process (which then saves sharded checkpoints)"
            )
        else:
            try:
                self.raw_model.load_state_dict(state["model"])
            except RuntimeError:
                raise CheckpointError(f"{self.run_dir}: the checkpoint's weights do not fit its own architecture {self.model_args}") from None
            self.optimizer.load_state_dict(state["optimizer"])
        # The saved groups carry the hyperparameters of the run that saved them; the config's
        # win, so that a resume can change the ones RESUMABLE_KEYS allows.
        for group, settings in zip(self.optimizer.param_groups, configured):
            group.update(settings)
        self.scaler.load_state_dict(state["scaler"])
        self.train_generator.set_state(state["data"]["train_generator"])
        rng = state["rng"]
        if len(rng) != self.world.world_size:
            log.warning("the checkpoint holds RNG states of %d rank(s), this run has %d: dropout masks will differ", len(rng), self.world.world_size)
        restore_rng_state(rng[self.world.rank % len(rng)])
        self.iter_num = state["iter_num"]
        self.best_val_loss = state["best_val_loss"]
        self.elapsed_before = state["train_time_s"]

    @property
    def elapsed(self) -> float:
        """Seconds of training, which time_budget_s limits and checkpoints carry over. The clock
        starts once this process's first step is done: warm-up (compiling the first step, an
        evaluation at start, which compiles its own graph) is no part of the budget."""
        running = time.perf_counter() - self.clock_started if self.clock_started is not None else 0.0
        return self.elapsed_before + running

    def budget_used(self) -> float:
        """The share of time_budget_s spent so far (0 without a budget), alike on every rank."""
        if self.cfg.time_budget_s is None:
            return 0.0
        return max_over_ranks(self.elapsed, self.world) / self.cfg.time_budget_s

    def describe(self) -> None:
        cfg, data = self.cfg, self.cfg.dataset
        log.info("run folder: %s", self.run_dir)
        ranks = f", {self.world.world_size} ranks ({self.cfg.system.strategy})" if self.world.enabled else ""
        log.info("system: %s%s", self.system.describe(), ranks)
        log.info(
            "model: %.2fM parameters, %d layers, %d heads, %d wide, context %d, vocabulary %d",
            self.raw_model.num_params() / 1e6, cfg.model.n_layer, cfg.model.n_head, cfg.model.n_embd, data.block_size, self.model_args["vocab_size"],
        )
        log.info(
            "data: %s, %d train / %d val tokens; %d tokens per iteration",
            data.name, self.meta["train_tokens"], self.meta["val_tokens"], self.tokens_per_iter,
        )

    def train_step(self, lr: float) -> torch.Tensor:
        """One optimizer step over gradient_accumulation_steps micro-batches (split across ranks);
        returns the step's mean loss as a device tensor (reading it would sync)."""
        cfg = self.cfg
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group["lr_ratio"]
        starts = self.splits["train"].draw_offsets(cfg.gradient_accumulation_steps * cfg.dataset.batch_size, self.train_generator)
        mine = starts.view(self.world.world_size, self.micro_steps, cfg.dataset.batch_size)[self.world.rank]
        loss_sum = torch.zeros((), device=self.system.device)
        for micro in range(self.micro_steps):
            x, y = self.splits["train"].windows(mine[micro])
            # Gradients are averaged across ranks only on the last micro-step (DDP's all-reduce,
            # FSDP's reduce-scatter); before it they accumulate on each rank, unreduced.
            sync = not self.world.enabled or micro == self.micro_steps - 1
            if self.sharded:
                self.raw_model.set_requires_gradient_sync(sync)  # FSDP's no_sync
            with self.model.no_sync() if not sync and not self.sharded else contextlib.nullcontext():
                with self.system.autocast():  # the forward pass only: backward follows its dtypes
                    _, loss = self.model(x, y)
                loss = loss / self.micro_steps
                self.scaler.scale(loss).backward()
            loss_sum += loss.detach()
        # The norm before clipping is measured every step (an infinite max_norm when clipping is
        # off); it stays on the device until the next log line reads it.
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.raw_model.parameters(), cfg.optimizer.grad_clip or math.inf)
        if isinstance(grad_norm, DTensor):  # sharded gradients: the norm of all of them (clipping used it), on every rank
            grad_norm = grad_norm.full_tensor()
        self.health.update(loss_sum, grad_norm, cfg.optimizer.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.iter_num += 1
        return loss_sum

    def evaluate(self) -> dict[str, float]:
        return estimate_loss(self.raw_model if self.world.enabled else self.model, self.splits, self.cfg, self.system)

    def checkpoint(self) -> dict[str, Any]:
        """The whole train state (rng holds every rank's streams; call it on all ranks)."""
        return {**self.train_state(), "model": self.raw_model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def train_state(self) -> dict[str, Any]:
        """The train state but for the weights and the optimizer's (what a sharded checkpoint
        holds beside its shards); rng holds every rank's streams: call it on all ranks."""
        rng = gather_to_main(capture_rng_state(), self.world)
        return {
            "format": CKPT_FORMAT,
            "model_args": self.model_args,
            "scaler": self.scaler.state_dict(),
            "iter_num": self.iter_num,
            "best_val_loss": self.best_val_loss,
            "train_time_s": self.elapsed,
            "data": {"train_generator": self.train_generator.get_state()},
            "rng": rng,
            "system": {"device": self.system.device, "dtype": self.system.dtype, "compile": self.system.compile},
            "config": json.dumps(OmegaConf.to_container(self.cfg, resolve=True)),
            "dataset_meta": json.dumps(self.meta),
            "versions": {"nanogpt": nanogpt.__version__, "torch": str(torch.__version__)},
            "wandb_run_id": self.wandb_run_id,
        }

    def save(self, *which: str) -> None:
        if self.cfg.system.strategy == "fsdp":
            self._save_sharded(*which)
            return
        state = self.checkpoint()
        if not self.world.is_main:
            return
        for name in which:
            save_checkpoint(checkpoint_path(self.run_dir, name), state)
        if "last" in which and self.cfg.keep_last_k:
            keep_snapshot(self.run_dir, self.iter_num, self.cfg.keep_last_k)

    def _save_sharded(self, *which: str) -> None:
        """Sharded checkpoints (nanogpt.fsdp): every rank writes its shard, rank 0 the rest."""
        state = self.train_state()
        for name in which:
            save_sharded(sharded_checkpoint_path(self.run_dir, name), self.raw_model, self.optimizer, state, self.world)
        if self.world.is_main and "last" in which and self.cfg.keep_last_k:
            keep_sharded_snapshot(self.run_dir, sharded_checkpoint_path(self.run_dir, "last"), self.iter_num, self.cfg.keep_last_k)

    def eval_only(self) -> float:
        """Evaluate once and write eval.json (loss and perplexity per split)."""
        cfg, data = self.cfg, self.cfg.dataset
        losses = self.evaluate()
        result = {
            "iter": self.iter_num, "init_from": cfg.init_from, "dataset": data.name, "block_size": data.block_size,
            "batch_size": data.batch_size, "eval_iters": cfg.eval_iters,
            **{f"{s}_loss": v for s, v in losses.items()}, **{f"{s}_perplexity": math.exp(v) for s, v in losses.items()},
        }
        if self.world.is_main:
            (self.run_dir / "eval.json").write_text(json.dumps(result, indent=1) + "\n")
        log.info(
            "eval at iter %d: train loss %.4f (perplexity %.2f), val loss %.4f (perplexity %.2f); written to %s",
            self.iter_num, losses["train"], result["train_perplexity"], losses["val"], result["val_perplexity"], self.run_dir / "eval.json",
        )
        return losses["val"]

    def run(self, stop: StopRequest) -> float:
        """The training loop: evaluate and checkpoint every eval_interval, stop at max_iters, when
        time_budget_s is spent, or at the first step boundary after a stop signal. Returns the
        best val loss."""
        cfg, main = self.cfg, self.world.is_main
        metrics = MetricsLog(self.run_dir / "metrics.jsonl") if main else None

        def record(event: str, **fields: Any) -> None:
            if metrics is not None:
                metrics.write(event, iter=self.iter_num, tokens=self.iter_num * self.tokens_per_iter, time=self.elapsed, **fields)
            if self.tracker is not None and event in ("train", "eval", "benchmark"):
                self.tracker.log({f"{event}/{k}": v for k, v in fields.items()}, step=self.iter_num)

        record(
            "start", startup_s=time.time() - PROCESS_START, device=self.system.device, dtype=self.system.dtype,
            compile=self.system.compile, params=self.raw_model.num_params(), world_size=self.world.world_size,
            **(self.dtype_probe.record() if self.dtype_probe else {}),
        )
        if self.iter_num >= cfg.max_iters:
            log.info("this run already reached max_iters=%d; nothing to do", cfg.max_iters)
        window_start, window_iters = time.perf_counter(), 0
        last_eval_iter = self.iter_num if self.iter_num > 0 else -1
        last_benchmark_iter = last_eval_iter
        status = "failed"
        try:
            budget_used = self.budget_used()
            while True:
                agree = agreement_due(self.iter_num, cfg, self.world)
                if agree:
                    budget_used = self.budget_used()
                done = self.iter_num >= cfg.max_iters or budget_used >= 1.0
                due = self.iter_num % cfg.eval_interval == 0 and (self.iter_num > 0 or cfg.eval_at_start)
                if (due or done) and self.iter_num != last_eval_iter:
                    last_eval_iter = self.iter_num
                    self._evaluate_and_save(record, final=done)
                    window_start, window_iters = time.perf_counter(), 0
                if self.benchmarks is not None and self.iter_num != last_benchmark_iter and (
                    done or (self.iter_num % cfg.eval_tasks_interval == 0 and (self.iter_num > 0 or cfg.eval_at_start))
                ):
                    last_benchmark_iter = self.iter_num
                    self._benchmark(record)
                    window_start, window_iters = time.perf_counter(), 0
                if done:
                    if budget_used >= 1.0 and self.iter_num < cfg.max_iters:
                        log.info("time budget of %s spent at iter %d", format_duration(cfg.time_budget_s), self.iter_num)
                    break
                if agree and stop.requested(self.world):
                    self.stopped = True
                    if self.iter_num == 0:  # nothing trained: main() removes what this run made
                        log.info("stopped by %s before the first iteration; nothing to keep", stop.signal_name or "another rank")
                        break
                    self.health.read(self.iter_num, self.run_dir)  # never checkpoint a diverged model
                    self.save("last")
                    log.info(
                        "stopped by %s at iter %d; checkpoint saved. Resume with: python -m nanogpt.train init_from=resume run_dir=%s",
                        stop.signal_name or "another rank", self.iter_num, self.run_dir,
                    )
                    break

                lr = lr_at(self.iter_num, cfg.optimizer, cfg.max_iters, budget_used)
                loss = self.train_step(lr)
                if self.clock_started is None:
                    self.clock_started = time.perf_counter()
                window_iters += 1
                if self.iter_num % cfg.log_interval == 0 or self.iter_num == cfg.max_iters:
                    # .item() waits for the device; doing it only here keeps the other steps sync-free.
                    train_loss = mean_over_ranks(loss, self.world).item()
                    grad = self.health.read(self.iter_num, self.run_dir)
                    seconds = (time.perf_counter() - window_start) / window_iters
                    tokens_per_sec = self.tokens_per_iter / seconds
                    eta = seconds * (cfg.max_iters - self.iter_num)
                    if cfg.time_budget_s is not None:
                        eta = min(eta, max(0.0, cfg.time_budget_s - self.elapsed))
                    mfu = self.flops_per_iter / seconds / (self.peak * self.world.world_size) if self.peak else None
                    log.info(
                        "iter %d/%d | loss %.4f | lr %.2e | grad norm %.2f | %.1f ms/it | %s tok/s%s | eta %s",
                        self.iter_num, cfg.max_iters, train_loss, lr, grad["grad_norm"], seconds * 1000, f"{tokens_per_sec:,.0f}",
                        f" | mfu {mfu:.1%}" if mfu is not None else "", format_duration(eta),
                    )
                    record("train", loss=train_loss, lr=lr, **grad, ms_per_iter=seconds * 1000, tokens_per_sec=tokens_per_sec, mfu=mfu)
                    window_start, window_iters = time.perf_counter(), 0
            status = "stopped" if self.stopped else "finished"
        finally:
            peak_mb = peak_memory_mb(self.system.device)
            record("end", status=status, best_val_loss=self.best_val_loss, peak_memory_mb=peak_mb)
            if metrics is not None:
                metrics.close()
            if self.tracker is not None:
                self.tracker.finish(exit_code=0 if status != "failed" else 1)
        log.info(
            "done: best val loss %.4f after %d iterations (%s, peak memory %.0f MiB); run folder: %s",
            self.best_val_loss, self.iter_num, format_duration(self.elapsed), peak_mb, self.run_dir,
        )
        return self.best_val_loss

    def _benchmark(self, record: Any) -> None:
        """Run eval_tasks on the model (rank 0; the other ranks wait at their next collective)."""
        assert self.benchmarks is not None
        scores = self.benchmarks.run(self.raw_model, load_tokenizer(self.meta), self.system)
        log.info("benchmarks iter %d: %s", self.iter_num, ", ".join(f"{name} {value:.4f}" for name, value in scores.items()))
        record("benchmark", **scores)

    def _evaluate_and_save(self, record: Any, final: bool) -> None:
        cfg = self.cfg
        losses = {"train": math.nan, "val": math.nan}
        if self.sharded and not self.world.is_main:
            self.evaluate()  # a sharded model's forward pass needs every rank; rank 0 alone uses the losses
        if self.world.is_main:
            losses = self.evaluate()
            if not all(math.isfinite(v) for v in losses.values()):
                raise self.health.diverged(self.iter_num, f"val loss {losses['val']}", self.run_dir)
        improved = any_rank(losses["val"] < self.best_val_loss, self.world)
        if self.world.is_main:
            self.best_val_loss = min(self.best_val_loss, losses["val"])
            log.info("eval iter %d: train loss %.4f, val loss %.4f%s", self.iter_num, losses["train"], losses["val"], " (best)" if improved else "")
            record("eval", train_loss=losses["train"], val_loss=losses["val"], best_val_loss=self.best_val_loss)
            # Generating a sample would need every rank under FSDP: sharded runs log none.
            if self.tracker is not None and self.tracker.sample_tokens > 0 and not self.sharded:
                self.tracker.log_sample(sample_text(self.raw_model, self.meta, self.tracker.sample_tokens, self.system), self.iter_num)
        if self.iter_num == 0:
            return
        which = (["best"] if improved else []) + (["last"] if cfg.always_save_checkpoint or final else [])
        if which:
            self.save(*which)
        if self.world.is_main:
            plot_losses(self.run_dir / "metrics.jsonl", self.run_dir / "loss.png", title=f"{cfg.dataset.name}: {self.run_dir.name}")


def train(
    cfg: DictConfig, run_dir: Path, overrides: list[str] | None = None, wandb_group: str | None = None, auto_resume: bool = False
) -> float:
    """Train (or resume, or evaluate) as cfg says, writing into run_dir; returns the best val loss.

    `overrides` are the command-line overrides, which a resume checks against the checkpoint.
    With `auto_resume` (sweep jobs, requeued SLURM jobs) a run folder that already holds a
    checkpoint is continued rather than started again; a finished run is not trained again.
    Rank 0 holds the run folder's lock throughout: a second writer is refused (RunFolderBusy).
    A stop signal ends training at a step boundary with a checkpoint and raises RunStopped."""
    main_rank = env_rank() == 0  # the process group does not exist yet
    with run_lock(run_dir, resuming=cfg.init_from == "resume") if main_rank else contextlib.nullcontext():
        if main_rank:
            leftovers = remove_temp_files(run_dir)
            if leftovers:
                log.info("removed the temp files of an interrupted write: %s", ", ".join(leftovers))
            recovered = recover_interrupted_saves(run_dir)
            if recovered:
                log.info("cleaned up after an interrupted sharded save (the previous checkpoint is kept): %s", ", ".join(recovered))
        stop = StopRequest()
        # Installed from the start, so that a Ctrl-C while the data and the model load also
        # stops cleanly; eval_only has no step boundary to wait for and stops at once.
        with contextlib.nullcontext() if cfg.eval_only else stop.installed():
            result, stopped = _train(cfg, run_dir, overrides or [], wandb_group, auto_resume, stop)
    if stopped:
        raise RunStopped
    return result


def _train(
    cfg: DictConfig, run_dir: Path, overrides: list[str], wandb_group: str | None, auto_resume: bool, stop: StopRequest
) -> tuple[float, bool]:
    """train()'s work, holding the lock: the best val loss, and whether a signal stopped training
    (unless the stop was handed over to submitit, which then ends the process its own way)."""
    resume_state = None
    holds_checkpoint = has_checkpoint(run_dir)
    if cfg.init_from == "resume" or (auto_resume and holds_checkpoint):
        resume_state, cfg = _load_resume(cfg, run_dir, overrides)
    elif holds_checkpoint:
        raise ConfigError(
            f"hydra.run.dir={run_dir} already holds a run: continue it with init_from=resume run_dir={run_dir}, or choose a new folder"
        )
    validate_train(cfg)
    if cfg.tensorboard.enabled and not cfg.eval_only:
        tensorboard_writer()  # a missing package is refused now, before the data and the model load
    if cfg.optimizer.lr_decay_iters is None:
        # Fix the schedule's length now, so that resuming with a larger max_iters continues
        # this schedule rather than stretching it mid-run.
        cfg.optimizer.lr_decay_iters = cfg.max_iters
    system = resolve_system(cfg.system.device, cfg.system.dtype, cfg.system.compile, measure_cpu_dtype=True)
    world = distributed.init()
    if not world.is_main:
        logging.getLogger().setLevel(logging.WARNING)  # one rank speaks
    stopped = False
    try:
        trainer = Trainer(cfg, run_dir, system, world, resume_state, overrides, wandb_group)
        trainer.describe()
        if cfg.eval_only:
            result = trainer.eval_only()
        else:
            if world.is_main:
                # Each iteration once in metrics.jsonl: a resume drops what a killed run wrote
                # after its checkpoint; a fresh start, what an attempt killed before its first
                # checkpoint wrote (a restarted sweep job) and the plot made from it.
                keep_metrics_until(run_dir / "metrics.jsonl", trainer.iter_num if resume_state is not None else None)
                if resume_state is None:
                    (run_dir / "loss.png").unlink(missing_ok=True)
            with running_marker(run_dir, world.is_main):
                result = trainer.run(stop)
            stopped = trainer.stopped and not stop.hand_over()
    except BaseException:
        distributed.shutdown(all_ranks_done=False)
        raise
    # Free the trainer (its reference cycles too) while the process group is alive. A DDP model's
    # reducer holds the group: freed after it is destroyed, it would be the group's last owner, and
    # the group's destructor joins gloo's threads while holding the GIL that one of them may need
    # (a deadlock seen once in CI).
    trainer = None
    gc.collect()
    distributed.shutdown(all_ranks_done=True)
    return result, stopped


def _model_args(cfg: DictConfig, meta: dict) -> dict[str, Any]:
    """GPTConfig's arguments: cfg.model, the dataset's context length, and a vocabulary that is
    model.vocab_size or else the dataset's (padded for GPT-2 BPE)."""
    args = {**OmegaConf.to_container(cfg.model), "block_size": cfg.dataset.block_size}
    args["vocab_size"] = args["vocab_size"] or padded_vocab_size(meta)
    if args["vocab_size"] < meta["vocab_size"]:
        raise ConfigError(f"model.vocab_size={args['vocab_size']} is invalid: dataset {meta['dataset']} has {meta['vocab_size']} tokens")
    return args


def _load_resume(cfg: DictConfig, run_dir: Path, overrides: list[str]) -> tuple[dict[str, Any], DictConfig]:
    """The checkpoint to continue from, and the run's config rebuilt from it."""
    if cfg.run_dir is None:
        # nanogpt.resume.find_latest_run chose run_dir (the newest checkpoint under outputs/),
        # passing over the runs that are still training.
        busy = live_runs(Path("outputs").absolute())
        skipped = f"; skipped {len(busy)} run(s) still training: {', '.join(busy)}" if busy else ""
        if not has_checkpoint(run_dir):
            raise ConfigError(f"init_from=resume needs run_dir=<a run folder>: no run with a checkpoint was found under outputs/{skipped}")
        log.info("init_from=resume without run_dir: chose %s, the run with the newest checkpoint under outputs/%s", run_dir, skipped)
    state, path = load_newest_valid(run_dir)
    check_model_args(state, path)  # sizes from the file's tensors, before anything is built from them
    # The checkpoint holds the resolved config: a text such as wandb.name="${x}" stays text.
    saved = OmegaConf.create(as_text(json.loads(state["config"])))
    resumed = resumed_config(saved, cfg, override_keys(overrides))
    check_belongs_to_run(saved, run_dir, path)
    log.info("resuming %s from %s (iter %d)", run_dir, path.name, state["iter_num"])
    return state, resumed


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> float:
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    overrides = list(hydra_cfg.overrides.task)
    sweep = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        if sweep:
            # Re-running a sweep (or SLURM requeueing one of its jobs) continues each job's run.
            group = "/".join(Path(hydra_cfg.sweep.dir).parts[-2:])
            return run_sweep_job(lambda: _sweep_job(cfg, run_dir, overrides, group), run_dir)
        return run_or_exit(lambda: train(cfg, run_dir, overrides), undo=lambda: undo_hydra_outputs(run_dir, hydra_cfg.output_subdir))
    except (RunStopped, KeyboardInterrupt) as exc:
        # Ending anyway: a further Ctrl-C must not break the clean-up into a traceback.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        kept = has_checkpoint(run_dir)
        if not sweep and cfg.init_from != "resume" and not kept:
            _remove_unkept_run(run_dir, hydra_cfg.output_subdir)
        if isinstance(exc, RunStopped):
            raise SystemExit(EXIT_STOPPED) from None
        then = f"the last checkpoint in {run_dir} is intact" if kept else "nothing was kept"
        print(f"error: interrupted; stopped at once, {then}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_INTERRUPTED) from None


def _sweep_job(cfg: DictConfig, run_dir: Path, overrides: list[str], group: str) -> float:
    try:
        return train(cfg, run_dir, overrides, wandb_group=group, auto_resume=True)
    except RunFolderBusy as exc:
        # Another sweep's job is training in this folder: refuse without the error.txt that
        # run_sweep_job would write there, which would mark that live run as failed.
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return math.inf


def _remove_unkept_run(run_dir: Path, output_subdir: str | None) -> None:
    """A fresh run stopped before its first checkpoint leaves nothing behind: remove the files it
    wrote, then Hydra's and the folder, where they were made for this command (nanogpt.cli)."""
    for name in ("metrics.jsonl", "loss.png"):
        (run_dir / name).unlink(missing_ok=True)
    undo_hydra_outputs(run_dir, output_subdir)


def cli() -> None:
    """`nanogpt-train` and `python -m nanogpt.train`."""
    distributed.agree_on_start_time()
    note_sweep_keys(quote_free_text(sys.argv[1:], "config"))  # free text is never a sweep
    launch(main, "config")


if __name__ == "__main__":
    # Run the copy of this module that is importable as nanogpt.train, so that launchers which
    # pickle the task function (submitit) pickle it by reference rather than by value.
    importlib.import_module("nanogpt.train").cli()
