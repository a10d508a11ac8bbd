"""Your own data at any size: every tokenizer (char, gpt2, a BPE trained on the corpus, a
tokenizer.json), uint32 token files for vocabularies above 65,536, streaming preparation in
worker processes (exact, ordered, bounded memory, restartable after a kill), and the refusals."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from nanogpt.data import DataError, HFTokenizer, TokenFile, dataset_dir, gpt2_tokenizer, load_tokenizer, prepare, read_meta
from nanogpt.data.encoding import ParallelEncoder, Unit, encode_parts, pieces
from nanogpt.data.tokenizers import CharTokenizer, tokenizer_from_file, train_bpe
from tests.conftest import ROOT, TINY, cli_env, one_line_error, run_cli

SYLLABLES = [a + b for a in "bcdfghjklmnprstvwz" for b in "aeiou"] + ["qu", "th", "sh", "ch"]


def made_up_language(path, lines: int, seed: int = 0, words: int = 150_000) -> str:
    """A corpus of sentences over ~120,000 made-up words: enough distinct words for a BPE of
    70,000 tokens, written to `path`; returns its text."""
    rng = random.Random(seed)
    vocabulary = list(dict.fromkeys("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 5))) for _ in range(words)))
    text = "\n".join(" ".join(rng.choice(vocabulary) for _ in range(12)).capitalize() + "." for _ in range(lines)) + "\n"
    path.write_text(text, encoding="utf-8")
    return text


# --- cutting documents into pieces changes no id ------------------------------------------------


@pytest.fixture(scope="module")
def shakespeare_bpe(shakespeare_path):
    text = shakespeare_path.read_text()
    return train_bpe([text[i : i + 100_000] for i in range(0, len(text), 100_000)], 1000)


TRICKY = "line one\n\n\nLine  two \n  indented\n\tTab\r\nWindows\nend.\nX" + " word" * 50 + "\n" + "nospace" * 200 + "\n\n" + "word " * 600


@pytest.mark.parametrize("tokenizer_name", ["gpt2", "bpe", "char"])
def test_pieces_encode_to_the_ids_of_the_whole_text(shakespeare_path, shakespeare_bpe, tokenizer_name):
    text = shakespeare_path.read_text()[:200_000] + TRICKY
    tokenizer = {"gpt2": gpt2_tokenizer(), "bpe": shakespeare_bpe, "char": CharTokenizer(sorted(set(text)))}[tokenizer_name]
    blocks = [text[i : i + 777] for i in range(0, len(text), 777)]  # blocks cut anywhere, as files are read
    cut = list(pieces(blocks, size=500, limit=2000))
    assert "".join(cut) == text and len(cut) > 200
    assert np.array_equal(np.concatenate([tokenizer.encode_array(p) for p in cut]), tokenizer.encode_array(text))


def test_a_document_without_line_breaks_is_cut_between_words_or_at_the_limit():
    cut = list(pieces(["word " * 1000], size=100, limit=300))
    assert "".join(cut) == "word " * 1000 and all(len(p) <= 300 for p in cut)
    assert all(p.endswith("word") for p in cut[:-1])  # the space stays with the next word, as GPT-2 splits
    solid = list(pieces(["x" * 1000], size=100, limit=300))
    assert [len(p) for p in solid] == [300, 300, 300, 100]


def test_worker_processes_give_the_ids_of_one_process_in_order(shakespeare_bpe):
    units = []
    for i in range(12):
        unit = Unit("train" if i < 9 else "val")
        unit.add(f"document {i}: " + "the quick brown fox " * (i + 1))
        unit.add(None)
        unit.add(f"and {i}")
        units.append(unit)
    for tokenizer in (gpt2_tokenizer(), shakespeare_bpe):
        expected = [encode_parts(tokenizer, u.parts, "uint32") for u in units]
        got = list(ParallelEncoder(tokenizer, "uint32", workers=2).map(iter(units)))
        assert [u for u, _ in got] == units
        assert all(np.array_equal(a, b) for (_, a), b in zip(got, expected))
        assert all(tokenizer.document_separator[0] in ids for ids in expected)


def test_a_big_corpus_prepares_the_same_in_parallel_and_in_one_process(tmp_path, shakespeare_path):
    """About 3 MB: several work units per split, so order and the train/val cut cross units."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    text = shakespeare_path.read_text()
    for i in range(3):
        (corpus / f"{i}.txt").write_text(text)
    one = prepare("one", tmp_path / "data", str(corpus), 0.1, tokenizer="gpt2", workers=1)
    two = prepare("two", tmp_path / "data", str(corpus), 0.1, tokenizer="gpt2", workers=2)
    assert one["train_tokens"] == two["train_tokens"] and one["val_tokens"] == two["val_tokens"]
    for split in ("train", "val"):
        a = (dataset_dir(tmp_path / "data", "one") / f"{split}.bin").read_bytes()
        assert a == (dataset_dir(tmp_path / "data", "two") / f"{split}.bin").read_bytes()
    # Documents are joined by the end-of-text token; the last 10% of the characters are val.
    ids = np.fromfile(dataset_dir(tmp_path / "data", "one") / "train.bin", dtype=np.uint16)
    val = np.fromfile(dataset_dir(tmp_path / "data", "one") / "val.bin", dtype=np.uint16)
    eot, cut = gpt2_tokenizer().eot_token, int(len(text) * 3 * 0.9)
    assert (ids == eot).sum() == 2 and (val == eot).sum() == 0
    assert gpt2_tokenizer().decode(ids[ids != eot].tolist()) == (text * 3)[:cut]
    assert gpt2_tokenizer().decode(val.tolist()) == (text * 3)[cut:]


