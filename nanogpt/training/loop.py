"""The training loop, top to bottom as in nanoGPT's train.py: the learning-rate schedule, the loss
estimate, one optimizer step, evaluating and checkpointing, and the loop that ties them together
with the log lines. Its parts (model, optimizer, data, train state, checkpointer, trackers) come
built from nanogpt.training.setup; the guards beside it (stop signals, gradient health) from
nanogpt.training.guards.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from typing import Any

import torch
from omegaconf import DictConfig

from nanogpt.data import EVAL_DATA_STREAM, TokenFile, load_tokenizer, stream_seed
from nanogpt.distributed import Dist, any_rank, max_over_ranks, mean_over_ranks
from nanogpt.errors import check_interrupted
from nanogpt.metrics import Eta, MetricsLog, format_duration, plot_losses
from nanogpt.system import System, peak_memory_mb
from nanogpt.training.guards import StopRequest, diverged
from nanogpt.training.setup import TrainingRun
from nanogpt.training.tracking import sample_text

log = logging.getLogger("nanogpt.train")

# Under DDP the ranks decide together whether to stop (a signal, the time budget): a collective,
# which waits for every rank. They do so every AGREE_INTERVAL iterations and at each log line
# and evaluation (which wait anyway), so that other steps run without waiting; a signal then
# stops DDP training within AGREE_INTERVAL steps. A single process decides at every step.
AGREE_INTERVAL = 10


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


def evaluate(run: TrainingRun) -> dict[str, float]:
    """The run's train and val loss now. Under DDP the plain model: every rank evaluates alone."""
    return estimate_loss(run.model if run.world.enabled else run.step_model, run.splits, run.cfg, run.system)


def train_step(run: TrainingRun, lr: float) -> torch.Tensor:
    """One optimizer step over gradient_accumulation_steps micro-batches (split across ranks);
    returns the step's mean loss as a device tensor (reading it would sync)."""
    cfg, world, model = run.cfg, run.world, run.step_model
    for group in run.optimizer.param_groups:
        group["lr"] = lr * group["lr_ratio"]
    starts = run.splits["train"].draw_offsets(cfg.gradient_accumulation_steps * cfg.dataset.batch_size, run.sampler)
    mine = starts.view(world.world_size, run.micro_steps, cfg.dataset.batch_size)[world.rank]
    loss_sum = torch.zeros((), device=run.system.device)
    for micro in range(run.micro_steps):
        x, y = run.splits["train"].windows(mine[micro])
        # Gradients are averaged across ranks only on the last micro-step (DDP's all-reduce,
        # FSDP's reduce-scatter); before it they accumulate on each rank, unreduced.
        sync = not world.enabled or micro == run.micro_steps - 1
        if run.sharded:
            run.model.set_requires_gradient_sync(sync)  # FSDP's no_sync
        with model.no_sync() if not sync and not run.sharded else contextlib.nullcontext():
            with run.system.autocast():  # the forward pass only: backward follows its dtypes
                _, loss = model(x, y)
            loss = loss / run.micro_steps
            run.scaler.scale(loss).backward()
        loss_sum += loss.detach()
    # The norm before clipping is measured every step (an infinite max_norm when clipping is
    # off); it stays on the device until the next log line reads it.
    run.scaler.unscale_(run.optimizer)
    grad_norm = torch.nn.utils.clip_grad_norm_(run.model.parameters(), cfg.optimizer.grad_clip or math.inf)
    if run.sharded:  # sharded gradients: the norm of all of them (clipping used it), on every rank
        grad_norm = grad_norm.full_tensor()
    run.health.update(loss_sum, grad_norm, cfg.optimizer.grad_clip)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.optimizer.zero_grad(set_to_none=True)
    run.state.iter_num += 1
    return loss_sum


def save(run: TrainingRun, *which: str) -> None:
    """Checkpoint the run as `which` (best, last). Call it on every rank."""
    run.checkpoints.save(which, run.model, run.optimizer, run.state)


