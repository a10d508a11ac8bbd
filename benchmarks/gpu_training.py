"""The GPU suite's training sections (benchmarks/gpu.py runs them): (a) shakespeare_char, nanoGPT's
train.py against our training command; (c) gpt2_step, nanoGPT's bench.py against ours on GPT-2
124M; (b) time_to_loss, experiment=shakespeare_char_fast to a val loss. Each takes the Suite and
returns its section's record."""

from __future__ import annotations

import re
import shutil
import statistics
import sys
from typing import TYPE_CHECKING, Any

from harness import CommandFailed, Skip

if TYPE_CHECKING:
    from gpu import Suite

A100_PEAK_FLOPS = 312e12  # what nanoGPT's estimate_mfu divides by: an A100's bf16 dense peak

# nanoGPT's config/train_shakespeare_char.py, with its train.py defaults for the keys the config
# leaves out. Every key is passed to both commands, so both train the same model the same way.
SHAKESPEARE_CHAR: dict[str, Any] = {
    "batch_size": 64,
    "block_size": 256,
    "n_layer": 6,
    "n_head": 6,
    "n_embd": 384,
    "dropout": 0.2,
    "bias": False,
    "learning_rate": 1e-3,
    "min_lr": 1e-4,
    "warmup_iters": 100,
    "lr_decay_iters": 5000,
    "weight_decay": 0.1,
    "beta1": 0.9,
    "beta2": 0.99,
    "grad_clip": 1.0,
    "eval_iters": 200,
}
OUR_KEYS = {
    "batch_size": "dataset.batch_size",
    "block_size": "dataset.block_size",
    "n_layer": "model.n_layer",
    "n_head": "model.n_head",
    "n_embd": "model.n_embd",
    "dropout": "model.dropout",
    "bias": "model.bias",
    "learning_rate": "optimizer.learning_rate",
    "min_lr": "optimizer.min_lr",
    "warmup_iters": "optimizer.warmup_iters",
    "lr_decay_iters": "optimizer.lr_decay_iters",
    "weight_decay": "optimizer.weight_decay",
    "beta1": "optimizer.beta1",
    "beta2": "optimizer.beta2",
    "grad_clip": "optimizer.grad_clip",
    "eval_iters": "eval_iters",
}
SHAKESPEARE_CHAR_VOCAB = 65
TINY = {"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 32, "batch_size": 4, "eval_iters": 2}
TINY_OURS = {OUR_KEYS[key]: value for key, value in TINY.items()}

# nanoGPT's bench.py model: GPT-2 124M without biases, exact GELU, no dropout, batch 12 x 1024
# (GPT2_SHAPE), on GPT-2 BPE tiny Shakespeare (1024-token windows fit).
GPT2_STEP: dict[str, Any] = {
    "model": "gpt2",
    "dataset": "shakespeare",
    "model.bias": False,
    "model.gelu_approximate": "none",
    "model.dropout": 0.0,
}
GPT2_SHAPE = {"n_layer": 12, "n_head": 12, "n_embd": 768, "block_size": 1024, "batch_size": 12}
GPT2_VOCAB = 50304  # GPT-2's 50,257 tokens padded, by bench.py and by us
BENCH_BURN_IN, BENCH_STEPS = 10, 20  # bench.py times 20 steps after 10 (fixed in its code)

FAST_EVAL_INTERVAL = 100  # the resolution of the time to the target (the preset evaluates every 250)
FAST_OVERHEAD_S = 35.0  # start-up, final evaluation, checkpoint and exit around the time budget
FAST_MIN_BUDGET_S = 45.0  # a shorter budget mostly compiles: not worth running

NANO_ITER = re.compile(r"^iter (\d+): loss [\d.]+, time ([\d.]+)ms, mfu (-?[\d.]+)%")
NANO_EVAL = re.compile(r"^step (\d+): train loss ([\d.]+), val loss ([\d.]+)")
NANO_BENCH = re.compile(r"^time per iteration: ([\d.]+)ms, MFU: (-?[\d.]+)%")
NANO_BENCH_STEP = re.compile(r"^\d+/\d+ loss: ")
OURS_ITER = re.compile(r"\biter \d+/\d+ \|")
OURS_EVAL = re.compile(r"\beval iter (\d+): train loss")


def hydra_value(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def overrides(settings: dict[str, Any]) -> list[str]:
    return [f"{key}={hydra_value(value)}" for key, value in settings.items()]


def gpt_flops_per_iter(n_layer: int, n_embd: int, block_size: int, vocab_size: int, batch_size: int) -> float:
    """Training FLOPs of one iteration of a bias-free GPT-2-style model, by the formula that both
    nanoGPT's estimate_mfu and our metrics use (PaLM, appendix B): 6 per parameter (position
    embeddings left out) per token, plus the attention products."""
    params = vocab_size * n_embd + n_layer * (12 * n_embd**2 + 2 * n_embd) + n_embd
    return (6 * params + 12 * n_layer * n_embd * block_size) * block_size * batch_size


def steady(samples: list[tuple[int, float]], iters: int) -> float:
    """The median of per-iteration samples (iter, value) from the last 80% of a run: the first
    20% hold compilation and warm-up."""
    late = [value for it, value in samples if it >= 0.2 * iters]
    return statistics.median(late or [value for _, value in samples])


def mfu(suite: Suite, flops_per_iter: float, ms_per_iter: float) -> dict[str, float | None]:
    """MFU from ms/iter by one formula for both tools: against the card's peak, and against
    the A100 peak that nanoGPT divides by."""
    per_s = flops_per_iter / (ms_per_iter / 1000)
    return {"mfu_device": per_s / suite.peak_flops if suite.peak_flops else None, "mfu_a100": per_s / A100_PEAK_FLOPS}


# ---------------------------------------------------------------------- (a) shakespeare_char


def shakespeare_char(suite: Suite) -> dict[str, Any]:
    hyper = {**SHAKESPEARE_CHAR, **(TINY if suite.smoke else {})}
    flops = gpt_flops_per_iter(hyper["n_layer"], hyper["n_embd"], hyper["block_size"], SHAKESPEARE_CHAR_VOCAB, hyper["batch_size"])
    result: dict[str, Any] = {
        "iters": suite.iters,
        "device": suite.device,
        "dtype": suite.dtype,
        "compile": not suite.smoke,
        "hyperparameters": hyper,
    }
    result["nanogpt"] = suite.guarded(lambda: nanogpt_shakespeare_char(suite, hyper, flops))
    result["ours"] = suite.guarded(lambda: ours_shakespeare_char(suite, hyper, flops))
    if result["nanogpt"]["status"] == result["ours"]["status"] == "ok":
        result["ours_over_nanogpt_tokens_per_sec"] = result["ours"]["tokens_per_sec"] / result["nanogpt"]["tokens_per_sec"]
    return result


def nanogpt_shakespeare_char(suite: Suite, hyper: dict[str, Any], flops: float) -> dict[str, Any]:
    copy = suite.anchor_data()
    system = [f"--device={suite.device}", f"--compile={not suite.smoke}", f"--dtype={suite.dtype}"]
    n = suite.iters
    command = [
        sys.executable,
        "train.py",
        "config/train_shakespeare_char.py",
        *(f"--{key}={value!r}" for key, value in hyper.items()),  # repr: its configurator wants floats written as floats
        f"--max_iters={n}",
        f"--eval_interval={n}",
        f"--log_interval={suite.log_interval}",
        *system,
    ]
    done = suite.run("nanogpt-shakespeare_char", command, cwd=copy)
    iters = [(int(m[1]), float(m[2]), float(m[3])) for _, line in done.lines if (m := NANO_ITER.match(line))]
    evals = {int(m[1]): (float(m[2]), float(m[3])) for _, line in done.lines if (m := NANO_EVAL.match(line))}
    ms = steady([(it, ms) for it, ms, _ in iters], n)
    train_loss, val_loss = evals.get(n, (None, None))
    # Its running MFU before the last iteration, whose time includes the final evaluation.
    reported = next((percent / 100 for it, _, percent in reversed(iters) if it < n), None)
    return {
        "command": command[1:],
        "ms_per_iter": ms,
        "tokens_per_sec": hyper["batch_size"] * hyper["block_size"] / ms * 1000,
        **mfu(suite, flops, ms),
        "mfu_reported_a100": reported,
        "first_iter_s": done.first(NANO_ITER),
        "train_loss": train_loss,
        "val_loss": val_loss,
        "wall_s": done.wall_s,
        "gpu_memory_used_mb": done.gpu_memory_mb,
        "note": "its first logged iteration comes after its evaluation at iter 0 (eval_iters batches of each split, compiled)",
    }


def ours_shakespeare_char(suite: Suite, hyper: dict[str, Any], flops: float) -> dict[str, Any]:
    suite.prepare("shakespeare_char")
    n = suite.iters
    settings = {
        "experiment": "shakespeare_char",
        **{OUR_KEYS[key]: value for key, value in hyper.items()},
        "max_iters": n,
        "eval_interval": n,
        "log_interval": suite.log_interval,
        "eval_at_start": False,
        **suite.system(compiled=True),
    }
    # Logging recompiles and graph breaks costs nothing until one happens, so the timed run is the logged run.
    run = suite.train("ours-shakespeare_char", settings, env={"TORCH_LOGS": "recompiles,graph_breaks"})
    suite.sample_run = run.run_dir
    ms = steady([(r["iter"], r["ms_per_iter"]) for r in run.events("train")], n)
    mfus = [(r["iter"], r["mfu"]) for r in run.events("train") if r.get("mfu") is not None]
    final = next((r for r in run.events("eval") if r["iter"] == n), {})
    start = run.events("start")[0]
    logged = run.done.stderr.splitlines() + [line for _, line in run.done.lines]
    recompiles = [i for i, line in enumerate(logged) if "Recompiling" in line]
    graph_breaks = [i for i, line in enumerate(logged) if "Graph break" in line]
    # A few of them with the lines that follow (the guard that failed, the reason for the break).
    examples = ["\n".join(logged[i : i + 4]) for i in (recompiles + graph_breaks)[:4]]
    return {
        "command": ["-m", "nanogpt.train", *overrides(settings)],
        "ms_per_iter": ms,
        "tokens_per_sec": hyper["batch_size"] * hyper["block_size"] / ms * 1000,
        **mfu(suite, flops, ms),
        "mfu_reported_device": steady(mfus, n) if mfus else None,
        "first_iter_s": run.done.first(OURS_ITER),
        "startup_s": start.get("startup_s"),
        "train_loss": final.get("train_loss"),
        "val_loss": final.get("val_loss"),
        "wall_s": run.done.wall_s,
        "peak_memory_mb": run.peak_memory_mb(),
        "gpu_memory_used_mb": run.done.gpu_memory_mb,
        "recompiles": len(recompiles),
        "graph_breaks": len(graph_breaks),
        "torch_logs_examples": examples,
    }


# ---------------------------------------------------------------------- (c) gpt2_step


def gpt2_step(suite: Suite) -> dict[str, Any]:
    shape = {key: TINY[key] for key in GPT2_SHAPE} if suite.smoke else GPT2_SHAPE
    flops = gpt_flops_per_iter(shape["n_layer"], shape["n_embd"], shape["block_size"], GPT2_VOCAB, shape["batch_size"])
    result: dict[str, Any] = {
        "shape": shape,
        "device": suite.device,
        "dtype": suite.dtype,
        "peak_flops_device": suite.peak_flops,
        "peak_flops_a100": A100_PEAK_FLOPS,
        "note": "nanoGPT's MFU divides by an A100's 312 TFLOPS; mfu_device divides both tools' FLOP/s by this card's "
        "peak (nanogpt.system.peak_flops). bench.py neither clips gradients nor checks the loss; our step does both",
    }
    for compiled in (True, False):
        key = "compile" if compiled else "no_compile"
        part: dict[str, Any] = {
            "nanogpt": suite.guarded(lambda: nanogpt_bench(suite, compiled, flops)),
            "ours": suite.guarded(lambda: ours_gpt2_step(suite, compiled, shape, flops)),
        }
        if part["nanogpt"]["status"] == part["ours"]["status"] == "ok":
            part["ours_over_nanogpt_tokens_per_sec"] = part["ours"]["tokens_per_sec"] / part["nanogpt"]["tokens_per_sec"]
        result[key] = part
    return result


def nanogpt_bench(suite: Suite, compiled: bool, flops: float) -> dict[str, Any]:
    if suite.smoke:
        raise Skip("bench.py calls torch.cuda.synchronize(): it runs on CUDA only")
    command = [sys.executable, "bench.py", "--real_data=False", f"--compile={compiled}"]
    done = suite.run(f"nanogpt-bench-{'compile' if compiled else 'no_compile'}", command, cwd=suite.anchor_copy())
    match = next((m for _, line in done.lines if (m := NANO_BENCH.match(line))), None)
    if match is None:
        raise CommandFailed("bench.py printed no 'time per iteration' line", "\n".join(line for _, line in done.lines[-10:]))
    ms = float(match[1])
    return {
        "command": command[1:],
        "ms_per_iter": ms,
        **mfu(suite, flops, ms),
        "tokens_per_sec": GPT2_SHAPE["batch_size"] * GPT2_SHAPE["block_size"] / ms * 1000,
        "mfu_reported_a100": float(match[2]) / 100,
        "first_iter_s": done.first(NANO_BENCH_STEP),
        "wall_s": done.wall_s,
        "gpu_memory_used_mb": done.gpu_memory_mb,
        "timed": f"mean of {BENCH_STEPS} steps after {BENCH_BURN_IN}",
    }


def ours_gpt2_step(suite: Suite, compiled: bool, shape: dict[str, int], flops: float) -> dict[str, Any]:
    suite.prepare("shakespeare")
    iters, burn_in = (3, 1) if suite.smoke else (BENCH_BURN_IN + BENCH_STEPS, BENCH_BURN_IN)
    settings = {
        **GPT2_STEP,
        **{OUR_KEYS[key]: value for key, value in shape.items()},
        # Every step logged; evaluation only the one at the end (one batch), which is not timed.
        "max_iters": iters,
        "eval_interval": iters + 1,
        "eval_iters": 1,
        "log_interval": 1,
        "eval_at_start": False,
        "always_save_checkpoint": False,
        **suite.system(compiled),
    }
    run = suite.train(f"ours-gpt2-{'compile' if compiled else 'no_compile'}", settings)
    shutil.rmtree(run.run_dir)  # its two checkpoints of GPT-2 and AdamW state take 3 GB
    steps = [r for r in run.events("train") if r["iter"] > burn_in]
    ms = statistics.mean(r["ms_per_iter"] for r in steps)  # as bench.py: the mean over the steps after the burn-in
    tokens = shape["block_size"] * shape["batch_size"]
    mfus = [r["mfu"] for r in steps if r.get("mfu") is not None]
    return {
        "command": ["-m", "nanogpt.train", *overrides(settings)],
        "ms_per_iter": ms,
        "tokens_per_sec": tokens / ms * 1000,
        **mfu(suite, flops, ms),
        "mfu_reported_device": statistics.mean(mfus) if mfus else None,
        "first_iter_s": run.done.first(OURS_ITER),
        "startup_s": run.events("start")[0].get("startup_s"),
        "wall_s": run.done.wall_s,
        "peak_memory_mb": run.peak_memory_mb(),
        "gpu_memory_used_mb": run.done.gpu_memory_mb,
        "compile": settings["system.compile"],
        "timed": f"mean of {len(steps)} steps after {burn_in}",
    }


# ---------------------------------------------------------------------- (b) time_to_loss


def time_to_loss(suite: Suite) -> dict[str, Any]:
    suite.prepare("shakespeare_char")
    target = None if suite.smoke else suite.args.target
    budget = 10.0 if suite.smoke else min(suite.args.fast_budget, suite.left() - FAST_OVERHEAD_S)
    if budget < FAST_MIN_BUDGET_S and not suite.smoke:
        raise Skip(f"only {budget:.0f} s of time budget would be left for training (at least {FAST_MIN_BUDGET_S:.0f} s needed)")
    budget = round(budget)
    settings = {
        "experiment": "shakespeare_char_fast",
        "time_budget_s": budget,
        "eval_interval": FAST_EVAL_INTERVAL,
        **suite.system(compiled=True),
    }
    if suite.smoke:
        settings.update(TINY_OURS, max_iters=20, eval_interval=5)
    run = suite.train("ours-shakespeare_char_fast", settings)
    evals = [r for r in run.events("eval") if r.get("val_loss") is not None]
    seen = {int(m[1]): at for at, line in run.done.lines if (m := OURS_EVAL.search(line))}
    hit = next((r for r in evals if target is not None and r["val_loss"] <= target), None)
    end = run.events("end")[0]
    return {
        "command": ["-m", "nanogpt.train", *overrides(settings)],
        "target": target,
        "time_budget_s": budget,
        "shortened_from_s": suite.args.fast_budget if budget < suite.args.fast_budget and not suite.smoke else None,
        "reached": None if target is None else hit is not None,
        # From the launch (the suite's clock, at the line that printed the evaluation), and on
        # the trainer's own clock (the record's time, which time_budget_s counts).
        "reached_s": seen.get(hit["iter"]) if hit else None,
        "reached_train_s": hit["time"] if hit else None,
        "reached_iter": hit["iter"] if hit else None,
        "iters": evals[-1]["iter"] if evals else None,
        "final_val_loss": evals[-1]["val_loss"] if evals else None,
        "best_val_loss": end.get("best_val_loss"),
        "startup_s": run.events("start")[0].get("startup_s"),
        "wall_s": run.done.wall_s,
        "peak_memory_mb": end.get("peak_memory_mb"),
        "gpu_memory_used_mb": run.done.gpu_memory_mb,
        "evals": [[r["iter"], round(r["time"], 2), r["val_loss"]] for r in evals],
    }
