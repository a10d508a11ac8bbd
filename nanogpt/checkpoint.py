"""Checkpoints: written atomically, loaded without unpickling code.

A checkpoint is a `torch.save` file holding only tensors, numbers, strings, lists and dicts; the
resolved config and the dataset's metadata are stored as JSON strings. Loading uses
`torch.load(weights_only=True)`, which refuses any pickled object, so opening a checkpoint
from someone else can never run their code.
"""

from __future__ import annotations

import os
import pickle
import random
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nanogpt.errors import CheckpointError

CKPT_FORMAT = 1
CKPT_NAMES = {"last": "ckpt_last.pt", "best": "ckpt_best.pt"}


def checkpoint_path(run_dir: str | os.PathLike, which: str) -> Path:
    return Path(run_dir) / CKPT_NAMES[which]


def keep_snapshot(run_dir: Path, iter_num: int, keep_last_k: int) -> None:
    """Keep ckpt_last as `ckpt_iter_<N>.pt` too (a hard link: no copy, and safe because
    checkpoints are only ever replaced by rename, never rewritten), and delete all but the
    newest keep_last_k such snapshots."""
    last = checkpoint_path(run_dir, "last")
    snapshot = run_dir / f"ckpt_iter_{iter_num:07d}.pt"
    snapshot.unlink(missing_ok=True)
    os.link(last, snapshot)
    for old in sorted(run_dir.glob("ckpt_iter_*.pt"))[:-keep_last_k]:
        old.unlink()


def all_checkpoints(run_dir: Path) -> list[Path]:
    """Every checkpoint file of a run folder, newest first."""
    paths = [p for p in run_dir.glob("ckpt_*.pt") if p.is_file()]
    return sorted(paths, key=lambda p: p.stat().st_mtime_ns, reverse=True)


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write `state` to `path` so that a crash at any moment leaves either the old file or the
    new one, never a mix: temp file in the same folder, fsync, rename, fsync the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, default_file_mode())
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def default_file_mode() -> int:
    """The mode a plain open() would give a new file (0644 under the usual umask); mkstemp's
    0600 would hide checkpoints and datasets from the other users of a shared cluster."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by save_checkpoint; CheckpointError names the file otherwise."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    with open(path, "rb") as f:
        if f.read(4) != b"PK\x03\x04":  # torch.save's zip format; anything else is not ours
            raise CheckpointError(f"{path}: unreadable, truncated or corrupt (not a torch checkpoint archive)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if "WeightsUnpickler error" in line]
        reason = lines[0].split(":", 1)[1].strip().split(". ")[0] if lines else "not plain data"
        raise CheckpointError(f"{path}: refused without loading it: it holds pickled objects ({reason})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: unreadable, truncated or corrupt ({reason})") from None
    if not isinstance(state, dict) or state.get("format") != CKPT_FORMAT:
        raise CheckpointError(f"{path}: not a nanogpt checkpoint (format {CKPT_FORMAT})")
    return state


def capture_rng_state() -> dict[str, Any]:
    """Every global random stream, as plain data (numpy's key array becomes a list)."""
    version, mt_state, gauss = random.getstate()
    np_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "python": [version, list(mt_state), gauss],
        "numpy": {
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": np_state["state"]["pos"],
            "has_gauss": np_state["has_gauss"],
            "gauss": np_state["gauss"],
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        # The stream of this process's own GPU only: a run resumed on a machine with fewer GPUs
        # (or another CUDA_VISIBLE_DEVICES) must not need a state for every GPU this one saw.
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    version, mt_state, gauss = state["python"]
    random.setstate((version, tuple(mt_state), gauss))
    np_state = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": "MT19937",
            "state": {"key": np_state["key"].numpy().astype(np.uint32), "pos": np_state["pos"]},
            "has_gauss": np_state["has_gauss"],
            "gauss": np_state["gauss"],
        }
    )
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if isinstance(cuda, list):  # checkpoints before 2026-11-26 hold every visible GPU's state
            index = torch.cuda.current_device()
            cuda = cuda[index] if index < len(cuda) else cuda[0]
        torch.cuda.set_rng_state(cuda.cpu())
