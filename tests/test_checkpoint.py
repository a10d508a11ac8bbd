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