def evaluate_and_save(run: TrainingRun, record: Any, final: bool) -> None:
    """Evaluate; checkpoint best when the val loss improved and last at every evaluation (or only
    at the end without always_save_checkpoint); redraw loss.png."""
    cfg, world, state = run.cfg, run.world, run.state
    losses = {"train": math.nan, "val": math.nan}
    if run.sharded and not world.is_main:
        evaluate(run)  # a sharded model's forward pass needs every rank; rank 0 alone uses the losses
    if world.is_main:
        losses = evaluate(run)
        if not all(math.isfinite(v) for v in losses.values()):
            raise diverged(state.iter_num, f"val loss {losses['val']}", run.run_dir)
    improved = any_rank(losses["val"] < state.best_val_loss, world)
    if world.is_main:
        state.best_val_loss = min(state.best_val_loss, losses["val"])
        log.info("eval iter %d: train loss %.4f, val loss %.4f%s", state.iter_num, losses["train"], losses["val"], " (best)" if improved else "")
        record("eval", train_loss=losses["train"], val_loss=losses["val"], best_val_loss=state.best_val_loss)
        # Generating a sample would need every rank under FSDP: sharded runs log none.
        if run.tracker is not None and run.tracker.sample_tokens > 0 and not run.sharded:
            run.tracker.log_sample(sample_text(run.model, run.meta, run.tracker.sample_tokens, run.system), state.iter_num)
    if state.iter_num == 0:
        return
    which = (["best"] if improved else []) + (["last"] if cfg.always_save_checkpoint or final else [])
    if which:
        save(run, *which)
    if world.is_main:
        plot_losses(run.run_dir / "metrics.jsonl", run.run_dir / "loss.png", title=f"{cfg.dataset.name}: {run.run_dir.name}")


def run_benchmarks(run: TrainingRun, record: Any) -> None:
    """Run eval_tasks on the model (rank 0; the other ranks wait at their next collective)."""
    assert run.benchmarks is not None
    scores = run.benchmarks.run(run.model, load_tokenizer(run.meta), run.system)
    log.info("benchmarks iter %d: %s", run.state.iter_num, ", ".join(f"{name} {value:.4f}" for name, value in scores.items()))
    record("benchmark", **scores)


def agreement_due(iter_num: int, cfg: DictConfig, world: Dist) -> bool:
    """Whether this step boundary is one where the ranks decide whether to stop (AGREE_INTERVAL)."""
    return not world.enabled or any(iter_num % n == 0 for n in (AGREE_INTERVAL, cfg.log_interval, cfg.eval_interval))


def budget_used(run: TrainingRun) -> float:
    """The share of time_budget_s spent so far (0 without a budget), alike on every rank."""
    if run.cfg.time_budget_s is None:
        return 0.0
    return max_over_ranks(run.state.elapsed, run.world) / run.cfg.time_budget_s


def eval_only(run: TrainingRun) -> float:
    """Evaluate once and write eval.json (loss and perplexity per split)."""
    cfg, data = run.cfg, run.cfg.dataset
    losses = evaluate(run)
    result = {
        "iter": run.state.iter_num, "init_from": cfg.init_from, "dataset": data.name, "block_size": data.block_size,
        "batch_size": data.batch_size, "eval_iters": cfg.eval_iters,
        **{f"{s}_loss": v for s, v in losses.items()}, **{f"{s}_perplexity": math.exp(v) for s, v in losses.items()},
    }  # fmt: skip
    if run.world.is_main:
        (run.run_dir / "eval.json").write_text(json.dumps(result, indent=1) + "\n")
    log.info(
        "eval at iter %d: train loss %.4f (perplexity %.2f), val loss %.4f (perplexity %.2f); written to %s",
        run.state.iter_num, losses["train"], result["train_perplexity"], losses["val"], result["val_perplexity"], run.run_dir / "eval.json",
    )  # fmt: skip
    return losses["val"]