# --- uint32 token files --------------------------------------------------------------------------


def test_a_vocabulary_above_65536_is_written_as_uint32_and_read_back(tmp_path):
    points = [p for p in range(0x100, 0x100 + 70_000 + 2048) if not 0xD800 <= p <= 0xDFFF][:70_000]
    text = "".join(chr(p) for p in points) * 2
    (tmp_path / "wide.txt").write_text(text, encoding="utf-8")
    meta = prepare("wide", tmp_path / "data", str(tmp_path / "wide.txt"), 0.1, tokenizer="char")
    folder = dataset_dir(tmp_path / "data", "wide")
    assert (meta["vocab_size"], meta["dtype"]) == (70_000, "uint32")
    assert (folder / "train.bin").stat().st_size == 4 * meta["train_tokens"] and read_meta(folder) == meta
    train = TokenFile(folder / "train.bin", 16, "cpu", "uint32")
    assert int(train.tokens.max()) == 69_999
    x, y = train.windows(torch.tensor([0, 1000]))
    assert x.dtype == torch.int64 and x[0].tolist() == list(range(16)) and torch.equal(x[:, 1:], y[:, :-1])
    assert load_tokenizer(meta).decode(x[1].tolist()) == text[1000:1016]


# --- a BPE of 70,000 tokens: prepare, train, sample, export --------------------------------------


@pytest.fixture(scope="module")
def bpe_run(tmp_path_factory):
    """Two runs on one prepared BPE dataset: one trained for 30 iterations, and one left at its
    random initialisation (`untrained`), whose greedy text goes all over the 70,000 tokens (a
    briefly trained model only repeats its most frequent token)."""
    root = tmp_path_factory.mktemp("bpe70k")
    made_up_language(root / "corpus.txt", lines=40_000)
    common = (
        *TINY, "dataset=text", "dataset.name=madeup", f"dataset.source={root / 'corpus.txt'}",
        "dataset.tokenizer=bpe", "dataset.vocab_size=70000", f"dataset.data_dir={root / 'data'}",
    )  # fmt: skip
    run_cli(
        "nanogpt.train",
        *common,
        "max_iters=30",
        "eval_interval=30",
        "optimizer.learning_rate=3e-3",
        "optimizer.warmup_iters=5",
        f"hydra.run.dir={root / 'run'}",
    )
    run_cli("nanogpt.train", *common, "max_iters=1", "optimizer.learning_rate=1e-12", "optimizer.min_lr=0", f"hydra.run.dir={root / 'untrained'}")
    return root, root / "run"


