"""Summarise runs: a table sorted by best val loss, `summary.csv`, `summary.md` and `sweep.png`.

    python -m nanogpt.report outputs/2026-11-25/17-03-11       # one run
    python -m nanogpt.report multirun/2026-11-25/18-00-00      # every run of a sweep

A run is any folder below the given one that holds a `metrics.jsonl`. Runs that crashed, failed or
are still running are listed with that status, not dropped. A multirun writes this report into
its sweep folder by itself when it ends (conf/config.yaml's SweepReport callback).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math
import os
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from nanogpt.metrics import loss_axis, read_metrics

log = logging.getLogger(__name__)

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
    marker = run_dir / ".running"
    try:
        info = json.loads(marker.read_text())
    except (OSError, ValueError):
        return "crashed"
    if info.get("host") != socket.gethostname():
        return "running?"  # on another machine: cannot check the process
    try:
        os.kill(int(info["pid"]), 0)
    except (ProcessLookupError, ValueError, KeyError):
        return "crashed"
    except PermissionError:
        pass
    return "running"


def varying_keys(runs: list[RunSummary]) -> list[str]:
    """The override keys whose values differ between runs (all keys for a single run)."""
    keys = sorted({k for r in runs for k in r.overrides})
    if len(runs) == 1:
        return keys
    return [k for k in keys if len({r.overrides.get(k) for r in runs}) > 1]


def label(run: RunSummary, keys: list[str]) -> str:
    return ",".join(f"{k}={run.overrides[k]}" for k in keys if k in run.overrides) or run.path.name


def sort_key(run: RunSummary) -> tuple[bool, float]:
    return (run.best_val_loss is None, run.best_val_loss if run.best_val_loss is not None else math.inf)


def table_rows(runs: list[RunSummary], root: Path) -> tuple[list[str], list[list[str]]]:
    keys = varying_keys(runs)
    show_dataset = len({r.dataset for r in runs}) > 1
    show_error = any(r.error for r in runs)
    header = ["run", *keys, *(["dataset"] if show_dataset else []), "best val loss", "iters", "tokens", "wall time", "tokens/s"]
    header += [*(["error"] if show_error else []), "status"]
    rows = []
    for r in sorted(runs, key=sort_key):
        name = str(r.path.relative_to(root)) if r.path != root else "."
        rows.append([
            name if len(name) <= 40 else name[:19] + "…" + name[-20:],
            *[r.overrides.get(k, "") for k in keys],
            *([r.dataset] if show_dataset else []),
            f"{r.best_val_loss:.4f}" if r.best_val_loss is not None else "-",
            str(r.iters), str(r.tokens),
            f"{r.wall_s:.0f}s" if r.wall_s is not None else "-",
            f"{r.tokens_per_sec:,.0f}" if r.tokens_per_sec else "-",
            *([r.error if r.status in FAILED else ""] if show_error else []),
            r.status,
        ])
    return header, rows


def format_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    return "\n".join(lines)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    esc = lambda c: c.replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(map(esc, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(esc, row)) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def plot_sweep(runs: list[RunSummary], out_path: Path, title: str) -> None:
    """Every run's val-loss curve against tokens seen, labelled by its differing overrides."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = varying_keys(runs)
    fig, ax = plt.subplots(figsize=(9, 5.5), dpi=110)
    for run in sorted(runs, key=sort_key):
        if run.val_curve:
            tokens, losses = zip(*run.val_curve)
            best = f" (best {run.best_val_loss:.3f})" if run.best_val_loss is not None else ""
            status = f" [{run.status}]" if run.status != "finished" else ""
            ax.plot(tokens, losses, marker="o", ms=3, lw=1.5, label=f"{label(run, keys)}{best}{status}")
    ax.set_xlabel("tokens seen")
    ax.set_ylabel("val loss (nats/token)")
    loss_axis(ax, [loss for run in runs for _, loss in run.val_curve])
    failed = sum(run.status in ("failed", "crashed") for run in runs)
    ax.set_title(f"{title}, {failed} failed or crashed" if failed else title, fontsize=10)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(out_path)
    plt.close(fig)


