"""The report of runs: a table sorted by best val loss, `summary.csv`, `summary.md` and `sweep.png`.

    nanogpt-report outputs/2026-11-25/17-03-11       # one run
    nanogpt-report multirun/2026-11-25/18-00-00      # every run of a sweep

A run is any folder below the given one that holds a `metrics.jsonl` (nanogpt.analysis.runs). Runs
that crashed, failed or are still running are listed with that status, not dropped. A multirun
writes this report into its sweep folder by itself when it ends (nanogpt.cli.sweeps.SweepReport).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable
from pathlib import Path

from nanogpt.analysis.runs import FAILED, RunSummary, collect_runs
from nanogpt.metrics import format_duration, loss_axis


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
        name = str(r.path.relative_to(root)) if r.path != root else r.path.name
        rows.append(
            [
                name if len(name) <= 40 else name[:19] + "…" + name[-20:],
                *[r.overrides.get(k, "") for k in keys],
                *([r.dataset] if show_dataset else []),
                f"{r.best_val_loss:.4f}" if r.best_val_loss is not None else "-",
                str(r.iters),
                str(r.tokens),
                format_duration(r.wall_s) if r.wall_s is not None else "-",
                f"{r.tokens_per_sec:,.0f}" if r.tokens_per_sec else "-",
                *([r.error if r.status in FAILED else ""] if show_error else []),
                r.status,
            ]
        )
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
    failed = sum(run.status in FAILED for run in runs)
    ax.set_title(f"{title}, {failed} failed or crashed" if failed else title, fontsize=10)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(out_path)
    plt.close(fig)


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


def report(root: Path, out_dir: Path | None = None, runs: list[RunSummary] | None = None, show: Callable[[str], None] | None = None) -> str:
    """Summarise the runs under root (or the given summaries of them): the table, given to `show`
    first (so that a folder that cannot be written still gets its report), then, for a folder of
    runs, summary.csv, summary.md and sweep.png written into out_dir (default: root). Returns the table."""
    root = root.resolve()
    runs = runs if runs is not None else collect_runs(root)
    out_dir = out_dir or root
    header, rows = table_rows(runs, root)
    datasets = sorted({r.dataset for r in runs})
    notes = search_result(root, runs)
    if len(datasets) > 1:
        notes.append(f"note: these runs use different datasets ({', '.join(datasets)}); their val losses are not comparable")
    text = "\n".join([format_table(header, rows), *notes])
    if show is not None:
        show(text)
    if len(runs) == 1 and runs[0].path == root:
        return text  # one run folder: its loss.png and metrics.jsonl say the rest; nothing is written into it
    buffer = io.StringIO()
    csv.writer(buffer).writerows([header, *rows])
    (out_dir / "summary.csv").write_text(buffer.getvalue())
    (out_dir / "summary.md").write_text(f"# Runs in {root}\n\n" + markdown_table(header, rows) + "".join(f"\n{n}\n" for n in notes))
    plot_sweep(runs, out_dir / "sweep.png", title=f"val loss of {len(runs)} runs in {'/'.join(root.parts[-2:])}")
    return text
