"""`nanogpt-prepare` (and `python -m nanogpt.prepare`): prepare a dataset into data/<name>/
(training does this by itself on first use).

    python -m nanogpt.prepare dataset=shakespeare_char
    python -m nanogpt.prepare dataset=shakespeare_char dataset.source=/path/to/input.txt force=true
    python -m nanogpt.prepare dataset=shakespeare                      # tiny Shakespeare, GPT-2 BPE
    python -m nanogpt.prepare dataset=text dataset.source=~/books/ dataset.tokenizer=gpt2
    python -m nanogpt.prepare dataset=text dataset.source=~/books/ dataset.tokenizer=bpe dataset.vocab_size=16000
    python -m nanogpt.prepare dataset=hf dataset.name=fineweb dataset.hf_path=HuggingFaceFW/fineweb-edu dataset.hf_config=sample-10BT
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from nanogpt.cli.launch import launch, run_or_exit
from nanogpt.config import CONF_DIR, validate_dataset


def prepare_dataset(cfg: DictConfig) -> dict:
    from nanogpt.data import dataset_dir, prepare_config  # numpy, tokenizers: only once the command line is known good

    d = cfg.dataset
    validate_dataset(d)
    meta = prepare_config(d, force=cfg.force)
    print(
        f"{d.name}: {meta['train_tokens']:,} train / {meta['val_tokens']:,} val tokens ({meta['dtype']}), "
        f"vocabulary {meta['vocab_size']:,}, in {dataset_dir(d.data_dir, d.name)}"
    )
    return meta


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="prepare")
def main(cfg: DictConfig) -> None:
    run_or_exit(lambda: prepare_dataset(cfg))


def cli() -> None:
    """`nanogpt-prepare` and `python -m nanogpt.prepare`."""
    launch(main, "prepare")