@pytest.mark.slow
def test_bpe_70k_gives_uint32_files_that_train(bpe_run):
    root, run_dir = bpe_run
    folder = dataset_dir(root / "data", "madeup")
    meta = read_meta(folder)
    assert (meta["tokenizer"], meta["vocab_size"], meta["dtype"], meta["bpe_vocab_size"]) == ("bpe", 70_000, "uint32", 70_000)
    assert (folder / "tokenizer.json").is_file() and (folder / "train.bin").stat().st_size == 4 * meta["train_tokens"]
    ids = np.fromfile(folder / "train.bin", dtype=np.uint32)
    assert ids.max() >= 65_536  # ids that a uint16 file could not hold
    evals = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [e for e in evals if e["event"] == "eval"]
    assert evals[-1]["val_loss"] < evals[0]["val_loss"] - 0.5
    # The checkpoint carries the tokenizer itself: sampling needs no data folder.
    state = torch.load(run_dir / "ckpt_last.pt", weights_only=True)
    assert json.loads(state["dataset_meta"])["tokenizer_json"] == (folder / "tokenizer.json").read_text()
    assert state["model_args"]["vocab_size"] == 70_016  # padded to a multiple of 64


@pytest.mark.slow
def test_bpe_70k_samples_and_exports_to_transformers_with_the_same_greedy_text(bpe_run, tmp_path):
    from transformers import AutoTokenizer, GPT2LMHeadModel

    from nanogpt.generation import Generator

    root, run_dir = bpe_run
    moved = tmp_path / "data_gone"
    (root / "data").rename(moved)  # sampling and export must not need the dataset folder
    try:
        proc = run_cli("nanogpt.sample", f"run_dir={run_dir}", "prompt=Bada", "num_samples=1", "max_new_tokens=20", "system.device=cpu")
        assert proc.stdout.strip().startswith("Bada")
        out = tmp_path / "exported"
        run_cli("nanogpt.export", f"run_dir={root / 'untrained'}", f"out={out}")
    finally:
        moved.rename(root / "data")
    assert {"tokenizer.json", "tokenizer_config.json", "model.safetensors", "config.json"} <= {p.name for p in out.iterdir()}
    generator = Generator.from_run(root / "untrained", device="cpu", dtype="float32")
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = GPT2LMHeadModel.from_pretrained(out).eval()
    assert tokenizer.eos_token == "<|endoftext|>" and len(tokenizer) == 70_000
    # The tokenizer: the same ids for the same text, across the whole vocabulary.
    text = (root / "corpus.txt").read_text()[:20_000]
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert ids == generator.tokenizer.encode(text) and tokenizer.decode(ids) == text
    # The weights: the same logits, also for ids beyond 16 bits.
    probe = torch.randint(0, 70_000, (2, 32), generator=torch.Generator().manual_seed(0))
    probe[:, :4] = torch.arange(69_996, 70_000)
    with torch.no_grad():
        theirs = model(probe).logits
        ours = generator.model(probe, probe)[0][..., :70_000]
    assert torch.allclose(theirs, ours, atol=1e-4)
    # The greedy text. (A model at its random initialisation repeats its prompt's last token, so the
    # prompt is the last token of the vocabulary: the text is made of a 32-bit id.)
    prompt = generator.tokenizer.decode([69_999])
    ours_text = generator.generate(prompt, max_new_tokens=24, temperature=0.0)[0]
    encoded = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        generated = model.generate(**encoded, max_new_tokens=24, do_sample=False, pad_token_id=tokenizer.eos_token_id)
    assert max(generated[0].tolist()) >= 2**16
    assert tokenizer.decode(generated[0], skip_special_tokens=False) == ours_text and len(ours_text) > 24


# --- a tokenizer.json of your own ----------------------------------------------------------------


