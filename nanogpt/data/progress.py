"""Progress of a long preparation: a live bar on a terminal (MB/s, ETA), and on anything else
(a log file, a SLURM job's output) a line every PROGRESS_LOG_S seconds, then one line at the end."""

from __future__ import annotations

import logging
import sys
import time
from types import TracebackType

from tqdm import tqdm

log = logging.getLogger(__name__)

PROGRESS_LOG_S = 30.0
QUIET_BELOW_S = 5.0


class Progress:
    """Counts `unit`s (bytes are shown as MB) done of `total` (None: unknown, so no ETA)."""

    def __init__(self, what: str, total: float | None, unit: str = "B"):
        self.what, self.total, self.unit = what, total, unit
        self.done = 0.0
        self.start = self.last_log = time.monotonic()
        interactive = sys.stderr.isatty()
        self.bar = tqdm(
            total=total, desc=what, unit=unit, unit_scale=True, unit_divisor=1000, dynamic_ncols=True, disable=not interactive, leave=False
        )

    def update(self, amount: float) -> None:
        self.done += amount
        self.bar.update(amount)
        now = time.monotonic()
        if self.bar.disable and now - self.last_log >= PROGRESS_LOG_S:
            self.last_log = now
            log.info("%s: %s", self.what, self.summary(now))

    def summary(self, now: float | None = None) -> str:
        elapsed = max((now or time.monotonic()) - self.start, 1e-9)
        rate = self.done / elapsed
        scale, name = (1e6, "MB") if self.unit == "B" else (1.0, self.unit)
        text = f"{self.done / scale:,.1f} {name}"
        if self.total:
            text += f" of {self.total / scale:,.1f} {name} ({100 * self.done / self.total:.0f}%)"
        text += f" in {elapsed:.1f} s, {rate / scale:,.1f} {name}/s"
        if self.total and rate > 0 and self.done < self.total:
            text += f", ETA {_clock((self.total - self.done) / rate)}"
        return text

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
        if kind is None:
            # A line for what took a while; a moment's work (tiny Shakespeare) is not worth one.
            log.log(logging.INFO if time.monotonic() - self.start >= QUIET_BELOW_S else logging.DEBUG, "%s: %s", self.what, self.summary())


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}"
