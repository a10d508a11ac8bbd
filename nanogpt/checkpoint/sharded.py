"""Sharded checkpoints (`system.strategy=fsdp`), written and read with torch.distributed.checkpoint (DCP).

A sharded checkpoint is a folder, `ckpt_last.dcp/` (and `ckpt_best.dcp/`): every rank's shard of
the weights and of the optimizer state in DCP's files (`__<rank>_0.distcp`, `.metadata`), and
`train_state.pt`, the rest of what a `ckpt_*.pt` holds (iteration, config, every rank's RNG
streams, the data sampler, ...) and the CRC-32 of every shard file, written by rank 0 (DCP's
files carry no checksum of their own; a loaded checkpoint is checked against these). DCP reshards when it loads, so a run saved by
2 ranks continues on 1 or on 4. The folder is written under a temporary name and renamed into
place once every shard is written, so a kill mid-save leaves the previous checkpoint as it was.
DCP's `.metadata` is a pickle, read here with only DCP's own record types allowed.
"""

from __future__ import annotations

import os
import pathlib
import pickle
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.distributed.checkpoint.filesystem as dcp_filesystem
import torch.distributed.checkpoint.metadata as dcp_metadata
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.metadata import TensorStorageMetadata
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from nanogpt.checkpoint.format import SHARDED_STATE_FILE, check_model_args, load_checkpoint, save_checkpoint
from nanogpt.distributed import Dist
from nanogpt.errors import CheckpointError, StorageError, first_line, storage_error
from nanogpt.files import file_crc32, fsync_dir

STATE_FILE = SHARDED_STATE_FILE


@contextmanager
def single_process_allowed() -> Iterator[None]:
    """DCP warns at every save and load without a process group; for us one process is a use
    (fsdp on one process, sampling), not a mistake."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is .*unavailable or uninitialized", category=UserWarning)
        yield


def _tensors(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict[str, Any], dict[str, Any]]:
    """What DCP saves and loads: the model's and the optimizer's state as this rank's shards (whole
    tensors for a model that is not sharded), keyed by parameter name. Only the optimizer's
    per-parameter tensors: its hyperparameters are the config's (a resume re-applies them), and
    anything but tensors DCP would pickle, which loading would unpickle."""
    model_state, optim_state = get_state_dict(model, optimizer)
    return {"model": model_state, "optimizer": optim_state["state"]}, optim_state


def save_sharded(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, train_state: dict[str, Any] | None, world: Dist) -> None:
    """Write a sharded checkpoint to the folder `path`. Call it on every rank; rank 0 passes
    train_state (the rest of the checkpoint) and puts the finished folder in place."""
    tmp = path.with_name(f".{path.name}.tmp")
    if world.is_main:
        shutil.rmtree(tmp, ignore_errors=True)  # what an earlier save, killed half-way, left
    if world.enabled:
        dist.barrier()  # no rank writes into tmp before it is emptied
    tensors, _ = _tensors(model, optimizer)
    try:
        with single_process_allowed():
            dcp.save(tensors, checkpoint_id=tmp)
    except CheckpointException as exc:  # a BaseException: one rank's failed write
        raise StorageError(f"{path}: writing it failed ({first_line(exc)})") from None
    if not world.is_main:
        return
    assert train_state is not None
    # dcp.save returns on rank 0 only once every rank has reported its shard written (it gathers
    # their results before writing .metadata): the folder is complete, and can be put in place.
    save_checkpoint(tmp / STATE_FILE, {**train_state, "shard_crc32": shard_crcs(tmp)})
    commit_folder(tmp, path)


def shard_crcs(folder: Path) -> dict[str, int]:
    """The CRC-32 of every file that a sharded checkpoint's .metadata lists, and of .metadata."""
    metadata = SafeReader(folder).read_metadata()
    files = sorted({info.relative_path for info in (metadata.storage_data or {}).values()} | {".metadata"})
    return {name: file_crc32(folder / name) for name in files}


def commit_folder(tmp: Path, path: Path) -> None:
    """Put the finished folder tmp in place of path. A folder cannot replace a non-empty one in one
    rename: the old one is moved aside first (`.<name>.old`), then removed. A kill between the
    two renames leaves only `.<name>.old`, which recover_interrupted_saves puts back."""
    old = path.with_name(f".{path.name}.old")
    try:
        shutil.rmtree(old, ignore_errors=True)
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        fsync_dir(path.parent)
        shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        raise storage_error(exc, path) from None


def recover_interrupted_saves(run_dir: Path) -> list[str]:
    """Undo what a sharded save killed half-way left in run_dir (call it holding the run folder's
    lock): an unfinished `.ckpt_*.dcp.tmp` folder goes, and a `.ckpt_*.dcp.old` whose checkpoint
    is missing (a kill between commit_folder's renames) is put back. Returns their names."""
    touched = []
    for tmp in run_dir.glob(".ckpt_*.dcp.tmp"):
        shutil.rmtree(tmp, ignore_errors=True)
        touched.append(tmp.name)
    for old in run_dir.glob(".ckpt_*.dcp.old"):
        path = run_dir / old.name[1 : -len(".old")]
        if path.exists():
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(old, path)
        touched.append(old.name)
    return sorted(touched)


