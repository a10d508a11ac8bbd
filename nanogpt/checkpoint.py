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

from nanogpt.errors import CheckpointError, StorageError, first_line, storage_error, storage_fault
from nanogpt.model import GPT, GPTConfig

CKPT_FORMAT = 1
CKPT_NAMES = {"last": "ckpt_last.pt", "best": "ckpt_best.pt"}
# system.strategy=fsdp's checkpoints: folders of shards (nanogpt.fsdp).
SHARDED_NAMES = {"last": "ckpt_last.dcp", "best": "ckpt_best.dcp"}


def checkpoint_path(run_dir: str | os.PathLike, which: str) -> Path:
    return Path(run_dir) / CKPT_NAMES[which]


def sharded_checkpoint_path(run_dir: str | os.PathLike, which: str) -> Path:
    return Path(run_dir) / SHARDED_NAMES[which]


def newest_checkpoint(run_dir: str | os.PathLike, which: str) -> Path | None:
    """The run's `which` checkpoint (best or last), a file or a sharded folder: the newer of the two
    where a run continued under the other system.strategy holds both, as a resume would choose
    (load_newest_valid); None where there is neither."""
    found = [p for p in (checkpoint_path(run_dir, which), sharded_checkpoint_path(run_dir, which)) if p.exists()]
    return max(found, key=lambda p: p.stat().st_mtime_ns, default=None)


def keep_snapshot(run_dir: Path, iter_num: int, keep_last_k: int) -> None:
    """Keep ckpt_last as `ckpt_iter_<N>.pt` too (a hard link: no copy, and safe because
    checkpoints are only ever replaced by rename, never rewritten), and delete all but the
    newest keep_last_k such snapshots."""
    last = checkpoint_path(run_dir, "last")
    snapshot = run_dir / f"ckpt_iter_{iter_num:07d}.pt"
    try:
        snapshot.unlink(missing_ok=True)
        os.link(last, snapshot)
        for old in sorted(run_dir.glob("ckpt_iter_*.pt"))[:-keep_last_k]:
            old.unlink()
    except OSError as exc:
        raise storage_error(exc) from None


def all_checkpoints(run_dir: Path) -> list[Path]:
    """Every checkpoint of a run folder (files, and the folders of sharded ones), newest first."""
    paths = [p for p in run_dir.glob("ckpt_*.pt") if p.is_file()] + [p for p in run_dir.glob("ckpt_*.dcp") if p.is_dir()]
    return sorted(paths, key=lambda p: p.stat().st_mtime_ns, reverse=True)


def has_checkpoint(run_dir: Path) -> bool:
    return bool(all_checkpoints(run_dir))


def fsync_dir(folder: Path) -> None:
    """Make a rename inside `folder` durable: until the folder itself is synced, a power cut can
    lose the new name even though the file's bytes are on disk."""
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write `state` to `path` so that a crash at any moment leaves either the old file or the
    new one, never a mix: temp file in the same folder, fsync, rename, fsync the folder. A full,
    read-only or forbidden disk raises StorageError naming the file; the old file stays."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise storage_error(exc, path) from None
    try:
        os.fchmod(fd, default_file_mode())
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        # torch.save reports a failed write as a RuntimeError ("unexpected pos ..."), raised while
        # handling the OSError that says why.
        if isinstance(exc, (OSError, RuntimeError)):
            fault = storage_fault(exc)
            raise storage_error(fault, path) if fault else StorageError(f"{path}: writing it failed ({first_line(exc)})") from None
        raise


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


def check_model_args(state: dict[str, Any], path: Path) -> dict[str, Any]:
    """The checkpoint's model_args, once they are known to describe exactly the weights it holds.
    Call it before building a GPT from a checkpoint: the sizes come from the file, and a crafted
    one (64 layers x 16384 wide in 1.3 MB) must be refused before it allocates gigabytes. The
    checks need no memory: counts and shapes first, then the model built on the meta device."""
    for key in ("model_args", "model"):
        if key not in state:
            raise CheckpointError(f"{path}: not a usable model checkpoint (KeyError: {key!r})")
    args, weights = state["model_args"], state["model"]
    if not isinstance(args, dict) or not isinstance(weights, dict) or not all(isinstance(t, torch.Tensor) for t in weights.values()):
        raise CheckpointError(f"{path}: not a usable model checkpoint (TypeError: model_args or model is not a dict of the right kind)")

    def refuse(why: str) -> CheckpointError:
        return CheckpointError(f"{path}: its model_args do not match its weights ({why}); refused before building the model")

    sizes = {key: args.get(key) for key in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd")}
    for key, value in sizes.items():
        if type(value) is not int or value <= 0:
            raise refuse(f"{key}={value!r} is not a positive integer")
    embedding = weights.get("transformer.wte.weight")
    if embedding is None or embedding.dim() != 2:
        raise refuse("no 2-d transformer.wte.weight")
    if tuple(embedding.shape) != (sizes["vocab_size"], sizes["n_embd"]):
        held = "x".join(map(str, embedding.shape))
        raise refuse(f"vocab_size={sizes['vocab_size']}, n_embd={sizes['n_embd']}, but the token embedding is {held}")
    layers = {name.split(".")[2] for name in weights if name.startswith("transformer.h.")}
    if len(layers) != sizes["n_layer"]:
        raise refuse(f"n_layer={sizes['n_layer']}, but the weights hold {len(layers)} layers")
    if sizes["n_embd"] % sizes["n_head"]:
        raise refuse(f"n_embd={sizes['n_embd']} is not divisible by n_head={sizes['n_head']}")
    try:
        with torch.device("meta"):  # parameters without storage: shapes only
            expected = GPT(GPTConfig(**args)).state_dict()
    except (TypeError, ValueError, RuntimeError) as exc:
        raise refuse(first_line(exc)) from None
    for name in sorted(expected.keys() | weights.keys()):
        if name not in weights:
            raise refuse(f"{name} is missing")
        if name not in expected:
            raise refuse(f"unexpected {name}")
        if expected[name].shape != weights[name].shape:
            raise refuse(f"{name} is {tuple(weights[name].shape)}, model_args give {tuple(expected[name].shape)}")
    return args


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
