"""`nanogpt-sample` (and `python -m nanogpt.sample`): print text sampled from a trained run.

    nanogpt-sample run_dir=outputs/2026-11-25/17-03-11
    nanogpt-sample run_dir=... prompt="O Romeo, Romeo! wherefore art thou Romeo?" num_samples=2 temperature=0.7
    nanogpt-sample run_dir=... prompt=FILE:prompt.txt checkpoint=last top_p=0.9 stop='[THE END]' stop=$'\\n\\n'
    echo "ROMEO:" | nanogpt-sample run_dir=... prompt=-
    nanogpt-sample run_dir=... stream=true max_new_tokens=2000 window=halve

The prompt and each stop string are the exact text after `prompt=` / `stop=` (commas, quotes,
brackets, `${...}`, `true`, numbers and spaces included: nanogpt.cli.free_text); several stop strings
are given by repeating `stop=`. prompt=- reads the prompt from standard input, prompt=FILE:path
from a file. With stream=true the first sample is printed as its tokens come and the others when
the batch is done; the output is the same as without streaming. Writes nothing to disk. The work
is done by nanogpt.generation, which notebooks can use directly (nanogpt.Generator, nanogpt.generate).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from nanogpt.cli.launch import launch, run_or_exit
from nanogpt.cli.run_folders import find_latest_run
from nanogpt.config import CONF_DIR, validate_generation, validate_sample
from nanogpt.errors import ConfigError

SEPARATOR = "-" * 40


def read_prompt(prompt: str) -> str:
    """The text to continue: `-` is standard input, `FILE:path` a file's text (both read as UTF-8
    and used as they are, a final newline included), anything else the prompt itself."""
    if prompt == "-":
        try:
            return sys.stdin.buffer.read().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"prompt=-: cannot read standard input as UTF-8 text ({exc.__class__.__name__})") from None
    if prompt.startswith("FILE:"):
        path = Path(prompt[len("FILE:") :]).expanduser()
        try:
            return path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"prompt=FILE:{path}: cannot read it as UTF-8 text ({exc.__class__.__name__})") from None
    return prompt


def show(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def sample(cfg: DictConfig) -> list[str]:
    """Generate cfg.num_samples continuations of the prompt; print and return them."""
    options = dict(
        num_samples=cfg.num_samples,
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature,
        top_k=cfg.top_k,
        top_p=cfg.top_p,
        stop=list(cfg.stop),
        window=cfg.window,
    )
    validate_sample(cfg)
    validate_generation(**options, seed=cfg.seed)  # before loading the checkpoint: a bad option fails at once
    run_dir = cfg.run_dir if cfg.run_dir is not None else newest_run()
    from nanogpt.generation import Generator  # torch: only once the command line is known good

    generator = Generator.from_run(run_dir, cfg.checkpoint, cfg.system.device, cfg.system.dtype, cfg.system.check_memory)
    texts = generator.generate(read_prompt(cfg.prompt), seed=cfg.seed, kv_cache=cfg.kv_cache, on_text=show if cfg.stream else None, **options)
    for i, text in enumerate(texts):
        if i:
            show(f"{SEPARATOR}\n")
        if i or not cfg.stream:
            show(text)
        show("\n")
    return texts


def newest_run() -> str:
    """Without run_dir: the run under ./outputs/ with the newest checkpoint (as init_from=resume
    takes it), said on stderr; none there is one line asking for run_dir."""
    latest = find_latest_run(Path("outputs"))
    if latest is None:
        raise ConfigError("run_dir is required: no run with a checkpoint under ./outputs/; nanogpt-sample run_dir=<a run folder>")
    logging.getLogger(__name__).info("run_dir not given: sampling from %s, the run with the newest checkpoint under outputs/", latest)
    return str(latest)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="sample")
def main(cfg: DictConfig) -> None:
    run_or_exit(lambda: sample(cfg))


def cli() -> None:
    """`nanogpt-sample` and `python -m nanogpt.sample`."""
    launch(main, "sample")
