"""system.strategy=fsdp with torchrun on two CPU processes (gloo): FSDP2 trains like DDP and like one
process with the same global batch, its sharded checkpoints (ckpt_*.dcp/ folders) resume exactly
and on another number of ranks, and bad input gets one line."""

from __future__ import annotations

import hashlib
import shutil
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from nanogpt.checkpoint import load_checkpoint, load_model
from nanogpt.checkpoint.sharded import STATE_FILE, commit_folder, recover_interrupted_saves
from nanogpt.metrics import read_metrics
from nanogpt.training import train
from tests.conftest import TINY, one_line_error, run_cli
from tests.test_config import compose_train
from tests.test_distributed import losses, torchrun

FSDP = "system.strategy=fsdp"
# Muon: its orthogonalisation needs whole matrices, which each rank gathers from the shards.
SHARDED_RUN = (*TINY, FSDP, "optimizer=muon", "gradient_accumulation_steps=4", "log_interval=1", "eval_interval=4", "optimizer.warmup_iters=2")


def sharded_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a sharded checkpoint, whole ("model.lm_head.weight", "optimizer.<name>.exp_avg", ...),
    read in this process without a process group."""
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict_from_keys

    flat: dict[str, torch.Tensor] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(f"{prefix}.{key}" if prefix else str(key), value)
        else:
            flat[prefix] = node

    with warnings.catch_warnings():  # that it reads in one process, which is the point
        warnings.simplefilter("ignore", UserWarning)
        walk("", _load_state_dict_from_keys(checkpoint_id=path))
    return flat


def digest(path: Path) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(sharded_tensors(path).items()):
        h.update(name.encode() + tensor.numpy().tobytes())
    return h.hexdigest()


def file_hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def train_records(run_dir: Path, key: str) -> list[float]:
    return [r[key] for r in read_metrics(run_dir / "metrics.jsonl") if r["event"] == "train"]


@pytest.fixture(scope="module")
def sharded_run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """SHARDED_RUN on 2 ranks to iter 4 of a schedule of 8, with its ckpt_last.dcp and ckpt_best.dcp."""
    run_dir = tmp_path_factory.mktemp("fsdp") / "run"
    proc = torchrun(*SHARDED_RUN, "max_iters=4", "optimizer.lr_decay_iters=8", f"dataset.data_dir={data_dir}", f"hydra.run.dir={run_dir}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return run_dir


@pytest.mark.slow
def test_one_process_ddp_and_fsdp_on_two_ranks_give_the_same_losses(data_dir, tmp_path):
    """20 float32 steps of 4 micro-batches: 4 micro-steps on one process, 2 per rank under DDP and
    FSDP (FSDP's reduce-scatter skipped on the first). Clipping at 0.1 cuts every step, so equal
    losses also say that FSDP clips by the norm of all gradients, not of each rank's shard."""
    run = (
        *TINY,
        "max_iters=20",
        "eval_interval=20",
        "eval_at_start=false",
        "log_interval=1",
        "optimizer.warmup_iters=2",
        "gradient_accumulation_steps=4",
        "optimizer.grad_clip=0.1",
        f"dataset.data_dir={data_dir}",
    )
    single, ddp, fsdp = tmp_path / "single", tmp_path / "ddp", tmp_path / "fsdp"
    single.mkdir()
    train(compose_train(*run), single)
    for run_dir, extra in ((ddp, ()), (fsdp, (FSDP,))):
        proc = torchrun(*run, *extra, f"hydra.run.dir={run_dir}")
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    assert len(losses(single)) == 20 and train_records(fsdp, "clip_fraction") == [1.0] * 20
    assert losses(ddp) == pytest.approx(losses(single), abs=1e-5)
    assert losses(fsdp) == pytest.approx(losses(single), abs=1e-5)
    assert train_records(fsdp, "grad_norm") == pytest.approx(train_records(single, "grad_norm"), rel=1e-4)
    assert "2 ranks (fsdp)" in (fsdp / "train.log").read_text()

    # One sharded checkpoint folder, a shard per rank, the tied embedding/head still one matrix.
    assert not (fsdp / "ckpt_last.pt").exists()
    last = fsdp / "ckpt_last.dcp"
    assert {"__0_0.distcp", "__1_0.distcp", ".metadata", STATE_FILE} <= {p.name for p in last.iterdir()}
    assert len(load_checkpoint(last / STATE_FILE)["rng"]) == 2
    sharded = sharded_tensors(last)
    torch.testing.assert_close(sharded["model.lm_head.weight"], sharded["model.transformer.wte.weight"], rtol=0, atol=0)
    for name, tensor in load_checkpoint(single / "ckpt_last.pt")["model"].items():
        torch.testing.assert_close(sharded[f"model.{name}"], tensor, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_sharded_checkpoints_resume_exactly_and_on_another_number_of_ranks(sharded_run, data_dir, tmp_path):
    whole, halves, moved = tmp_path / "whole", tmp_path / "halves", tmp_path / "moved"
    proc = torchrun(*SHARDED_RUN, "max_iters=8", "keep_last_k=1", f"dataset.data_dir={data_dir}", f"hydra.run.dir={whole}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # keep_last_k: hard-linked snapshots of ckpt_last.dcp, the older ones deleted.
    assert [p.name for p in whole.glob("ckpt_iter_*")] == ["ckpt_iter_0000008.dcp"]
    assert digest(whole / "ckpt_iter_0000008.dcp") == digest(whole / "ckpt_last.dcp")
    shutil.copytree(sharded_run, halves)
    shutil.copytree(sharded_run, moved)

    # Same world size: bit for bit the run that was never stopped.
    proc = torchrun("init_from=resume", f"run_dir={halves}", "max_iters=8", f"dataset.data_dir={data_dir}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert load_checkpoint(halves / "ckpt_last.dcp" / STATE_FILE)["iter_num"] == 8
    assert digest(halves / "ckpt_last.dcp") == digest(whole / "ckpt_last.dcp")
    assert losses(halves) == losses(whole)

    # 2 ranks -> 1 process -> 2 ranks: DCP reshards the weights and Muon's and AdamW's state.
    run_cli("nanogpt.train", "init_from=resume", f"run_dir={moved}", "max_iters=6", f"dataset.data_dir={data_dir}")
    assert load_checkpoint(moved / "ckpt_last.dcp" / STATE_FILE)["iter_num"] == 6
    proc = torchrun("init_from=resume", f"run_dir={moved}", "max_iters=8", f"dataset.data_dir={data_dir}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert losses(moved) == pytest.approx(losses(whole), abs=1e-5)
    expected = sharded_tensors(whole / "ckpt_last.dcp")
    for name, tensor in sharded_tensors(moved / "ckpt_last.dcp").items():
        torch.testing.assert_close(tensor, expected[name], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_sampling_and_export_read_a_sharded_checkpoint_whole(sharded_run):
    model, meta, path = load_model(sharded_run, "best", "cpu")
    assert path == sharded_run / "ckpt_best.dcp" and meta["dataset"] == "shakespeare_char"
    saved = sharded_tensors(path)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, saved[f"model.{name}"]), name


def test_a_changed_byte_in_a_shard_is_caught(sharded_run, tmp_path):
    """DCP's shard files carry no checksum: the CRC-32 of each is kept in train_state.pt, so a byte
    changed on the disk is named, and a resume takes the other checkpoint."""
    from nanogpt.checkpoint import load_newest_valid
    from nanogpt.checkpoint.sharded import read_sharded
    from nanogpt.errors import CheckpointError

    run_dir = tmp_path / "run"
    shutil.copytree(sharded_run, run_dir)
    shard = run_dir / "ckpt_last.dcp" / "__1_0.distcp"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"ckpt_last.dcp: damaged: its file __1_0.distcp no longer matches the CRC"):
        read_sharded(run_dir / "ckpt_last.dcp")
    _, path = load_newest_valid(run_dir)
    assert path.name == "ckpt_best.dcp"


def test_a_save_killed_between_its_renames_keeps_the_previous_checkpoint(tmp_path):
    """commit_folder moves the old folder aside, then renames the new one into place: a kill
    between the two leaves `.ckpt_last.dcp.old`, which the next start puts back; a half-written
    `.tmp` folder is removed."""
    last = tmp_path / "ckpt_last.dcp"
    for folder, text in ((last, "old"), (tmp_path / ".ckpt_last.dcp.tmp", "new")):
        folder.mkdir()
        (folder / "shard").write_text(text)
    commit_folder(tmp_path / ".ckpt_last.dcp.tmp", last)
    assert (last / "shard").read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["ckpt_last.dcp"]

    last.rename(tmp_path / ".ckpt_last.dcp.old")  # killed after the first rename
    (tmp_path / ".ckpt_best.dcp.tmp").mkdir()  # and a save killed while the shards were written
    assert recover_interrupted_saves(tmp_path) == [".ckpt_best.dcp.tmp", ".ckpt_last.dcp.old"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt_last.dcp"] and (last / "shard").read_text() == "new"


def test_an_unknown_strategy_is_refused_in_one_line(data_dir, tmp_path):
    proc = run_cli("nanogpt.train", *TINY, "system.strategy=zero3", f"dataset.data_dir={data_dir}", f"hydra.run.dir={tmp_path / 'run'}", check=False)
    assert one_line_error(proc) == "error: system.strategy='zero3' is invalid: must be ddp or fsdp"


@pytest.mark.slow
def test_a_sharded_checkpoint_missing_a_shard_is_refused_in_one_line_and_nothing_is_overwritten(sharded_run, data_dir, tmp_path):
    broken = tmp_path / "run"
    shutil.copytree(sharded_run, broken)
    for which in ("last", "best"):
        (broken / f"ckpt_{which}.dcp" / "__1_0.distcp").unlink()
    before = {name: file_hashes(broken / name) for name in ("ckpt_last.dcp", "ckpt_best.dcp")}
    metrics = (broken / "metrics.jsonl").read_text()

    proc = run_cli("nanogpt.train", "init_from=resume", f"run_dir={broken}", "max_iters=8", f"dataset.data_dir={data_dir}", check=False)
    line = one_line_error(proc)
    assert f"{broken / 'ckpt_last.dcp'}: incomplete sharded checkpoint: its shard file __1_0.distcp is missing" in line
    assert {name: file_hashes(broken / name) for name in before} == before
    assert (broken / "metrics.jsonl").read_text() == metrics


def test_a_sharded_checkpoint_whose_metadata_pickles_code_is_refused_without_running_it(sharded_run, tmp_path):
    """DCP's .metadata is a pickle: one that names a global other than DCP's own records (here
    os.system) is refused in one line, and the payload never runs."""
    import os
    import pickle

    from nanogpt.checkpoint.sharded import read_sharded
    from nanogpt.errors import CheckpointError

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    crafted = tmp_path / "ckpt_last.dcp"
    shutil.copytree(sharded_run / "ckpt_last.dcp", crafted)
    assert read_sharded(crafted)["model"]  # DCP's own metadata reads
    (crafted / ".metadata").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(CheckpointError, match=r"refused global posix\.system in \.metadata"):
        read_sharded(crafted)
    assert not marker.exists()


@pytest.mark.slow
def test_a_world_size_that_does_not_divide_the_batch_is_refused(data_dir, tmp_path):
    proc = torchrun(*TINY, FSDP, "gradient_accumulation_steps=3", "max_iters=2", f"dataset.data_dir={data_dir}", f"hydra.run.dir={tmp_path / 'run'}")
    # One line from each rank, which exits 2 (torchrun then reports the failed workers its own way).
    assert proc.stderr.count("error: gradient_accumulation_steps=3 is invalid: must be divisible by the world size 2") == 2
    assert "exitcode  : 2" in proc.stdout + proc.stderr


def test_a_run_continued_in_the_other_checkpoint_format_is_sampled_from_its_newest_checkpoint(data_dir, tmp_path):
    """A one-process run continued with system.strategy=fsdp (as the refusal to continue a
    single-file checkpoint on several ranks advises) keeps its older ckpt_*.pt beside the new
    ckpt_*.dcp/: sampling, export and evaluation load the newer one, as a resume does."""
    from tests.conftest import train_here

    run = (*TINY, "eval_interval=4", "optimizer.lr_decay_iters=8", f"dataset.data_dir={data_dir}")
    train_here(tmp_path, *run, "max_iters=4")
    train_here(tmp_path, *run, "init_from=resume", f"run_dir={tmp_path}", "max_iters=8", FSDP)
    assert (tmp_path / "ckpt_last.pt").is_file() and (tmp_path / "ckpt_last.dcp").is_dir()
    for which in ("last", "best"):
        _, _, path = load_model(tmp_path, which, "cpu")
        assert path == tmp_path / f"ckpt_{which}.dcp", which
