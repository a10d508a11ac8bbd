"""`nanogpt-export` (and `python -m nanogpt.export`): write a run's model as a Hugging Face GPT-2
folder (nanogpt.huggingface.export), for use anywhere transformers runs.

    nanogpt-export run_dir=outputs/2026-11-25/17-03-11 out=exported/shakespeare
    nanogpt-export run_dir=... out=... checkpoint=last overwrite=true
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from nanogpt.cli.launch import launch, run_or_exit
from nanogpt.config import CONF_DIR, validate_export


def export(cfg: DictConfig) -> Path:
    """Write the checkpoint's model into cfg.out; print and return the folder."""
    from nanogpt.huggingface.export import export as export_run  # torch: only once the command line is known good

    validate_export(cfg)
    path, out = export_run(cfg.run_dir, cfg.checkpoint, cfg.out, cfg.overwrite)
    print(f"exported {path} to {out}")
    return out


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="export")
def main(cfg: DictConfig) -> None:
    run_or_exit(lambda: export(cfg))


def cli() -> None:
    """`nanogpt-export` and `python -m nanogpt.export`."""
    launch(main, "export")
