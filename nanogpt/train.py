"""Train a GPT.

    python -m nanogpt.train                                    # CPU quickstart: tiny Shakespeare, 4-layer model
    python -m nanogpt.train experiment=shakespeare_char         # nanoGPT's 10.7M-parameter GPU run
    python -m nanogpt.train init_from=resume run_dir=outputs/2026-11-25/17-03-11
    python -m nanogpt.train experiment=finetune_shakespeare_cpu         # fine-tune OpenAI's GPT-2 (124M)
    python -m nanogpt.train experiment=eval_gpt2                        # loss of GPT-2 on OpenWebText

Everything the run produces goes to its run folder (Hydra's output dir): `.hydra/`, `train.log`,
`metrics.jsonl`, `loss.png`, `ckpt_last.pt`, `ckpt_best.pt`.
"""

from __future__ import annotations

import json
import logging
import math
import random
import signal
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

import nanogpt
from nanogpt.checkpoint import (
    CKPT_FORMAT,
    capture_rng_state,
    checkpoint_path,
    restore_rng_state,
    save_checkpoint,
)
from nanogpt.cli import run_or_exit
from nanogpt.config import ConfigError, register_configs, validate_train
from nanogpt.data import TokenFile, dataset_dir, open_splits, padded_vocab_size, prepare, same_tokenizer
from nanogpt.metrics import MetricsLog, plot_losses, read_metrics
from nanogpt.model import GPT, GPTConfig
from nanogpt.pretrained import load_pretrained
from nanogpt.resume import find_latest_run, load_newest_valid, override_keys, resumed_config
from nanogpt.system import System, peak_flops, resolve_system

log = logging.getLogger("nanogpt.train")

# Seeds of the random streams, derived from cfg.seed so that each stream is independent of the
# others: evaluation draws its batches from its own generator and so can never shift the
# training batches, whatever eval_interval or eval_iters are.
TRAIN_DATA_STREAM = 1
EVAL_DATA_STREAM = 2


def stream_seed(seed: int, stream: int) -> int:
    return (seed * 1_000_003 + stream * 7_919) % (2**63)


