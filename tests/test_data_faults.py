"""Data under misuse and faults (issue 13): plain dataset names, a prepared dataset read without the
lock (so a read-only one works), a wait for another process's preparation that says so and can time
out, no lock file or folder left by a refused command, a damaged token file named in one line, and
one CRLF policy for every text file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from nanogpt.data import DataError, TokenFile, dataset_dir, preparation, prepare, read_meta
from tests.conftest import ROOT, TINY, cli_env, copy_run, one_line_error, run_cli


@pytest.mark.parametrize("name", ["../../x", "a/b", "..", ".hidden", "", "/etc"])
def test_dataset_names_are_plain_folder_names(tmp_path, name):
    (tmp_path / "a.txt").write_text("some text " * 100)
    with pytest.raises(DataError, match="is invalid: a dataset name is a plain folder name"):
        prepare(name, tmp_path / "data", str(tmp_path / "a.txt"), 0.1, tokenizer="char")
    assert not (tmp_path / "data").exists() and not (tmp_path / "x").exists()


def test_a_bad_name_on_the_command_line_is_one_line(tmp_path):
    proc = run_cli(
        "nanogpt.prepare", "dataset=text", "dataset.name=../escape", "dataset.source=README.md", f"dataset.data_dir={tmp_path}", check=False
    )
    assert "dataset.name='../escape' is invalid" in one_line_error(proc)
    assert not (tmp_path.parent / "escape").exists()


def test_a_prepared_dataset_is_read_without_the_lock(tmp_path, shakespeare_path, monkeypatch):
    """A read-only prepared dataset is usable: nothing is opened for writing when it is already there."""
    meta = prepare("shakespeare_char", tmp_path, str(shakespeare_path), 0.1)

    def no_lock(*args, **kwargs):
        raise AssertionError("the lock was taken for a dataset that is already prepared")

    monkeypatch.setattr(preparation, "_locked", no_lock)
    assert prepare("shakespeare_char", tmp_path, str(shakespeare_path), 0.1) == meta
    assert prepare("shakespeare_char", tmp_path, None, 0.1) == meta
    assert sorted(p.name for p in dataset_dir(tmp_path, "shakespeare_char").iterdir()) == ["meta.json", "train.bin", "val.bin"]


@pytest.mark.skipif(os.geteuid() != 0, reason="a read-only bind mount needs root")
def test_a_read_only_prepared_dataset_trains(tmp_path, shakespeare_path):
    prepare("shakespeare_char", tmp_path / "data", str(shakespeare_path), 0.1)
    ro = tmp_path / "ro"
    ro.mkdir()
    subprocess.run(["mount", "--bind", str(tmp_path / "data"), str(ro)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], check=True)
        with pytest.raises(OSError):
            (ro / "probe").write_text("x")  # really read-only, even for root
        proc = run_cli("nanogpt.train", *TINY, f"dataset.data_dir={ro}", "max_iters=2", "eval_interval=2", f"hydra.run.dir={tmp_path / 'run'}")
        assert "train.bin" not in proc.stderr and (tmp_path / "run" / "ckpt_last.pt").is_file()
        # Preparing something new there is refused in one line, with the exit code of a disk fault.
        other = run_cli(
            "nanogpt.prepare", "dataset=text", "dataset.name=new", f"dataset.source={shakespeare_path}", f"dataset.data_dir={ro}", check=False
        )
        assert (
            other.returncode == 3
            and other.stderr.strip() == f"error: {ro / 'new'}: read-only file system; remount it read-write or copy the folder to a writable place"
        )
    finally:
        subprocess.run(["umount", str(ro)], check=False)


HOLD_LOCK = """
import sys, time
from pathlib import Path
from nanogpt.data import preparation
with preparation._locked(Path(sys.argv[1]) / ".prepare.lock", "mine", None):
    print("holding", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def test_a_wait_for_another_preparation_names_it_and_can_time_out(tmp_path, shakespeare_path, caplog):
    folder = dataset_dir(tmp_path, "mine")
    folder.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(folder), "30"], cwd=ROOT, env=cli_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        start = time.monotonic()
        with caplog.at_level("INFO"), pytest.raises(DataError) as err:
            prepare("mine", tmp_path, str(shakespeare_path), 0.1, tokenizer="char", wait_s=1.0)
        assert 1.0 <= time.monotonic() - start < 10
        line = str(err.value)
        assert f"pid {holder.pid} has been preparing {folder} for " in line and "gave up after dataset.prepare_wait_s=1" in line
        assert f"dataset mine: waiting for {os.uname().nodename} pid {holder.pid}, which is preparing {folder}" in caplog.text
    finally:
        holder.kill()
        holder.wait()
    # The holder was killed: the kernel released its lock, and the next preparation just runs.
    assert prepare("mine", tmp_path, str(shakespeare_path), 0.1, tokenizer="char")["vocab_size"] == 65
    assert not (folder / ".prepare.lock").exists()


