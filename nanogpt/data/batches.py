"""Training batches: random (input, target) windows drawn from the memory-mapped token file of
a prepared split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from nanogpt.data.tokens import read_tokens
from nanogpt.errors import DataError

# The random streams of batches, each seeded from the run's seed alone: evaluation draws its
# batches from a generator of its own and so can never shift the training batches, whatever
# eval_interval or eval_iters are.
TRAIN_DATA_STREAM = 1
EVAL_DATA_STREAM = 2


def stream_seed(seed: int, stream: int) -> int:
    """The seed of one batch stream of a run seeded with `seed`."""
    return (seed * 1_000_003 + stream * 7_919) % (2**63)


class TokenFile:
    """The tokens of one split, memory-mapped, with random (input, target) windows drawn from it."""

    def __init__(self, path: Path, block_size: int, device: str, dtype: str = "uint16", vocab_size: int | None = None):
        self.path = path
        self.tokens = read_tokens(path, dtype)
        # Ids at or above vocab_size mean a damaged file; checked per batch (a few microseconds), since
        # reading a whole token file at every start would take seconds per GB.
        self.vocab_size = vocab_size
        self.block_size = block_size
        self.device = torch.device(device)
        if len(self.tokens) < block_size + 1:
            raise DataError(
                f"{path} holds {len(self.tokens)} tokens, fewer than dataset.block_size+1={block_size + 1}; "
                f"use a smaller dataset.block_size or a larger corpus"
            )
        self._window = np.arange(block_size + 1)

    def draw_offsets(self, count: int, generator: torch.Generator) -> torch.Tensor:
        """`count` random window starts from `generator` (a CPU generator, so the stream of
        batches depends only on its seed and state, never on the device)."""
        return torch.randint(len(self.tokens) - self.block_size, (count,), generator=generator)

    def batch(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return self.windows(self.draw_offsets(batch_size, generator))

    def windows(self, starts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets) for windows at `starts`; targets are the inputs shifted by one."""
        ids = self.tokens[starts.numpy()[:, None] + self._window]
        if self.vocab_size is not None and ids.size and int(ids.max()) >= self.vocab_size:
            row, column = np.argwhere(ids >= self.vocab_size)[0]
            raise DataError(
                f"{self.path} is damaged: token {int(starts[row]) + int(column):,} is id {int(ids[row, column])}, outside the "
                f"vocabulary of {self.vocab_size:,}; prepare the dataset again (nanogpt-prepare ... force=true)"
            )
        windows = torch.from_numpy(ids.astype(np.int64))
        if self.device.type == "cuda":
            windows = windows.pin_memory().to(self.device, non_blocking=True)
        elif self.device.type != "cpu":
            windows = windows.to(self.device)
        return windows[:, :-1], windows[:, 1:]


def open_splits(folder: Path, meta: dict, block_size: int, device: str) -> dict[str, TokenFile]:
    """The train and val token files of the dataset prepared in `folder` (`meta`: its meta.json)."""
    dtype, vocab_size = meta.get("dtype", "uint16"), meta["vocab_size"]
    return {split: TokenFile(folder / f"{split}.bin", block_size, device, dtype, vocab_size) for split in ("train", "val")}
