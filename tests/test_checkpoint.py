import random

import numpy as np
import pytest
import torch

from nanogpt.checkpoint import CKPT_FORMAT, CheckpointError, capture_rng_state, load_checkpoint, restore_rng_state, save_checkpoint


class Payload:
    """An object whose unpickling would run code: it writes a marker file."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_round_trip_of_plain_data(tmp_path):
    state = {"format": CKPT_FORMAT, "w": torch.arange(6.0), "iter_num": 7, "config": '{"a": 1}', "nested": {"x": [1, 2.5, None]}}
    save_checkpoint(tmp_path / "ckpt_last.pt", state)
    loaded = load_checkpoint(tmp_path / "ckpt_last.pt")
    assert torch.equal(loaded["w"], state["w"]) and loaded["nested"] == state["nested"]
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt_last.pt"]  # no temp file left


def test_pickle_payload_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"format": CKPT_FORMAT, "x": Payload(str(marker))}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="evil.pt: refused without loading it"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists()


@pytest.mark.parametrize("size", [0, 10, 1000])
def test_truncated_checkpoint_names_the_file(tmp_path, size):
    save_checkpoint(tmp_path / "good.pt", {"format": CKPT_FORMAT, "w": torch.zeros(1000)})
    (tmp_path / "bad.pt").write_bytes((tmp_path / "good.pt").read_bytes()[:size])
    with pytest.raises(CheckpointError, match="bad.pt: unreadable, truncated or corrupt"):
        load_checkpoint(tmp_path / "bad.pt")


def test_missing_and_foreign_files(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "nope.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a nanogpt checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "ckpt_last.pt"
    save_checkpoint(path, {"format": CKPT_FORMAT, "v": 1})

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"format": CKPT_FORMAT, "v": 2})
    monkeypatch.undo()
    assert load_checkpoint(path)["v"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt_last.pt"]


def test_rng_state_round_trips_through_a_checkpoint(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    save_checkpoint(tmp_path / "c.pt", {"format": CKPT_FORMAT, "rng": capture_rng_state()})
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    restore_rng_state(load_checkpoint(tmp_path / "c.pt")["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


class FakeCuda:
    """Stands in for torch.cuda's RNG calls: `gpus` visible GPUs, this process on `current`."""

    def __init__(self, monkeypatch, gpus: int, current: int):
        self.states = [torch.full((8,), float(i), dtype=torch.float32).to(torch.uint8) for i in range(gpus)]
        self.current = current
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: self.current)
        monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device="cuda": self.states[self.current].clone())
        monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [s.clone() for s in self.states])
        monkeypatch.setattr(torch.cuda, "set_rng_state", self.set_current)
        monkeypatch.setattr(torch.cuda, "set_rng_state_all", self.set_all)

    def set_current(self, state, device="cuda"):
        self.states[self.current] = state

    def set_all(self, states):
        for index, state in enumerate(states):
            if index >= len(self.states):  # as torch does for a GPU that is not there
                raise RuntimeError("CUDA error: invalid device ordinal")
            self.states[index] = state


def test_cuda_rng_state_is_the_own_gpus_and_resumes_on_a_machine_with_fewer_gpus(tmp_path, monkeypatch):
    saving = FakeCuda(monkeypatch, gpus=4, current=2)
    save_checkpoint(tmp_path / "c.pt", {"format": CKPT_FORMAT, "rng": capture_rng_state()})
    saved = load_checkpoint(tmp_path / "c.pt")["rng"]["cuda"]
    assert torch.equal(saved, saving.states[2])  # one state, not one per visible GPU
    resuming = FakeCuda(monkeypatch, gpus=1, current=0)
    restore_rng_state(load_checkpoint(tmp_path / "c.pt")["rng"])
    assert torch.equal(resuming.states[0], saving.states[2])


def test_an_older_checkpoint_with_every_gpus_state_restores_this_gpus_one(monkeypatch):
    old = FakeCuda(monkeypatch, gpus=4, current=0)
    rng = capture_rng_state()
    rng["cuda"] = torch.cuda.get_rng_state_all()  # how checkpoints were written before
    for gpus, current, expected in ((4, 3, 3), (1, 0, 0)):
        now = FakeCuda(monkeypatch, gpus=gpus, current=current)
        now.states = [torch.zeros(8, dtype=torch.uint8) for _ in range(gpus)]
        restore_rng_state(rng)
        assert torch.equal(now.states[current], old.states[expected])