def train(run: TrainingRun, stop: StopRequest, launched_at: float, resume_command: str) -> tuple[float, bool]:
    """The training loop: evaluate and checkpoint every eval_interval, stop at max_iters, when
    time_budget_s is spent, or at the first step boundary after a stop signal (whose log line
    gives resume_command). Returns the best val loss, and whether a signal stopped the run."""
    cfg, state, main = run.cfg, run.state, run.world.is_main
    metrics = MetricsLog(run.run_dir / "metrics.jsonl") if main else None

    def record(event: str, **fields: Any) -> None:
        if metrics is not None:
            metrics.write(event, iter=state.iter_num, tokens=state.iter_num * run.tokens_per_iter, time=state.elapsed, **fields)
        if run.tracker is not None and event in ("train", "eval", "benchmark"):
            run.tracker.log({f"{event}/{k}": v for k, v in fields.items()}, step=state.iter_num)

    record(
        "start", startup_s=time.time() - launched_at, device=run.system.device, dtype=run.system.dtype,
        compile=run.system.compile, params=run.model.num_params(), world_size=run.world.world_size,
        **(run.dtype_probe.record() if run.dtype_probe else {}),
    )  # fmt: skip
    if state.iter_num >= cfg.max_iters:
        log.info("this run already reached max_iters=%d; nothing to do", cfg.max_iters)
    window_start, window_iters = time.perf_counter(), 0
    pace = Eta()
    last_eval_iter = state.iter_num if state.iter_num > 0 else -1
    last_benchmark_iter = last_eval_iter
    stopped, status = False, "failed"
    check_interrupted()  # a signal of the start-up whose exception a finalizer swallowed
    stop.at_step_boundaries = True  # from here on a signal waits for the next boundary and a checkpoint
    try:
        used = budget_used(run)
        while True:
            agree = agreement_due(state.iter_num, cfg, run.world)
            if agree:
                used = budget_used(run)
            done = state.iter_num >= cfg.max_iters or used >= 1.0

            # evaluate and checkpoint, benchmarks
            due = state.iter_num % cfg.eval_interval == 0 and (state.iter_num > 0 or cfg.eval_at_start)
            if (due or done) and state.iter_num != last_eval_iter:
                last_eval_iter = state.iter_num
                evaluate_and_save(run, record, final=done)
                window_start, window_iters = time.perf_counter(), 0
            if (
                run.benchmarks is not None
                and state.iter_num != last_benchmark_iter
                and (done or (state.iter_num % cfg.eval_tasks_interval == 0 and (state.iter_num > 0 or cfg.eval_at_start)))
            ):
                last_benchmark_iter = state.iter_num
                run_benchmarks(run, record)
                window_start, window_iters = time.perf_counter(), 0

            # the end: max_iters, the time budget, or a stop signal
            if done:
                if used >= 1.0 and state.iter_num < cfg.max_iters:
                    log.info("time budget of %s spent at iter %d", format_duration(cfg.time_budget_s), state.iter_num)
                break
            if agree and stop.requested(run.world):
                stopped = True
                if state.iter_num == 0:  # nothing trained: the command removes what this run made
                    log.info("stopped by %s before the first iteration; nothing to keep", stop.signal_name or "another rank")
                    break
                run.health.read(state.iter_num, run.run_dir)  # never checkpoint a diverged model
                save(run, "last")
                log.info(
                    "stopped by %s at iter %d; checkpoint saved. Resume with: %s",
                    stop.signal_name or "another rank", state.iter_num, resume_command,
                )  # fmt: skip
                break

            # one step, and now and then its log line
            lr = lr_at(state.iter_num, cfg.optimizer, cfg.max_iters, used)
            loss = train_step(run, lr)
            state.start_clock()
            pace.step_done(state.iter_num, time.perf_counter())
            window_iters += 1
            if state.iter_num % cfg.log_interval == 0 or state.iter_num == cfg.max_iters:
                # .item() waits for the device; doing it only here keeps the other steps sync-free.
                train_loss = mean_over_ranks(loss, run.world).item()
                grad = run.health.read(state.iter_num, run.run_dir)
                now = time.perf_counter()
                seconds = (now - window_start) / window_iters
                tokens_per_sec = run.tokens_per_iter / seconds
                eta = pace.seconds_left(state.iter_num, cfg.max_iters, now)
                if eta is None:  # the first step: no pace yet but this one's
                    eta = seconds * (cfg.max_iters - state.iter_num)
                if cfg.time_budget_s is not None:
                    eta = min(eta, max(0.0, cfg.time_budget_s - state.elapsed))
                mfu = run.flops_per_iter / seconds / (run.peak_flops * run.world.world_size) if run.peak_flops else None
                log.info(
                    "iter %d/%d | loss %.4f | lr %.2e | grad norm %.2f | %.1f ms/it | %s tok/s%s | eta %s",
                    state.iter_num, cfg.max_iters, train_loss, lr, grad["grad_norm"], seconds * 1000, f"{tokens_per_sec:,.0f}",
                    f" | mfu {mfu:.1%}" if mfu is not None else "", format_duration(eta),
                )  # fmt: skip
                record("train", loss=train_loss, lr=lr, **grad, ms_per_iter=seconds * 1000, tokens_per_sec=tokens_per_sec, mfu=mfu)
                window_start, window_iters = time.perf_counter(), 0
        status = "stopped" if stopped else "finished"
    finally:
        peak_mb = peak_memory_mb(run.system.device)
        record("end", status=status, best_val_loss=state.best_val_loss, peak_memory_mb=peak_mb)
        if metrics is not None:
            metrics.close()
        if run.tracker is not None:
            run.tracker.finish(exit_code=0 if status != "failed" else 1)
    if not (stopped and state.iter_num == 0):  # a fresh run stopped before it trained leaves nothing to report
        log.info(
            "done: best val loss %.4f after %d iterations (%s, peak memory %.0f MiB); run folder: %s",
            state.best_val_loss, state.iter_num, format_duration(state.elapsed), peak_mb, run.run_dir,
        )  # fmt: skip
    return state.best_val_loss, stopped
