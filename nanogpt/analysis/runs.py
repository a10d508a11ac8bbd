"""The runs under a folder, each summarised from its own files: metrics.jsonl, Hydra's record of
its config and overrides, error.txt (a failed sweep job) and its running marker."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from nanogpt.metrics import read_metrics
from nanogpt.runlock import marker_status

# Runs that ended without a result: their best val loss is no result, and a sweep with any exits 1.
FAILED = ("failed", "crashed")


class ReportError(RuntimeError):
    """Nothing to report on; printed as one line."""


@dataclass
class RunSummary:
    path: Path
    overrides: dict[str, str]
    dataset: str
    status: str
    best_val_loss: float | None
    iters: int
    tokens: int
    wall_s: float | None
    tokens_per_sec: float | None
    val_curve: list[tuple[int, float]] = field(default_factory=list)  # (tokens, val loss)
    error: str = ""


def find_runs(root: Path) -> list[Path]:
    """Folders holding a metrics.jsonl, or a Hydra config of a training run (a run that failed
    before it wrote any metrics still counts)."""
    with_metrics = {p.parent for p in root.rglob("metrics.jsonl")}
    with_config = {p.parent.parent for p in root.rglob(".hydra/config.yaml") if (p.parent.parent / "error.txt").exists()}
    return sorted(with_metrics | with_config)


def summarise(run_dir: Path) -> RunSummary:
    records = read_metrics(run_dir / "metrics.jsonl")
    evals = [r for r in records if r.get("event") == "eval" and r.get("val_loss") is not None]
    trains = [r for r in records if r.get("event") == "train"]
    ends = [r for r in records if r.get("event") == "end"]
    last = records[-1] if records else {}
    speeds = sorted(r["tokens_per_sec"] for r in trains if r.get("tokens_per_sec"))
    status = ends[-1]["status"] if ends and ends[-1]["iter"] == last.get("iter") else _unfinished_status(run_dir)
    return RunSummary(
        path=run_dir,
        overrides=_overrides(run_dir),
        dataset=_dataset(run_dir),
        status=status,
        # A failed run's evaluations before it diverged (its iter-0 loss, say) are no result.
        best_val_loss=None if status == "failed" else min((r["val_loss"] for r in evals), default=None),
        iters=max((r.get("iter", 0) for r in records), default=0),
        tokens=max((r.get("tokens", 0) for r in records), default=0),
        wall_s=max((r["time"] for r in records if isinstance(r.get("time"), (int, float))), default=None),
        tokens_per_sec=speeds[len(speeds) // 2] if speeds else None,
        val_curve=[(r["tokens"], r["val_loss"]) for r in evals],
        error=_first_line(run_dir / "error.txt"),
    )


def _first_line(path: Path) -> str:
    try:
        return path.read_text().strip().splitlines()[0]
    except (OSError, IndexError):
        return ""


def _overrides(run_dir: Path) -> dict[str, str]:
    """The run's command-line overrides, from Hydra's .hydra/overrides.yaml."""
    path = run_dir / ".hydra" / "overrides.yaml"
    items: list[str] = []
    try:
        from omegaconf import OmegaConf

        items = [str(x) for x in OmegaConf.load(path)]
    except Exception:  # a missing or unreadable file just means no overrides are known
        pass
    pairs = (item.split("=", 1) for item in items if "=" in item)
    return {k: v for k, v in pairs if not k.startswith("hydra.")}


def _dataset(run_dir: Path) -> str:
    try:
        from omegaconf import OmegaConf

        return str(OmegaConf.load(run_dir / ".hydra" / "config.yaml").dataset.name)
    except Exception:  # no config saved: report the dataset as unknown rather than fail
        return "?"


def _unfinished_status(run_dir: Path) -> str:
    """A run without an end record failed (error.txt), is still running (its training process
    is alive), or crashed."""
    if (run_dir / "error.txt").exists():
        return "failed"
    return marker_status(run_dir)


def collect_runs(root: Path) -> list[RunSummary]:
    """The summary of every run under root."""
    if not root.is_dir():
        raise ReportError(f"{root}: no such folder")
    runs = [summarise(p) for p in find_runs(root)]
    if not runs:
        raise ReportError(f"{root} holds no runs (no metrics.jsonl below it); pass a run folder or a sweep folder")
    return runs
