"""The GPU suite's sampling section (benchmarks/gpu.py runs it): (d) KV-cache sampling tokens/s
at batch 1 and 8 against the naive path, and whether greedy decoding gives the same tokens both
ways, measured by sample_worker in its own process."""

from __future__ import annotations

import json
import statistics
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gpu import Suite


def sampling(suite: Suite) -> dict[str, Any]:
    """On (a)'s model where it left a checkpoint, else on random weights."""
    run_dir = suite.sample_run if suite.sample_run is not None and any(suite.sample_run.glob("ckpt_*.pt")) else None
    return suite.worker(
        "sampling",
        "sample",
        run_dir=str(run_dir) if run_dir else None,
        device=suite.device,
        tokens=20 if suite.smoke else 1000,
        batches=[1, 8],
        repeats=1 if suite.smoke else 2,
    )


def sample_worker(run_dir: str | None, device: str, tokens: int, batches: list[int], repeats: int) -> dict[str, Any]:
    """KV cache against the naive path (window=halve, the default) with the sampling defaults,
    and greedy decoding both ways, on a run's checkpoint or else a random-weight `small` model."""
    from sample_speed import PROMPT, time_generation

    from nanogpt.generation import Generator

    with tempfile.TemporaryDirectory() as scratch:
        source = f"{Path(run_dir).name}/ckpt_best.pt" if run_dir else "random weights: (a) left no checkpoint"
        generator = Generator.from_run(run_dir or random_small_run(Path(scratch)), device=device)
    rows = []
    for batch in batches:
        time_generation(generator, 8, batch, True, "halve")  # warm-up: first-call allocations and kernels
        kv = [time_generation(generator, tokens, batch, True, "halve") for _ in range(repeats)]
        naive = time_generation(generator, tokens, batch, False, "halve")
        kv_tokens_per_s = statistics.median(r["tokens_per_s"] for r in kv)
        rows.append(
            {
                "batch": batch,
                "kv_tokens_per_s": kv_tokens_per_s,
                "naive_tokens_per_s": naive["tokens_per_s"],
                "kv_over_naive": kv_tokens_per_s / naive["tokens_per_s"],
                "kv_first_token_ms": statistics.median(r["first_token_s"] for r in kv) * 1000,
            }
        )
    prompt_ids = generator.tokenizer.encode(PROMPT)
    kv_ids, naive_ids = (
        generator.tokenizer.encode(generator.generate(PROMPT, max_new_tokens=tokens, temperature=0.0, kv_cache=kv_cache)[0])
        for kv_cache in (True, False)
    )
    same = next((i for i, (a, b) in enumerate(zip(kv_ids, naive_ids)) if a != b), min(len(kv_ids), len(naive_ids)))
    config = generator.model.config
    return {
        "checkpoint": source,
        "device": generator.system.device,
        "dtype": generator.system.dtype,
        "model": f"{config.n_layer}/{config.n_head}/{config.n_embd}, context {config.block_size}",
        "tokens": tokens,
        "repeats": repeats,
        "window": "halve",
        "rows": rows,
        "greedy": {"tokens": tokens, "identical": kv_ids == naive_ids, "matching_leading_tokens": same - len(prompt_ids)},
    }


def random_small_run(folder: Path) -> Path:
    """A run folder holding a random-weight `small` model (sample_speed.py's): sampling speed does
    not depend on the weights."""
    import torch
    from sample_speed import SHAKESPEARE_CHARS, SMALL

    from nanogpt.checkpoint import CKPT_FORMAT, save_checkpoint
    from nanogpt.model import GPT, GPTConfig

    torch.manual_seed(0)
    meta = {"tokenizer": "char", "vocab_size": len(SHAKESPEARE_CHARS), "itos": SHAKESPEARE_CHARS}
    state = {"format": CKPT_FORMAT, "model": GPT(GPTConfig(**SMALL)).state_dict(), "model_args": SMALL, "dataset_meta": json.dumps(meta)}
    save_checkpoint(folder / "ckpt_best.pt", state)
    return folder