def test_a_waiting_process_gets_the_dataset_the_holder_prepared(tmp_path, shakespeare_path):
    """Two processes prepare one dataset at once: one prepares it, the other waits and reads it."""
    script = "import sys; from nanogpt.data import prepare; print(prepare('both', sys.argv[1], sys.argv[2], 0.1, tokenizer='gpt2')['train_tokens'])"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(tmp_path), str(shakespeare_path)],
            cwd=ROOT,
            env=cli_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [out.strip() for out, _ in outputs] == ["301966", "301966"], outputs
    assert sum("preparing dataset both" in err for _, err in outputs) <= 1
    assert not (dataset_dir(tmp_path, "both") / ".prepare.lock").exists()


@pytest.mark.parametrize("source", ["missing.txt", "folder"])
def test_a_refused_preparation_leaves_no_folder_and_no_lock(tmp_path, source):
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "a.md").write_text("not a corpus file")
    proc = run_cli(
        "nanogpt.prepare",
        "dataset=text",
        "dataset.name=mine",
        f"dataset.source={tmp_path / source}",
        f"dataset.data_dir={tmp_path / 'data'}",
        check=False,
    )
    one_line_error(proc)
    assert not (tmp_path / "data" / "mine").exists()


def test_a_folder_as_tiny_shakespeare_source_is_called_a_folder(tmp_path):
    with pytest.raises(DataError, match=r"dataset.source=.* is a folder; dataset shakespeare_char reads one text file"):
        prepare("shakespeare_char", tmp_path / "data", str(tmp_path), 0.1)


def test_a_damaged_token_file_is_named_in_one_line(tmp_path, shakespeare_path):
    meta = prepare("shakespeare_char", tmp_path / "data", str(shakespeare_path), 0.1)
    folder = dataset_dir(tmp_path / "data", "shakespeare_char")
    ids = np.memmap(folder / "train.bin", dtype=np.uint16, mode="r+")
    ids[1000] = 9999  # the right size, one id outside the 65-character vocabulary
    ids.flush()
    del ids
    assert read_meta(folder) == meta  # the size check cannot see it
    tokens = TokenFile(folder / "train.bin", 32, "cpu", "uint16", vocab_size=65)
    with pytest.raises(DataError, match=r"train.bin is damaged: token 1,000 is id 9999, outside the vocabulary of 65; prepare the dataset again"):
        tokens.windows(torch.tensor([990]))
    tokens.windows(torch.tensor([0]))  # windows that miss it are fine
    proc = run_cli(
        "nanogpt.train",
        *TINY,
        f"dataset.data_dir={tmp_path / 'data'}",
        "dataset.batch_size=64",
        "max_iters=50",
        f"hydra.run.dir={tmp_path / 'run'}",
        check=False,
    )
    assert "train.bin is damaged: token 1,000 is id 9999" in one_line_error(proc)


@pytest.mark.parametrize("tokenizer", ["char", "gpt2"])
def test_windows_line_ends_are_read_as_newlines_everywhere(tmp_path, tokenizer):
    text = "First line\nSecond line\n" * 200
    (tmp_path / "unix.txt").write_bytes(text.encode())
    (tmp_path / "dos.txt").write_bytes(text.replace("\n", "\r\n").encode())
    unix = prepare("unix", tmp_path / "data", str(tmp_path / "unix.txt"), 0.1, tokenizer=tokenizer)
    dos = prepare("dos", tmp_path / "data", str(tmp_path / "dos.txt"), 0.1, tokenizer=tokenizer)
    assert (unix["train_tokens"], unix["val_tokens"], unix["vocab_size"]) == (dos["train_tokens"], dos["val_tokens"], dos["vocab_size"])
    for split in ("train", "val"):
        assert (dataset_dir(tmp_path / "data", "unix") / f"{split}.bin").read_bytes() == (
            dataset_dir(tmp_path / "data", "dos") / f"{split}.bin"
        ).read_bytes()
    # The same for tiny Shakespeare's datasets, and a "\r\n" split across two read blocks.
    (tmp_path / "input.txt").write_bytes(("x" * (preparation_read_block() - 1) + "\r\n" + "y\r\n").encode())
    meta = prepare("shakespeare_char", tmp_path / "data", str(tmp_path / "input.txt"), 0.1)
    assert "\r" not in meta["itos"] and meta["train_tokens"] + meta["val_tokens"] == preparation_read_block() + 2


