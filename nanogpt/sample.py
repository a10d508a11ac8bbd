"""Print text sampled from a trained run.

    python -m nanogpt.sample run_dir=outputs/2026-11-25/17-03-11
    python -m nanogpt.sample run_dir=... prompt="ROMEO:" num_samples=2 max_new_tokens=300 temperature=0.7
    python -m nanogpt.sample run_dir=... prompt=FILE:prompt.txt checkpoint=last

Writes nothing to disk.
"""

from __future__ import annotations

import json
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

from nanogpt.checkpoint import CheckpointError, checkpoint_path, load_checkpoint
from nanogpt.cli import run_or_exit
from nanogpt.config import CONF_DIR, ConfigError, register_configs, validate_sample
from nanogpt.data import DataError, load_tokenizer
from nanogpt.model import GPT, GPTConfig
from nanogpt.system import resolve_system


def load_model(run_dir: Path, which: str, device: str) -> tuple[GPT, dict, Path]:
    """The model of a run's checkpoint (`best`, falling back to `last`), in eval mode, and the
    dataset metadata it was trained with (its tokenizer)."""
    path = checkpoint_path(run_dir, which)
    if which == "best" and not path.is_file() and checkpoint_path(run_dir, "last").is_file():
        path = checkpoint_path(run_dir, "last")
    if not run_dir.is_dir():
        raise CheckpointError(f"run_dir={str(run_dir)!r}: no such folder")
    state = load_checkpoint(path, map_location="cpu")
    model = GPT(GPTConfig(**state["model_args"]))
    model.load_state_dict(state["model"])
    model.eval().to(device)
    return model, json.loads(state["dataset_meta"]), path


def read_prompt(prompt: str) -> str:
    if prompt.startswith("FILE:"):
        path = Path(prompt[len("FILE:") :]).expanduser()
        try:
            return path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"prompt=FILE:{path}: cannot read it as UTF-8 text ({exc.__class__.__name__})") from None
    return prompt


def sample(cfg: DictConfig) -> list[str]:
    """Generate cfg.num_samples continuations of the prompt; print and return them."""
    validate_sample(cfg)
    if cfg.run_dir is None:
        raise ConfigError("run_dir is required: python -m nanogpt.sample run_dir=<a run folder under outputs/>")
    system = resolve_system(cfg.system.device, cfg.system.dtype, cfg.system.compile)
    model, meta, path = load_model(Path(cfg.run_dir), cfg.checkpoint, system.device)
    tokenizer = load_tokenizer(meta)
    prompt = read_prompt(cfg.prompt)
    if not prompt:
        raise ConfigError("prompt is empty: give at least one character (the default is a newline)")
    try:
        prompt_ids = tokenizer.encode(prompt)
    except DataError as exc:
        raise ConfigError(f"prompt cannot be encoded: {exc}") from None

    generator = torch.Generator(device=system.device).manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    idx = torch.tensor([prompt_ids] * cfg.num_samples, dtype=torch.long, device=system.device)
    with system.autocast():
        out = model.generate(
            idx, cfg.max_new_tokens, temperature=cfg.temperature, top_k=cfg.top_k, generator=generator, vocab_size=tokenizer.vocab_size
        )
    texts = [tokenizer.decode(row.tolist()) for row in out]
    for i, text in enumerate(texts):
        if i:
            print("-" * 40)
        print(text, flush=True)
    return texts


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="sample")
def main(cfg: DictConfig) -> None:
    run_or_exit(lambda: sample(cfg))


if __name__ == "__main__":
    register_configs()
    main()