def keep_sharded_snapshot(run_dir: Path, last: Path, iter_num: int, keep_last_k: int) -> None:
    """Keep the sharded checkpoint `last` as `ckpt_iter_<N>.dcp/` too (hard links, as for
    ckpt_iter_<N>.pt: checkpoint files are never rewritten), and delete all but the newest
    keep_last_k such snapshots."""
    snapshot = run_dir / f"ckpt_iter_{iter_num:07d}.dcp"
    tmp = snapshot.with_name(f".{snapshot.name}.tmp")
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(last, tmp, copy_function=os.link)
        commit_folder(tmp, snapshot)
        for old in sorted(run_dir.glob("ckpt_iter_*.dcp"))[:-keep_last_k]:
            shutil.rmtree(old)
    except OSError as exc:
        raise storage_error(exc) from None


# What DCP's `.metadata` pickle may name: its own metadata records, sizes, dtypes and paths. Any
# other global (a function that runs code, say) is refused, as torch.load(weights_only=True)
# refuses one in a ckpt_*.pt; torch's weights-only unpickler itself cannot read this pickle's
# protocol, so the same rule is applied here with pickle's documented find_class restriction.
METADATA_GLOBALS = {
    (cls.__module__, cls.__qualname__): cls
    for cls in (
        dcp_metadata.Metadata,
        dcp_metadata.TensorStorageMetadata,
        dcp_metadata.BytesStorageMetadata,
        dcp_metadata.TensorProperties,
        dcp_metadata.ChunkStorageMetadata,
        dcp_metadata.MetadataIndex,
        dcp_metadata.StorageMeta,
        dcp_metadata._MEM_FORMAT_ENCODING,
        torch.serialization._get_layout,
        dcp_filesystem._StorageInfo,
        pathlib.PosixPath,
        pathlib.PurePosixPath,
        torch.Size,
    )
}


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in METADATA_GLOBALS:
            return METADATA_GLOBALS[(module, name)]
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        raise pickle.UnpicklingError(f"refused global {module}.{name} in .metadata")


class SafeReader(FileSystemReader):
    """DCP's file reader, reading `.metadata` with only METADATA_GLOBALS allowed."""

    def read_metadata(self, *args: Any, **kwargs: Any) -> dcp_metadata.Metadata:
        with open(self._get_metadata_path(kwargs.get("rank")), "rb") as f:
            metadata = _MetadataUnpickler(f).load()
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = dcp_metadata.StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


def read_sharded(path: Path) -> dict[str, Any]:
    """A sharded checkpoint's train state, as load_checkpoint gives a ckpt_*.pt's, once every shard
    file its metadata lists is there and long enough. "model" holds the weights' shapes as meta
    tensors (no storage), for check_model_args; "sharded" the folder, for load_sharded.
    DCP keeps `.metadata` as a pickle, read by SafeReader, which refuses any global but DCP's own
    records."""
    state = load_checkpoint(path / STATE_FILE)
    try:
        metadata = SafeReader(path).read_metadata()
    except Exception as exc:  # missing, truncated or not DCP's: whatever unpickling it raised
        raise CheckpointError(f"{path}: unreadable sharded checkpoint ({first_line(exc)})") from None
    for info in (metadata.storage_data or {}).values():
        shard = path / info.relative_path
        if not shard.is_file() or shard.stat().st_size < info.offset + info.length:
            raise CheckpointError(f"{path}: incomplete sharded checkpoint: its shard file {info.relative_path} is missing or truncated")
    # Folders written before the CRCs were kept have none to check.
    for name, crc in state.get("shard_crc32", {}).items():
        if not (path / name).is_file() or file_crc32(path / name) != crc:
            raise CheckpointError(f"{path}: damaged: its file {name} no longer matches the CRC it was written with")
    state["model"] = {
        key.removeprefix("model."): torch.empty(meta.size, dtype=meta.properties.dtype, device="meta")
        for key, meta in metadata.state_dict_metadata.items()
        if key.startswith("model.") and isinstance(meta, TensorStorageMetadata)
    }
    state["sharded"] = str(path)
    return state


def read_sharded_whole(path: Path) -> dict[str, Any]:
    """A sharded checkpoint as load_checkpoint gives a ckpt_*.pt, whole weights included, read by
    this process alone (no process group): for sampling, export and evaluation. The weights are
    allocated only once check_model_args has found the shapes consistent."""
    state = read_sharded(path)
    check_model_args(state, path)
    weights = {name: torch.empty(meta.shape, dtype=meta.dtype) for name, meta in state["model"].items()}
    try:
        with single_process_allowed():
            dcp.load({"model": weights}, storage_reader=SafeReader(path), no_dist=True)
    except CheckpointException as exc:
        raise CheckpointError(f"{path}: unreadable sharded checkpoint ({first_line(exc)})") from None
    state["model"] = weights
    return state


def load_sharded(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Load a sharded checkpoint's weights and optimizer state into model and optimizer (call it on
    every rank), whatever world size wrote it: DCP reads each rank's part of each tensor."""
    # get_state_dict gives a fresh optimizer its state first (a step with zero gradients at lr 0,
    # which leaves the weights as they are): the tensors DCP then loads into.
    tensors, optim_state = _tensors(model, optimizer)
    try:
        with single_process_allowed():
            dcp.load(tensors, storage_reader=SafeReader(path))
    except CheckpointException as exc:
        raise CheckpointError(f"{path}: its shards do not load into this model ({first_line(exc)})") from None
    set_state_dict(model, optimizer, model_state_dict=tensors["model"], optim_state_dict={**optim_state, "state": tensors["optimizer"]})