def preparation_read_block() -> int:
    from nanogpt.data.sources import READ_BLOCK

    return READ_BLOCK


def test_a_full_disk_during_a_preparation_is_one_line_and_keeps_the_old_dataset(small_disk, shakespeare_path):
    """A 4 MiB disk: tiny Shakespeare's characters (2.2 MB of uint16) fit; four times that do not."""
    data = small_disk / "data"
    run_cli(
        "nanogpt.prepare",
        "dataset=text",
        "dataset.name=mine",
        f"dataset.source={shakespeare_path}",
        "dataset.tokenizer=char",
        f"dataset.data_dir={data}",
    )
    folder = dataset_dir(data, "mine")
    before = read_meta(folder)
    corpus = small_disk.parent / "big.txt"  # the source lives off the small disk
    corpus.write_text(shakespeare_path.read_text() * 4)
    proc = run_cli(
        "nanogpt.prepare",
        "dataset=text",
        "dataset.name=mine",
        f"dataset.source={corpus}",
        "dataset.tokenizer=char",
        f"dataset.data_dir={data}",
        check=False,
    )
    assert proc.returncode == 3, proc.stderr
    line = proc.stderr.strip()
    assert (
        "\n" not in line
        and line.startswith(f"error: {folder}/")
        and line.endswith("disk full (no space left on device); free some space or write to another disk")
    )
    assert read_meta(folder) == before  # the old dataset, untouched
    assert not list(folder.glob(".*.tmp")) and not (folder / ".prepare.lock").exists()


def test_a_changed_corpus_on_resume_says_what_to_do(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the first corpus of this run. " * 400)
    args = (
        *TINY,
        "dataset=text",
        "dataset.name=mine",
        f"dataset.source={corpus}",
        f"dataset.data_dir={tmp_path / 'data'}",
        "max_iters=2",
        "eval_interval=2",
    )
    run_cli("nanogpt.train", *args, f"hydra.run.dir={tmp_path / 'run'}")
    corpus.write_text("this run of the first corpus. " * 400)  # the same characters, another text
    proc = run_cli("nanogpt.train", "init_from=resume", f"run_dir={tmp_path / 'run'}", "max_iters=4", check=False)
    line = one_line_error(proc)
    assert f"dataset mine now holds another corpus than the one this run trained on ({corpus} changed since" in line
    assert "put the original text back or give it dataset.data_dir=<a copy prepared from it>; to train on the new text, start a new run" in line


def test_a_crafted_dataset_name_in_a_checkpoint_stays_contained(tmp_path, data_dir, finished_run):
    """A checkpoint (and its folder's config) that names the dataset '../../x' with /etc/passwd as its
    source: the resume is refused in one line, and nothing is read or written outside data_dir."""
    import yaml

    from nanogpt.checkpoint import load_checkpoint, save_checkpoint

    run_dir = copy_run(finished_run, tmp_path / "run")  # trained on data_dir
    for path in run_dir.glob("ckpt_*.pt"):
        state = load_checkpoint(path)
        config = json.loads(state["config"])
        config["dataset"].update(name="../../x", source="/etc/passwd", tokenizer="char")
        state["config"] = json.dumps(config)
        save_checkpoint(path, state)
    saved = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
    saved["dataset"].update(name="../../x", source="/etc/passwd", tokenizer="char")
    (run_dir / ".hydra" / "config.yaml").write_text(yaml.safe_dump(saved))
    proc = run_cli("nanogpt.train", "init_from=resume", f"run_dir={run_dir}", check=False)
    assert "dataset.name='../../x' is invalid: a dataset name is a plain folder name" in one_line_error(proc)
    assert not (data_dir.parent.parent / "x").exists() and not (data_dir.parent / "x").exists()
