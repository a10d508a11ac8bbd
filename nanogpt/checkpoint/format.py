"""A checkpoint file: written atomically, loaded without unpickling code.

A `ckpt_*.pt` is a `torch.save` file holding only tensors, numbers, strings, lists and dicts; the
resolved config and the dataset's metadata are stored as JSON strings. Loading uses
`torch.load(weights_only=True)`, which refuses any pickled object, so opening a checkpoint
from someone else can never run their code.

torch.save writes a zip archive whose members each carry a CRC-32 of their bytes, which
torch.load never checks: a bit flipped on the disk would load as a wrong weight (a NaN, say) and
be trained on or sampled from. Loading checks every member's CRC first: a fraction of
torch.load's own time, and nothing at save, where a digest of our own would cost at both ends
(docs/benchmarks.md, "Checkpoint integrity", measures the three).
"""

from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from nanogpt.errors import CheckpointError, StorageError, first_line, storage_error, storage_fault
from nanogpt.files import default_file_mode, fsync_dir
from nanogpt.model import GPT, GPTConfig

CKPT_FORMAT = 1
CKPT_NAMES = {"last": "ckpt_last.pt", "best": "ckpt_best.pt"}
# system.strategy=fsdp's checkpoints: folders of shards (nanogpt.checkpoint.sharded), with the
# rest of the train state in a .pt file of its own.
SHARDED_NAMES = {"last": "ckpt_last.dcp", "best": "ckpt_best.dcp"}
SHARDED_STATE_FILE = "train_state.pt"
# What a kill in the middle of save_checkpoint can leave: its mkstemp file.
TEMP_PATTERN = ".ckpt_*.pt.*.tmp"


def checkpoint_path(run_dir: str | os.PathLike, which: str) -> Path:
    return Path(run_dir) / CKPT_NAMES[which]


def sharded_checkpoint_path(run_dir: str | os.PathLike, which: str) -> Path:
    return Path(run_dir) / SHARDED_NAMES[which]


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


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by save_checkpoint, once its bytes are checked against the CRCs it
    was written with; CheckpointError names the file otherwise."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    with open(path, "rb") as f:
        if f.read(4) != b"PK\x03\x04":  # torch.save's zip format; anything else is not ours
            raise CheckpointError(f"{path}: unreadable, truncated or corrupt (not a torch checkpoint archive)")
    verify_archive(path)
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


def verify_archive(path: Path) -> None:
    """Refuse (CheckpointError) a checkpoint whose bytes changed since it was written: a member
    whose CRC-32 does not match, or an archive whose directory is damaged."""
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: unreadable, truncated or corrupt ({first_line(exc)})") from None
    if damaged is not None:
        raise CheckpointError(f"{path}: damaged: its member {damaged} no longer matches the CRC it was written with")


def peek_iteration(path: Path) -> int | None:
    """The iteration a .pt checkpoint holds, read without loading its tensors (memory-mapped, a
    few milliseconds for any size); None where the file cannot tell."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # whatever an unreadable file raises, it is no candidate to rank: loading it reports why
        return None
    iteration = state.get("iter_num") if isinstance(state, dict) else None
    return iteration if type(iteration) is int else None


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
