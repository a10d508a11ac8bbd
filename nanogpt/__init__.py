"""nanogpt: train, fine-tune and sample small GPT language models, driven by Hydra configs."""

__version__ = "0.1.0"
