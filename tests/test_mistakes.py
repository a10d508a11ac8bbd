"""Nothing lost by ordinary mistakes (issue 32): an export aimed at the wrong folder, a copy that
did not keep file times, a bit flipped on the disk, a closed terminal, a signal while data is
prepared, sizes beyond the machine, damaged files in a run or dataset folder, values that
overflow. Each test failed on the code before its fix."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch

from nanogpt.checkpoint import CheckpointError, checkpoint_path, load_checkpoint, load_model, load_newest_valid, save_checkpoint
from nanogpt.errors import EXIT_INTERRUPTED, EXIT_STOPPED, EXIT_STORAGE_ERROR, StorageError
from nanogpt.metrics import MetricsLog, plot_losses, read_metrics
from nanogpt.model import GPT, GPTConfig
from tests.conftest import ROOT, TINY, cli_env, copy_run, one_line_error, run_cli

RUN = (*TINY, "eval_interval=4", "log_interval=1", "optimizer.warmup_iters=2")


def flip_a_byte(path: Path, member: str = "data/0", at: int = 10) -> None:
    """Change one byte inside a checkpoint's tensor data (a zip member), as a failing disk would."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = next(m for m in archive.infolist() if m.filename.endswith(member))
    name_length, extra_length = struct.unpack("<HH", data[info.header_offset + 26 : info.header_offset + 30])
    data[info.header_offset + 30 + name_length + extra_length + at] ^= 0xFF
    path.write_bytes(bytes(data))


def start(module: str, *overrides: str, cwd: Path = ROOT, **popen) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", module, *overrides], cwd=cwd, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen
    )


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


# ----------------------------------------------------------------------------- export


