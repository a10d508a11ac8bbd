"""nanogpt: train, fine-tune and sample small GPT language models, driven by Hydra configs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nanogpt.generation import Generator, generate

from nanogpt.version import __version__

__all__ = ["Generator", "__version__", "generate"]


def __getattr__(name: str) -> Any:
    # Imported on first use: `import nanogpt` stays free of torch for the commands that need none.
    if name in ("Generator", "generate"):
        from nanogpt import generation

        return getattr(generation, name)
    raise AttributeError(f"module 'nanogpt' has no attribute {name!r}")