def test_a_transformers_tokenizer_folder_and_a_tokenizer_json_file(tmp_path, shakespeare_path, shakespeare_bpe):
    from transformers import PreTrainedTokenizerFast

    saved = tmp_path / "tok"
    PreTrainedTokenizerFast(tokenizer_object=shakespeare_bpe.tokenizer, eos_token="<|endoftext|>").save_pretrained(saved)
    meta = prepare("byfolder", tmp_path / "data", str(shakespeare_path), 0.1, tokenizer=str(saved))
    assert (meta["tokenizer"], meta["vocab_size"], meta["eot_name"]) == ("file", 1000, "<|endoftext|>")
    # The dataset carries the folder's tokenizer itself (save_pretrained may re-serialise it, so compare with what it reads back).
    assert meta["tokenizer_sha256"] == tokenizer_from_file(str(saved)).sha256
    assert load_tokenizer(meta).encode("ROMEO: good night") == shakespeare_bpe.encode("ROMEO: good night")
    folder = dataset_dir(tmp_path / "data", "byfolder")
    ids = np.fromfile(folder / "train.bin", dtype=np.uint16)
    assert np.array_equal(ids, shakespeare_bpe.encode_array(shakespeare_path.read_text()[: int(1_115_394 * 0.9)]))
    # A bare tokenizer.json (no tokenizer_config.json): its end-of-text special token still separates documents.
    meta_file = prepare("byfile", tmp_path / "data", str(shakespeare_path), 0.1, tokenizer=str(saved / "tokenizer.json"))
    assert meta_file["eot_name"] == "<|endoftext|>" and meta_file["train_tokens"] == meta["train_tokens"]
    assert isinstance(load_tokenizer(meta_file), HFTokenizer)
    # The same file prepared again is a no-op; another tokenizer file re-prepares.
    mtime = (folder / "train.bin").stat().st_mtime_ns
    prepare("byfolder", tmp_path / "data", str(shakespeare_path), 0.1, tokenizer=str(saved))
    assert (folder / "train.bin").stat().st_mtime_ns == mtime


# --- bounded memory, progress, kills -------------------------------------------------------------

PEAK_RSS = """
import resource, sys
from nanogpt.data import prepare
prepare(sys.argv[1], sys.argv[2], sys.argv[3], 0.1, tokenizer="gpt2", workers=2)
# VmHWM, not ru_maxrss: that would also count pytest's own memory, which vfork() and exec() pass on.
own = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(own + workers)
"""


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_the_corpus(tmp_path, shakespeare_path):
    """8 MB and 80 MB of text: the peak memory of the preparing process plus its largest worker
    grows by less than 30% (holding the text or its ids whole would add hundreds of MB)."""
    text = shakespeare_path.read_text()
    peaks = {}
    for copies in (8, 80):
        corpus = tmp_path / f"corpus{copies}.txt"
        corpus.write_text("\n".join([text] * copies))
        out = subprocess.run(
            [sys.executable, "-c", PEAK_RSS, f"c{copies}", str(tmp_path / "data"), str(corpus)],
            env=cli_env(), cwd=ROOT, capture_output=True, text=True, check=True, timeout=600,
        )  # fmt: skip
        peaks[copies] = int(out.stdout.split()[-1]) * 1024
        corpus.unlink()
    assert read_meta(dataset_dir(tmp_path / "data", "c80"))["train_tokens"] > 9 * read_meta(dataset_dir(tmp_path / "data", "c8"))["train_tokens"]
    assert peaks[80] < 1.3 * peaks[8], peaks


def test_progress_is_logged_for_a_long_preparation(tmp_path, shakespeare_path, monkeypatch, caplog):
    from nanogpt.data import progress

    monkeypatch.setattr(progress, "PROGRESS_LOG_S", 0.0)
    monkeypatch.setattr(progress, "QUIET_BELOW_S", 0.0)
    (tmp_path / "a.txt").write_text(shakespeare_path.read_text() * 3)
    with caplog.at_level("INFO"):
        prepare("p", tmp_path / "data", str(tmp_path / "a.txt"), 0.1, tokenizer="gpt2", workers=1)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("tokenizing p:")]
    assert any("%)" in line and "MB/s" in line and "ETA" in line for line in lines), lines
    assert lines[-1].startswith("tokenizing p: 3.3 MB of 3.3 MB (100%) in ")


