"""`nanogpt-report` (and `python -m nanogpt.report`): summarise a run or a sweep
(nanogpt.analysis.report): a table, summary.csv, summary.md and sweep.png.

    nanogpt-report outputs/2026-11-25/17-03-11       # one run
    nanogpt-report multirun/2026-11-25/18-00-00      # every run of a sweep
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nanogpt.errors import EXIT_STORAGE_ERROR, EXIT_USER_ERROR, storage_error, storage_fault


def main(argv: list[str] | None = None) -> int:
    from nanogpt.analysis.report import report
    from nanogpt.analysis.runs import ReportError

    parser = argparse.ArgumentParser(prog="nanogpt-report", description="Summarise a run or a sweep.")
    parser.add_argument("folder", type=Path, help="a run folder or a sweep folder")
    args = parser.parse_args(argv)
    try:
        report(args.folder, show=lambda text: print(text, flush=True))
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as exc:  # the summary files: a read-only or full disk (the table is printed already)
        fault = storage_fault(exc)
        if fault is None:
            raise
        print(f"error: {storage_error(fault)}; the table above is not saved", file=sys.stderr)
        return EXIT_STORAGE_ERROR
    return 0


def cli() -> None:
    """`nanogpt-report` and `python -m nanogpt.report`."""
    sys.exit(main())
