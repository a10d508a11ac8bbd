"""The run's local record: `metrics.jsonl` (one JSON object per event) and `loss.png`."""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from nanogpt.errors import storage_error, storage_fault

log = logging.getLogger(__name__)

# The temp files of keep_metrics_until and plot_losses, which a kill can leave behind.
TEMP_NAMES = ("metrics.jsonl.tmp", "loss.tmp.png")


class MetricsLog:
    """Appends one JSON object per line and flushes it, so a reader (or a crash) never sees more
    than one partial line; readers skip a partial last line."""

    def __init__(self, path: Path):
        self.path = path
        with _naming(path):
            self._file = open(path, "a", encoding="utf-8")

    def write(self, event: str, **fields: Any) -> None:
        record = {"event": event, **{k: _jsonable(v) for k, v in fields.items()}}
        with _naming(self.path):
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()

    def close(self) -> None:
        self._file.close()


@contextmanager
def _naming(path: Path) -> Iterator[None]:
    """A disk fault (full, read-only, ...) while writing `path` as a StorageError naming the file: a
    write to an open file raises an OSError that names none."""
    try:
        yield
    except OSError as exc:
        fault = storage_fault(exc)
        if fault is None:
            raise
        raise storage_error(fault, path) from None


def _jsonable(value: Any) -> Any:
    # JSON has no NaN/inf: write them as null rather than emitting invalid JSON.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Every complete record of a metrics.jsonl: a line cut by a crash, or one that is not a JSON
    object in UTF-8 (damaged, or written by something else), is skipped."""
    records = []
    try:
        with open(path, "rb") as f:
            for line in f:
                try:
                    record = json.loads(line.decode("utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError):
                    continue
                if isinstance(record, dict):
                    records.append(record)
    except FileNotFoundError:
        pass
    return records


def keep_metrics_until(path: Path, iter_num: int | None) -> None:
    """Drop the records after iter_num (all of them for None: a fresh start), so that a reader
    sees each iteration once. A resumed run writes the records after its checkpoint again,
    identically; a run restarted from scratch writes all of its own. The file is replaced by
    rename, so a kill meanwhile leaves the old one (and a temp file the next start removes)."""
    if not path.exists():
        return
    if iter_num is None:
        path.unlink()
        return
    kept = [r for r in read_metrics(path) if r.get("iter", 0) <= iter_num]
    tmp = path.with_suffix(".jsonl.tmp")
    with _naming(path):
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
        tmp.replace(path)


def remove_temp_files(run_dir: Path) -> list[str]:
    """Delete what an interrupted rewrite of metrics.jsonl or loss.png left (call it holding the
    run folder's lock); returns their names."""
    removed = []
    for name in TEMP_NAMES:
        if (run_dir / name).exists():
            (run_dir / name).unlink(missing_ok=True)
            removed.append(name)
    return removed


class Eta:
    """The time a run has left, from its pace since its first step: that step compiles and warms up
    (seconds, where the others take milliseconds), and a pace over the last few steps jumps with
    every evaluation and every burst of other work. Evaluations count, as the ones to come will."""

    def __init__(self) -> None:
        self._since: tuple[int, float] | None = None  # (iteration, clock) once the first step is done

    def step_done(self, iter_num: int, now: float) -> None:
        if self._since is None:
            self._since = (iter_num, now)

    def seconds_left(self, iter_num: int, max_iters: int, now: float) -> float | None:
        """None until a step after the first is done."""
        if self._since is None or iter_num <= self._since[0]:
            return None
        first, started = self._since
        return (now - started) / (iter_num - first) * max(0, max_iters - iter_num)


def format_duration(seconds: float) -> str:
    """1h02m or 3m07s."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def loss_axis(ax: Any, values: list[float]) -> None:
    """A log y-axis where the losses span a wide range (early training), with plain tick labels."""
    from matplotlib.ticker import FormatStrFormatter

    finite = [v for v in values if v is not None and math.isfinite(v) and v > 0]
    if finite and max(finite) / min(finite) > 1.5:
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FormatStrFormatter("%.2f"))
        ax.yaxis.set_minor_formatter(FormatStrFormatter("%.2f"))
    ax.grid(alpha=0.3, which="both")


def plot_losses(metrics_path: Path, out_path: Path, title: str = "") -> None:
    """Train and val loss against tokens seen, with the learning rate on a second axis."""
    records = read_metrics(metrics_path)
    train = [r for r in records if r.get("event") == "train" and r.get("loss") is not None]
    evals = [r for r in records if r.get("event") == "eval" and r.get("val_loss") is not None]
    if not train and not evals:
        return
    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib  # imported here: it costs half a second of start-up that most commands never need

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    if train:
        ax.plot([r["tokens"] for r in train], [r["loss"] for r in train], color="tab:blue", alpha=0.45, lw=1, label="train loss (batch)")
    if evals:
        ax.plot([r["tokens"] for r in evals], [r["train_loss"] for r in evals], "o-", color="tab:blue", ms=3, label="train loss (eval)")
        ax.plot([r["tokens"] for r in evals], [r["val_loss"] for r in evals], "o-", color="tab:orange", ms=3, label="val loss")
        best = min(evals, key=lambda r: r["val_loss"])
        ax.annotate(
            f"best val {best['val_loss']:.4f}",
            (best["tokens"], best["val_loss"]),
            textcoords="offset points",
            xytext=(-10, 12),
            ha="right",
            fontsize=8,
        )
    ax.set_xlabel("tokens seen")
    ax.set_ylabel("cross-entropy loss (nats/token)")
    loss_axis(ax, [r["loss"] for r in train] + [r["val_loss"] for r in evals])
    handles, labels = ax.get_legend_handles_labels()
    if train and any("lr" in r for r in train):
        lr_ax = ax.twinx()
        lr_ax.plot([r["tokens"] for r in train], [r["lr"] for r in train], color="tab:gray", ls="--", lw=1, label="learning rate")
        lr_ax.set_ylabel("learning rate")
        lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
        more_handles, more_labels = lr_ax.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    ax.legend(handles, labels, loc="upper right", fontsize=8)
    ax.set_title(title or "loss", fontsize=10)
    fig.tight_layout()
    tmp = out_path.with_suffix(".tmp.png")
    try:
        with _naming(out_path):
            fig.savefig(tmp)
            os.replace(tmp, out_path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