@pytest.mark.slow
def test_a_killed_preparation_leaves_no_dataset_and_restarts_cleanly(tmp_path, shakespeare_path):
    corpus = tmp_path / "big.txt"
    corpus.write_text("\n".join([shakespeare_path.read_text()] * 60))  # 67 MB: a few seconds of work
    folder = dataset_dir(tmp_path / "data", "big")
    args = [
        "nanogpt.prepare",
        "dataset=text",
        "dataset.name=big",
        f"dataset.source={corpus}",
        "dataset.tokenizer=gpt2",
        f"dataset.data_dir={tmp_path / 'data'}",
    ]
    proc = subprocess.Popen([sys.executable, "-m", *args], cwd=ROOT, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not any(p.name.startswith(".train.bin.") and p.stat().st_size > 1e6 for p in folder.glob(".*.tmp")):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    workers = [int(pid) for pid in subprocess.run(["ps", "--ppid", str(proc.pid), "-o", "pid="], capture_output=True, text=True).stdout.split()]
    assert workers  # it tokenizes in worker processes
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert read_meta(folder) is None and not (folder / "meta.json").exists() and not (folder / "train.bin").exists()
    # The workers end with their parent (PR_SET_PDEATHSIG) instead of waiting forever.
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in workers):
        assert time.monotonic() < deadline, "worker processes outlived the killed preparation"
        time.sleep(0.05)
    done = run_cli(*args)
    assert "removed" in done.stdout and ".tmp, left by an interrupted preparation" in done.stdout
    meta = read_meta(folder)
    assert meta is not None and not list(folder.glob(".*.tmp"))
    assert (folder / "train.bin").stat().st_size == 2 * meta["train_tokens"]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
    except FileNotFoundError:
        return False


# --- refusals ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["dataset.tokenizer=bpee"], "dataset.tokenizer='bpee' is invalid: not char, gpt2 or bpe, and no such tokenizer.json file or folder"),
        (["dataset.tokenizer=TOK"], "is not a Hugging Face tokenizer.json ("),
        (
            ["dataset.tokenizer=bpe", "dataset.vocab_size=100"],
            "dataset.vocab_size=100 is invalid for dataset.tokenizer=bpe: it must be in [257, 16,777,216]",
        ),
        (["dataset.tokenizer=gpt2", "dataset.vocab_size=100"], "dataset.vocab_size=100 is only for dataset.tokenizer=bpe"),
        (["dataset.tokenizer=bpe", "model.vocab_size=300"], "model.vocab_size=300 is invalid: dataset mine has 1000 tokens"),
    ],
)
def test_bad_tokenizer_input_is_one_line_and_leaves_nothing(tmp_path, shakespeare_path, overrides, message):
    (tmp_path / "TOK").write_text('{"not": "a tokenizer"}')
    overrides = [o.replace("TOK", str(tmp_path / "TOK")) for o in overrides]
    if "dataset.tokenizer=bpe" in overrides and not any("dataset.vocab_size" in o for o in overrides):
        overrides.append("dataset.vocab_size=1000")
    proc = run_cli(
        "nanogpt.train", *TINY, "dataset=text", "dataset.name=mine", f"dataset.source={shakespeare_path}",
        f"dataset.data_dir={tmp_path / 'data'}", *overrides, "max_iters=1", f"hydra.run.dir={tmp_path / 'run'}", check=False,
    )  # fmt: skip
    assert message in one_line_error(proc)
    folder = dataset_dir(tmp_path / "data", "mine")
    assert not list(folder.glob(".*.tmp")) and not (tmp_path / "run" / "ckpt_last.pt").exists()
    if "model.vocab_size" not in " ".join(overrides):
        assert not (folder / "meta.json").exists()


def test_a_char_tokenizer_has_no_place_on_a_hub_dataset_and_sources_are_exclusive(tmp_path):
    from nanogpt.data import HubSource

    hub = HubSource(str(tmp_path))
    with pytest.raises(DataError, match="dataset.source and dataset.hf_path are both set"):
        prepare("mine", tmp_path / "data", "x.txt", 0.1, tokenizer="gpt2", hub=hub)
    with pytest.raises(DataError, match="dataset.tokenizer=char is for text files"):
        prepare("mine", tmp_path / "data", None, 0.1, tokenizer="char", hub=hub)
