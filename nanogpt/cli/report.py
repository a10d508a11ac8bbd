"""`nanogpt-report` (and `python -m nanogpt.report`): summarise a run or a sweep
(nanogpt.analysis.report): a table, summary.csv, summary.md and sweep.png.

    nanogpt-report outputs/2026-11-25/17-03-11       # one run
    nanogpt-report multirun/2026-11-25/18-00-00      # every run of a sweep
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nanogpt.errors import EXIT_USER_ERROR


def main(argv: list[str] | None = None) -> int:
    from nanogpt.analysis.report import report
    from nanogpt.analysis.runs import ReportError

    parser = argparse.ArgumentParser(prog="nanogpt-report", description="Summarise a run or a sweep.")
    parser.add_argument("folder", type=Path, help="a run folder or a sweep folder")
    args = parser.parse_args(argv)
    try:
        print(report(args.folder))
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    return 0


def cli() -> None:
    """`nanogpt-report` and `python -m nanogpt.report`."""
    sys.exit(main())