def lr_at(it: int, opt: DictConfig, max_iters: int) -> float:
    """Linear warmup, then cosine decay to min_lr at lr_decay_iters, then min_lr."""
    if not opt.decay_lr:
        return opt.learning_rate
    decay_iters = opt.lr_decay_iters if opt.lr_decay_iters is not None else max_iters
    if it < opt.warmup_iters:
        return opt.learning_rate * (it + 1) / (opt.warmup_iters + 1)
    if it >= decay_iters:
        return opt.min_lr
    progress = (it - opt.warmup_iters) / max(1, decay_iters - opt.warmup_iters)
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
    """Turns SIGINT/SIGTERM into a flag the loop checks at each step boundary, so a stop request
    ends with a checkpoint instead of a half-finished step. A second Ctrl-C stops at once."""

    def __init__(self) -> None:
        self.signal_name: str | None = None

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.signal_name is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name

    @contextmanager
    def installed(self) -> Iterator[StopRequest]:
        previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def train(cfg: DictConfig, run_dir: Path, overrides: list[str] | None = None) -> float:
    """Train (or resume, or evaluate) as cfg says, writing into run_dir. Returns the best val loss."""
    resume_state = None
    if cfg.init_from == "resume":
        resume_state, cfg = _load_resume(cfg, run_dir, overrides or [])
    validate_train(cfg)
    if cfg.optimizer.lr_decay_iters is None:
        # Fix the schedule's length now, so that resuming with a larger max_iters continues
        # this schedule rather than stretching it mid-run.
        cfg.optimizer.lr_decay_iters = cfg.max_iters
    system = resolve_system(cfg.system.device, cfg.system.dtype, cfg.system.compile)

    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    if system.device_type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    data = cfg.dataset
    meta = prepare(data.name, data.data_dir, data.source, data.val_fraction, tokenizer=data.tokenizer)
    splits = open_splits(dataset_dir(data.data_dir, data.name), data.block_size, system.device)
    if resume_state is not None and not same_tokenizer(json.loads(resume_state["dataset_meta"]), meta):
        raise ConfigError(f"dataset {data.name} is tokenized differently from the data this checkpoint was trained on; evaluate it on a dataset with the same tokenizer")

    pretrained_state = None
    if cfg.init_from not in ("scratch", "resume"):
        pretrained_state = load_pretrained(cfg, override_keys(overrides or []), meta)
    model_args = _model_args(cfg, meta)
    raw_model = GPT(GPTConfig(**model_args))
    if pretrained_state is not None:
        raw_model.load_state_dict(pretrained_state)
    raw_model.to(system.device)
    optimizer = raw_model.configure_optimizer(
        cfg.optimizer.learning_rate,
        cfg.optimizer.weight_decay,
        (cfg.optimizer.beta1, cfg.optimizer.beta2),
        system.device_type,
    )
    scaler = torch.amp.GradScaler(system.device_type, enabled=system.dtype == "float16")
    train_generator = torch.Generator().manual_seed(stream_seed(cfg.seed, TRAIN_DATA_STREAM))

    iter_num, best_val_loss, elapsed_before = 0, float("inf"), 0.0
    if resume_state is not None:
        raw_model.load_state_dict(resume_state["model"])
        optimizer.load_state_dict(resume_state["optimizer"])
        scaler.load_state_dict(resume_state["scaler"])
        train_generator.set_state(resume_state["data"]["train_generator"])
        restore_rng_state(resume_state["rng"])
        iter_num = resume_state["iter_num"]
        best_val_loss = resume_state["best_val_loss"]
        elapsed_before = resume_state["train_time_s"]
        _truncate_metrics(run_dir / "metrics.jsonl", iter_num)

    model = torch.compile(raw_model) if system.compile else raw_model
    tokens_per_iter = cfg.gradient_accumulation_steps * data.batch_size * data.block_size
    flops_per_iter = raw_model.flops_per_token() * tokens_per_iter
    peak = peak_flops(system)

    log.info("run folder: %s", run_dir)
    log.info("system: %s", system.describe())
    log.info(
        "model: %.2fM parameters, %d layers, %d heads, %d wide, context %d, vocabulary %d",
        raw_model.num_params() / 1e6, cfg.model.n_layer, cfg.model.n_head, cfg.model.n_embd, data.block_size, model_args["vocab_size"],
    )
    log.info("data: %s, %d train / %d val tokens; %d tokens per iteration", data.name, meta["train_tokens"], meta["val_tokens"], tokens_per_iter)

    def make_checkpoint() -> dict[str, Any]:
        return {
            "format": CKPT_FORMAT,
            "model": raw_model.state_dict(),
            "model_args": model_args,
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(),
            "iter_num": iter_num,
            "best_val_loss": best_val_loss,
            "train_time_s": elapsed_before + (time.perf_counter() - start),
            "data": {"train_generator": train_generator.get_state()},
            "rng": capture_rng_state(),
            "config": json.dumps(OmegaConf.to_container(cfg, resolve=True)),
            "dataset_meta": json.dumps(meta),
            "versions": {"nanogpt": nanogpt.__version__, "torch": str(torch.__version__)},
        }

    start = time.perf_counter()
    if cfg.eval_only:
        losses = estimate_loss(model, splits, cfg, system)
        result = {
            "iter": iter_num, "init_from": cfg.init_from, "dataset": data.name, "block_size": data.block_size,
            "batch_size": data.batch_size, "eval_iters": cfg.eval_iters,
            **{f"{s}_loss": v for s, v in losses.items()}, **{f"{s}_perplexity": math.exp(v) for s, v in losses.items()},
        }
        (run_dir / "eval.json").write_text(json.dumps(result, indent=1) + "\n")
        log.info(
            "eval at iter %d: train loss %.4f (perplexity %.2f), val loss %.4f (perplexity %.2f); written to %s",
            iter_num, losses["train"], result["train_perplexity"], losses["val"], result["val_perplexity"], run_dir / "eval.json",
        )
        return losses["val"]

    metrics = MetricsLog(run_dir / "metrics.jsonl")
    stop = StopRequest()
    window_start, window_iters = time.perf_counter(), 0
    last_eval_iter = iter_num if resume_state is not None else -1
    try:
        with stop.installed():
            while True:
                if (iter_num % cfg.eval_interval == 0 or iter_num >= cfg.max_iters) and iter_num != last_eval_iter:
                    losses = estimate_loss(model, splits, cfg, system)
                    last_eval_iter = iter_num
                    improved = losses["val"] < best_val_loss
                    best_val_loss = min(best_val_loss, losses["val"])
                    log.info("eval iter %d: train loss %.4f, val loss %.4f%s", iter_num, losses["train"], losses["val"], " (best)" if improved else "")
                    metrics.write(
                        "eval", iter=iter_num, tokens=iter_num * tokens_per_iter, time=elapsed_before + time.perf_counter() - start,
                        train_loss=losses["train"], val_loss=losses["val"], best_val_loss=best_val_loss,
                    )
                    if iter_num > 0:
                        state = make_checkpoint()
                        if improved:
                            save_checkpoint(checkpoint_path(run_dir, "best"), state)
                        if cfg.always_save_checkpoint or iter_num >= cfg.max_iters:
                            save_checkpoint(checkpoint_path(run_dir, "last"), state)
                        plot_losses(run_dir / "metrics.jsonl", run_dir / "loss.png", title=f"{data.name}: {run_dir.name}")
                    window_start, window_iters = time.perf_counter(), 0
                if iter_num >= cfg.max_iters:
                    break
                if stop.signal_name is not None:
                    save_checkpoint(checkpoint_path(run_dir, "last"), make_checkpoint())
                    log.info(
                        "stopped by %s at iter %d; checkpoint saved. Resume with: python -m nanogpt.train init_from=resume run_dir=%s",
                        stop.signal_name, iter_num, run_dir,
                    )
                    break

                lr = lr_at(iter_num, cfg.optimizer, cfg.max_iters)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                for _ in range(cfg.gradient_accumulation_steps):
                    x, y = splits["train"].batch(data.batch_size, train_generator)
                    with system.autocast():
                        _, loss = model(x, y)
                        loss = loss / cfg.gradient_accumulation_steps
                    scaler.scale(loss).backward()
                if cfg.optimizer.grad_clip > 0:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(raw_model.parameters(), cfg.optimizer.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                iter_num += 1
                window_iters += 1

                if iter_num % cfg.log_interval == 0 or iter_num == cfg.max_iters:
                    # .item() waits for the device; doing it only here keeps the other steps sync-free.
                    train_loss = loss.item() * cfg.gradient_accumulation_steps
                    seconds = (time.perf_counter() - window_start) / window_iters
                    tokens_per_sec = tokens_per_iter / seconds
                    mfu = flops_per_iter / seconds / peak if peak else None
                    eta = format_duration(seconds * (cfg.max_iters - iter_num))
                    log.info(
                        "iter %d/%d | loss %.4f | lr %.2e | %.1f ms/it | %s tok/s%s | eta %s",
                        iter_num, cfg.max_iters, train_loss, lr, seconds * 1000, f"{tokens_per_sec:,.0f}",
                        f" | mfu {mfu:.1%}" if mfu is not None else "", eta,
                    )
                    metrics.write(
                        "train", iter=iter_num, tokens=iter_num * tokens_per_iter, time=elapsed_before + time.perf_counter() - start,
                        loss=train_loss, lr=lr, ms_per_iter=seconds * 1000, tokens_per_sec=tokens_per_sec, mfu=mfu,
                    )
                    window_start, window_iters = time.perf_counter(), 0
    finally:
        metrics.close()
    log.info("done: best val loss %.4f after %d iterations; run folder: %s", best_val_loss, iter_num, run_dir)
    return best_val_loss


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
    if cfg.run_dir is None and not any(run_dir.glob("ckpt_*.pt")):
        raise ConfigError("init_from=resume needs run_dir=<a run folder>: no run with a checkpoint was found under outputs/")
    state, path = load_newest_valid(run_dir)
    saved = OmegaConf.create(json.loads(state["config"]))
    log.info("resuming %s from %s (iter %d)", run_dir, path.name, state["iter_num"])
    return state, resumed_config(saved, cfg, override_keys(overrides))


def _truncate_metrics(path: Path, iter_num: int) -> None:
    """Drop the records a killed run wrote after its last checkpoint: the resumed run writes
    them again, identically, and a reader should see each iteration once."""
    if not path.exists():
        return
    kept = [r for r in read_metrics(path) if r.get("iter", 0) <= iter_num]
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
    tmp.replace(path)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float:
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    return run_or_exit(lambda: train(cfg, run_dir, list(hydra_cfg.overrides.task)), created_dir=run_dir)


if __name__ == "__main__":
    register_configs()
    main()