def export_cli(run_dir: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return run_cli("nanogpt.export", f"run_dir={run_dir}", f"out={out}", *extra, check=False)


def test_export_never_deletes_the_run_or_a_folder_holding_it(finished_run, tmp_path):
    run_dir = copy_run(finished_run, tmp_path / "runs" / "c5")
    before = sorted(p.name for p in run_dir.iterdir())
    assert one_line_error(export_cli(run_dir, run_dir, "overwrite=true")) == (
        f"error: out='{run_dir}' is the run folder, whose checkpoints the export reads; choose another out"
    )
    assert one_line_error(export_cli(run_dir, tmp_path / "runs", "overwrite=true")) == (
        f"error: out='{tmp_path / 'runs'}' holds the run folder {run_dir}; choose another out"
    )
    assert sorted(p.name for p in run_dir.iterdir()) == before


def test_overwrite_replaces_only_an_earlier_export(finished_run, tmp_path):
    run_dir, out = copy_run(finished_run, tmp_path / "run"), tmp_path / "hf"
    assert export_cli(run_dir, out).returncode == 0
    assert export_cli(run_dir, out, "overwrite=true").returncode == 0  # an earlier export: replaced
    (out / "notes.txt").write_text("mine")
    assert one_line_error(export_cli(run_dir, out, "overwrite=true")) == (
        f"error: out='{out}' is not an earlier export (it holds notes.txt): overwrite=true replaces only a folder that an "
        f"export wrote; choose another out"
    )
    assert (out / "notes.txt").read_text() == "mine"
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text("{}")  # a folder of someone else's, with a name an export uses
    assert "is not an earlier export (it has no nanogpt_tokenizer.json)" in one_line_error(export_cli(run_dir, other, "overwrite=true"))
    assert (other / "config.json").read_text() == "{}"


# ----------------------------------------------------------------------------- which checkpoint


def test_resume_takes_the_highest_iteration_not_the_newest_file(finished_run, data_dir, tmp_path):
    """A copy that did not keep times (or a touched ckpt_best) must not send a resume back: the
    iterations after the best checkpoint would be lost, metrics.jsonl cut back."""
    run_dir = copy_run(finished_run, tmp_path / "run")
    older = load_checkpoint(checkpoint_path(run_dir, "last"))
    older["iter_num"] = 4
    save_checkpoint(checkpoint_path(run_dir, "best"), older)  # written last: the newest file, of iter 4
    proc = run_cli("nanogpt.train", "init_from=resume", f"run_dir={run_dir}", "max_iters=10", f"dataset.data_dir={data_dir}")
    assert "continuing from ckpt_last.pt, iter 8: the highest iteration of the run's checkpoints (ckpt_best.pt holds iter 4)" in proc.stdout
    trained = [r["iter"] for r in read_metrics(run_dir / "metrics.jsonl") if r["event"] == "train"]
    assert trained == list(range(1, 11))  # every iteration once: none lost, none twice
    assert load_checkpoint(checkpoint_path(run_dir, "last"))["iter_num"] == 10


def test_a_flipped_bit_in_a_checkpoint_is_caught_and_the_other_checkpoint_used(finished_run, data_dir, tmp_path):
    run_dir = copy_run(finished_run, tmp_path / "run")
    flip_a_byte(checkpoint_path(run_dir, "last"))
    with pytest.raises(CheckpointError, match=r"ckpt_last.pt: damaged: its member .*data/0 no longer matches the CRC it was written with"):
        load_checkpoint(checkpoint_path(run_dir, "last"))
    state, path = load_newest_valid(run_dir)
    assert path.name == "ckpt_best.pt" and state["iter_num"] == 8

    flip_a_byte(checkpoint_path(run_dir, "best"))
    sampled = run_cli(
        "nanogpt.sample", f"run_dir={run_dir}", "checkpoint=best", "num_samples=1", "max_new_tokens=5", "system.device=cpu", check=False
    )
    line = one_line_error(sampled)  # both damaged: one line naming both, nothing sampled
    assert "ckpt_best.pt: damaged" in line and "ckpt_last.pt: damaged" in line and sampled.stdout == ""


def test_sampling_passes_over_a_damaged_best_to_last_saying_so(finished_run, tmp_path):
    run_dir = copy_run(finished_run, tmp_path / "run")
    flip_a_byte(checkpoint_path(run_dir, "best"))
    proc = run_cli("nanogpt.sample", f"run_dir={run_dir}", "num_samples=1", "max_new_tokens=5", "system.device=cpu")
    assert "ckpt_best.pt: damaged" in proc.stderr and "using ckpt_last.pt instead" in proc.stderr
    assert proc.stdout.strip()  # the samples, on stdout alone
    model, _, path = load_model(run_dir, "best", "cpu")
    assert path.name == "ckpt_last.pt" and all(torch.isfinite(p).all() for p in model.parameters())


# ----------------------------------------------------------------------------- signals


def test_sighup_saves_a_checkpoint_and_exits_75_like_sigterm(data_dir, tmp_path):
    run_dir = tmp_path / "run"
    proc = start("nanogpt.train", *RUN, "max_iters=100000", f"dataset.data_dir={data_dir}", f"hydra.run.dir={run_dir}")
    wait_for(lambda: (run_dir / "ckpt_last.pt").exists(), proc)
    proc.send_signal(signal.SIGHUP)  # the terminal or ssh session closed
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_STOPPED, err
    iter_num = load_checkpoint(run_dir / "ckpt_last.pt")["iter_num"]
    assert f"stopped by SIGHUP at iter {iter_num}; checkpoint saved" in out
    assert not (run_dir / ".lock").exists() and not (run_dir / ".running").exists()
    assert read_metrics(run_dir / "metrics.jsonl")[-1]["status"] == "stopped"


@pytest.fixture(scope="module")
def big_corpus(tmp_path_factory, shakespeare_path) -> Path:
    """45 MB of text: seconds of preparation, so that a signal lands in the middle of it."""
    path = tmp_path_factory.mktemp("big") / "big.txt"
    text = shakespeare_path.read_bytes()
    with open(path, "wb") as f:
        for _ in range(40):
            f.write(text)
    return path


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_while_training_prepares_its_data_stops_within_a_second(big_corpus, tmp_path, sig):
    data, run_dir = tmp_path / "data", tmp_path / "outputs" / "run"
    overrides = (*RUN, "dataset=text", "dataset.name=big", f"dataset.source={big_corpus}", "dataset.tokenizer=gpt2")
    proc = start("nanogpt.train", *overrides, f"dataset.data_dir={data}", f"hydra.run.dir={run_dir}")
    wait_for(lambda: (data / "big").is_dir(), proc)  # the preparation has begun
    time.sleep(0.3)
    sent = time.monotonic()
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    took = time.monotonic() - sent
    assert proc.returncode == EXIT_INTERRUPTED, err
    assert took < 1.0 + 1.0, took  # within a second of the signal (and one of slack for a loaded machine)
    assert (
        "Traceback" not in err
        and err.strip() == f"error: interrupted by {signal.Signals(sig).name} before the run's first checkpoint; nothing was kept"
    )
    assert not run_dir.exists()  # nothing kept: no run folder
    assert not (data / "big").exists() or not any((data / "big").iterdir())  # no dataset half-made, no temp files


@pytest.mark.parametrize("module, overrides", [("nanogpt.prepare", []), ("nanogpt.sample", ["max_new_tokens=100000"])])
def test_ctrl_c_in_prepare_and_sample_is_one_line_and_exit_130(module, overrides, big_corpus, finished_run, tmp_path):
    if module == "nanogpt.prepare":
        args = ["dataset=text", "dataset.name=big", f"dataset.source={big_corpus}", "dataset.tokenizer=gpt2", f"dataset.data_dir={tmp_path}"]
        started = lambda: (tmp_path / "big").is_dir()  # noqa: E731
    else:
        args = [f"run_dir={finished_run}", "system.device=cpu", "stream=true", *overrides]
        started = lambda: True  # noqa: E731
    proc = start(module, *args)
    wait_for(started, proc)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == EXIT_INTERRUPTED, err
    assert err.strip().splitlines()[-1] == "error: interrupted by SIGINT; stopped before it finished, nothing half-written was kept"
    assert "Traceback" not in err
    if module == "nanogpt.prepare":
        assert not (tmp_path / "big").exists() or sorted(p.name for p in (tmp_path / "big").iterdir()) in ([], [".prepare.lock"])


def test_the_resume_line_works_pasted_for_a_folder_with_spaces_commas_and_equals(data_dir, tmp_path):
    run_dir = tmp_path / "a b,c=d"
    proc = start("nanogpt.train", *RUN, "max_iters=100000", f"dataset.data_dir={data_dir}", f'hydra.run.dir="{run_dir}"')
    wait_for(lambda: (run_dir / "ckpt_last.pt").exists(), proc)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    pasted = next(line for line in out.splitlines() if "Resume with: " in line).split("Resume with: ", 1)[1]
    iter_num = load_checkpoint(run_dir / "ckpt_last.pt")["iter_num"]
    argv = shlex.split(pasted)  # as a shell reads the pasted line
    assert argv[:3] == ["python", "-m", "nanogpt.train"]
    run_cli(argv[2], *argv[3:], f"max_iters={iter_num + 2}", f"dataset.data_dir={data_dir}")
    assert load_checkpoint(run_dir / "ckpt_last.pt")["iter_num"] == iter_num + 2


# ----------------------------------------------------------------------------- sizes


@pytest.mark.parametrize(
    "module, overrides, needs",
    [
        ("nanogpt.train", ["model.n_layer=200000"], "this run needs about"),
        ("nanogpt.train", ["gradient_accumulation_steps=10000000000"], "(batch offsets"),
        ("nanogpt.train", ["dataset.batch_size=1000000000"], "activations of a micro-batch of 1000000000 x 32"),
        ("nanogpt.sample", ["num_samples=100000000"], "sampling 100000000 texts at once needs about"),
    ],
)
def test_sizes_beyond_the_machine_are_refused_in_one_line_before_allocating(module, overrides, needs, finished_run, data_dir, tmp_path):
    if module == "nanogpt.train":
        args = [*RUN, "max_iters=2", f"dataset.data_dir={data_dir}", f"hydra.run.dir={tmp_path / 'run'}", *overrides]
    else:
        args = [f"run_dir={finished_run}", "system.device=cpu", *overrides]
    line = one_line_error(run_cli(module, *args, check=False))
    assert needs in line and "more than the" in line and "set system.check_memory=false to try anyway" in line, line
    assert not (tmp_path / "run").exists()


def test_the_parameter_count_of_the_memory_estimate_is_the_models():
    from nanogpt.memory import parameter_count

    for options in ({}, {"bias": True}, {"position": "rope"}, {"tie_embeddings": False}, {"norm": "rmsnorm", "bias": True}):
        args = dict(vocab_size=97, block_size=24, n_layer=3, n_head=2, n_embd=16, **options)
        assert parameter_count(args) == GPT(GPTConfig(**args)).num_params(non_embedding=False), options


def test_an_estimate_above_what_the_device_has_is_refused_and_one_below_is_not(monkeypatch):
    from nanogpt import memory
    from nanogpt.errors import ConfigError

    monkeypatch.setattr(memory, "available", lambda device: (10 * memory.GIB, "available on this machine"))
    fits = memory.Estimate({"weights": 9 * memory.GIB}, {"weights": "choose a smaller model"})
    memory.check(fits, "cpu", "this run")
    too_big = memory.Estimate({"weights": 9 * memory.GIB, "batch offsets": 2 * memory.GIB}, {"weights": "choose a smaller model"})
    with pytest.raises(ConfigError, match=r"this run needs about 11.0 GiB \(weights 9.0 GiB, batch offsets 2.0 GiB\), more than the 10.0 GiB"):
        memory.check(too_big, "cpu", "this run")


# ----------------------------------------------------------------------------- damaged files


def test_a_corrupt_hydra_config_stops_a_resume_in_one_line_and_leaves_nothing(finished_run, data_dir, tmp_path):
    run_dir = copy_run(finished_run, tmp_path / "run")
    (run_dir / ".hydra" / "config.yaml").write_text("model: [unclosed\n")
    proc = run_cli("nanogpt.train", "init_from=resume", f"run_dir={run_dir}", "max_iters=12", f"dataset.data_dir={data_dir}", check=False)
    line = one_line_error(proc)
    assert line.startswith(f"error: {run_dir / '.hydra' / 'config.yaml'} is unreadable (") and "put back a good copy" in line
    assert not any(p.name.startswith("resume-") for p in (run_dir / ".hydra").iterdir())


def test_junk_lines_in_metrics_jsonl_are_skipped_by_resume_and_report(finished_run, data_dir, tmp_path):
    run_dir = copy_run(finished_run, tmp_path / "run")
    with open(run_dir / "metrics.jsonl", "ab") as f:
        f.write(b"123\n\xff\xfe not utf-8\n[1, 2]\nnull\n")
    assert all(isinstance(r, dict) for r in read_metrics(run_dir / "metrics.jsonl"))
    report = run_cli("nanogpt.report", str(run_dir))
    assert "Traceback" not in report.stderr and "finished" in report.stdout
    run_cli("nanogpt.train", "init_from=resume", f"run_dir={run_dir}", "max_iters=10", f"dataset.data_dir={data_dir}")
    assert load_checkpoint(run_dir / "ckpt_last.pt")["iter_num"] == 10


@pytest.mark.parametrize("suffix", ["", "/sub"])
def test_a_run_folder_that_is_a_file_is_one_line(tmp_path, data_dir, suffix):
    (tmp_path / "afile.txt").write_text("mine")
    proc = run_cli(
        "nanogpt.train", *RUN, "max_iters=1", f"dataset.data_dir={data_dir}", f"hydra.run.dir={tmp_path / 'afile.txt'}{suffix}", check=False
    )
    assert (
        one_line_error(proc)
        == f"error: {tmp_path / 'afile.txt'}{suffix}: a file stands where a folder must be made (hydra.run.dir); choose another folder"
    )
    assert (tmp_path / "afile.txt").read_text() == "mine"


@pytest.fixture
def word_level_tokenizer(tmp_path) -> Path:
    """A tokenizer.json that cannot encode most text: a WordLevel model without an unknown token."""
    import tokenizers

    tokenizer = tokenizers.Tokenizer(tokenizers.models.WordLevel({"the": 0, "king": 1}))
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    path = tmp_path / "tokenizer.json"
    tokenizer.save(str(path))
    return path


def test_a_tokenizer_that_cannot_encode_the_text_is_one_line_in_prepare(word_level_tokenizer, shakespeare_path, tmp_path):
    proc = run_cli(
        "nanogpt.prepare", "dataset=text", "dataset.name=words", f"dataset.source={shakespeare_path}",
        f"dataset.tokenizer={word_level_tokenizer}", f"dataset.data_dir={tmp_path / 'data'}", check=False,
    )  # fmt: skip
    line = one_line_error(proc)
    assert line.startswith("error: the tokenizer cannot encode the text (") and "[UNK]" in line, line


@pytest.mark.parametrize("meta", ["null", "[1]", '{"format": 2, "dataset": ["shakespeare_char"], "tokenizer": "char"}'])
def test_a_meta_json_of_the_wrong_shape_means_preparing_again(meta, data_dir, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(data_dir / "shakespeare_char", data / "shakespeare_char")
    (data / "shakespeare_char" / "meta.json").write_text(meta)
    run_cli("nanogpt.prepare", "dataset=shakespeare_char", f"dataset.data_dir={data}")
    assert json.loads((data / "shakespeare_char" / "meta.json").read_text())["dataset"] == "shakespeare_char"


def test_another_datasets_folder_under_this_name_is_refused(data_dir, shakespeare_path, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(data_dir / "shakespeare_char", data / "mine")  # copied under another name
    before = (data / "mine" / "train.bin").read_bytes()
    proc = run_cli(
        "nanogpt.train",
        *RUN,
        "dataset=text",
        "dataset.name=mine",
        f"dataset.source={shakespeare_path}",
        "dataset.tokenizer=char",
        f"dataset.data_dir={data}",
        "max_iters=1",
        f"hydra.run.dir={tmp_path / 'run'}",
        check=False,
    )
    assert one_line_error(proc).startswith(f"error: {data / 'mine'} holds the prepared dataset 'shakespeare_char' (from ")
    assert (data / "mine" / "train.bin").read_bytes() == before and not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- values


@pytest.mark.parametrize("module", ["nanogpt.train", "nanogpt.sample"])
def test_a_seed_beyond_the_generators_range_is_one_line(module, finished_run, data_dir, tmp_path):
    args = [*RUN, f"dataset.data_dir={data_dir}", f"hydra.run.dir={tmp_path / 'run'}"] if module == "nanogpt.train" else [f"run_dir={finished_run}"]
    proc = run_cli(module, *args, f"seed={2**70}", check=False)
    assert one_line_error(proc) == f"error: seed={2**70} is invalid: must be an integer from -2**63 to 2**63-1"
    assert not (tmp_path / "run").exists()


def test_a_temperature_near_zero_is_greedy_and_a_tiny_top_p_keeps_the_likeliest(finished_run):
    from nanogpt.generation import Generator

    generator = Generator.from_run(finished_run, device="cpu", dtype="float32")
    greedy = generator.generate("ROMEO:", max_new_tokens=30, temperature=0)
    assert generator.generate("ROMEO:", max_new_tokens=30, temperature=1e-45) == greedy
    assert generator.generate("ROMEO:", max_new_tokens=30, temperature=1.0, top_p=1e-300) == greedy


# ----------------------------------------------------------------------------- full and read-only disks


def test_a_full_disk_while_writing_metrics_or_the_plot_names_the_file(small_disk):
    path = small_disk / "metrics.jsonl"
    log = MetricsLog(path)
    with open(small_disk / "filler", "wb") as f:  # fill the disk
        with pytest.raises(OSError):
            while True:
                f.write(b"\0" * (1 << 20))
                f.flush()
    with pytest.raises(StorageError, match=rf"^{path}: disk full"):
        log.write("train", iter=1, loss=1.0, text="x" * (1 << 16))
    records = small_disk.parent / "records.jsonl"
    with open(records, "w") as f:
        f.write(json.dumps({"event": "train", "iter": 1, "tokens": 1, "loss": 2.0, "lr": 1e-3}) + "\n")
    with pytest.raises(StorageError, match=rf"^{small_disk / 'loss.png'}: disk full"):
        plot_losses(records, small_disk / "loss.png")
    assert not (small_disk / "loss.tmp.png").exists()


def test_a_report_on_a_read_only_folder_prints_the_table_then_one_line(small_disk, finished_run):
    sweep = small_disk / "sweep"
    copy_run(finished_run, sweep / "lr=1e-3")
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    proc = run_cli("nanogpt.report", str(sweep), check=False)
    assert proc.returncode == EXIT_STORAGE_ERROR and "finished" in proc.stdout, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"error: {sweep / 'summary.csv'}: read-only file system; remount it read-write or copy the folder to a writable place; "
        f"the table above is not saved"
    ]


# ----------------------------------------------------------------------------- small things


def test_a_fifo_as_the_source_is_named_for_what_it_is(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    proc = run_cli(
        "nanogpt.prepare",
        "dataset=text",
        "dataset.name=piped",
        f"dataset.source={fifo}",
        "dataset.tokenizer=char",
        f"dataset.data_dir={tmp_path}",
        check=False,
    )
    assert one_line_error(proc) == f"error: dataset.source='{fifo}': not a regular file or a folder"


def test_the_dtype_line_says_when_its_cache_cannot_be_written(tmp_path, monkeypatch):
    from nanogpt import dtype_probe

    read_only = tmp_path / "cache"
    read_only.write_text("a file where the cache folder would be")
    monkeypatch.setenv("NANOGPT_CACHE_DIR", str(read_only))
    monkeypatch.setattr(dtype_probe, "machine_busy", lambda: None)
    monkeypatch.setattr(dtype_probe, "measure_step_ms", lambda args, plan: {"float32": 2.0, "bfloat16": 3.0})
    probe = dtype_probe.choose_cpu_dtype(dict(vocab_size=65, block_size=16, n_layer=1, n_head=1, n_embd=8), 2)
    line = probe.describe()
    assert f"not cached: {read_only / 'dtype_probe.json'} cannot be written" in line and "system.dtype=float32 skips the measurement" in line