def collect_runs(root: Path) -> list[RunSummary]:
    """The summary of every run under root."""
    if not root.is_dir():
        raise ReportError(f"{root}: no such folder")
    runs = [summarise(p) for p in find_runs(root)]
    if not runs:
        raise ReportError(f"{root} holds no runs (no metrics.jsonl below it); pass a run folder or a sweep folder")
    return runs


def search_result(root: Path, runs: list[RunSummary]) -> list[str]:
    """The outcome of an Optuna search (the sweeper's optimization_results.yaml in the sweep
    folder) as lines of the report: its best value, the trial folder that scored it, and the
    best parameters as overrides; no lines for any other sweep."""
    from omegaconf import OmegaConf

    path = root / "optimization_results.yaml"
    if not path.is_file():
        return []
    results = OmegaConf.load(path)
    if "best_params" not in results:  # a search over several objectives: a Pareto front instead
        return []
    value = float(results.best_value)
    if not math.isfinite(value):  # failed trials score +inf: the best one failed, so they all did
        return [f"Optuna's best trial ({path.name}): none, every trial failed"]
    params = {str(key): str(val) for key, val in results.best_params.items()}
    # Optuna's parameters are the trial's overrides, written as str() writes them.
    scored = [r for r in runs if r.best_val_loss == value and all(r.overrides.get(key) == val for key, val in params.items())]
    where = str(scored[0].path.relative_to(root)) if scored else "no trial folder holds this result"
    args = " ".join(f"{key}={val}" for key, val in params.items())
    return [f"Optuna's best trial ({path.name}): val loss {value:.4f} in {where}", f"best parameters: {args}"]


def report(root: Path, out_dir: Path | None = None, runs: list[RunSummary] | None = None) -> str:
    """Summarise the runs under root (or the given summaries of them); write summary.csv,
    summary.md and sweep.png; return the table."""
    root = root.resolve()
    runs = runs if runs is not None else collect_runs(root)
    out_dir = out_dir or root
    header, rows = table_rows(runs, root)
    text = format_table(header, rows)
    datasets = sorted({r.dataset for r in runs})
    notes = search_result(root, runs)
    if len(datasets) > 1:
        notes.append(f"note: these runs use different datasets ({', '.join(datasets)}); their val losses are not comparable")
    buffer = io.StringIO()
    csv.writer(buffer).writerows([header, *rows])
    (out_dir / "summary.csv").write_text(buffer.getvalue())
    (out_dir / "summary.md").write_text(f"# Runs in {root}\n\n" + markdown_table(header, rows) + "".join(f"\n{n}\n" for n in notes))
    plot_sweep(runs, out_dir / "sweep.png", title=f"val loss of {len(runs)} runs in {'/'.join(root.parts[-2:])}")
    return "\n".join([text, *notes])


class SweepReport(Callback):
    """Hydra callback: when a multirun ends, write the report into its sweep folder."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from nanogpt import cli

        sweep_dir = Path(config.hydra.sweep.dir).resolve()
        try:
            runs = collect_runs(sweep_dir)
            print(report(sweep_dir, runs=runs), flush=True)
            print(f"sweep summary: {sweep_dir / 'summary.md'}, {sweep_dir / 'sweep.png'}", flush=True)
        except ReportError as exc:
            print(f"sweep summary: {exc}", flush=True)
            return
        failed = [r for r in runs if r.status in FAILED]
        if failed:
            # The command exits 1 once Hydra is done (nanogpt.cli.launch): a script or CI that runs
            # a sweep must see its failures without reading the table.
            cli.sweep_failures = f"{len(failed)} of {len(runs)} runs of the sweep failed; the reasons are in {sweep_dir / 'summary.md'}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nanogpt-report", description="Summarise a run or a sweep.")
    parser.add_argument("folder", type=Path, help="a run folder or a sweep folder")
    args = parser.parse_args(argv)
    try:
        print(report(args.folder))
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def cli() -> None:
    """`nanogpt-report` and `python -m nanogpt.report`."""
    sys.exit(main())


if __name__ == "__main__":
    cli()
