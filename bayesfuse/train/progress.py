"""Training progress: a live bar on a terminal, a few plain lines anywhere else.

A tqdm bar redraws itself with carriage returns; written to a log file, a CI log or a saved
notebook, one fit leaves hundreds of kB of bar updates. :class:`EpochProgress` draws the bar
only when the stream is a terminal; otherwise it writes one line at most every
``interval`` seconds and one summary line at the end (a fit of a few seconds writes one line).
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["EpochProgress"]


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):   # closed or foreign streams
        return False


class EpochProgress:
    """Per-epoch progress of one SVI fit.

    Parameters
    ----------
    total : int
        Maximum number of epochs.
    stream : file-like, optional
        Where to write (default ``sys.stderr``, looked up when the fit starts).
    interval : float
        Seconds between two plain lines when ``stream`` is not a terminal.
    """

    def __init__(self, total: int, stream: TextIO | None = None, interval: float = 30.0) -> None:
        self.total = int(total)
        self.stream = sys.stderr if stream is None else stream
        self.interval = float(interval)
        self._t0 = self._last = time.perf_counter()
        self._epoch = 0
        self._bar = None
        if _is_terminal(self.stream):
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.total, desc="SVI", unit="epoch", leave=False, file=self.stream)

    def update(self, train_loss: float, val_loss: float) -> None:
        """Record one finished epoch (losses in nats per patient)."""
        self._epoch += 1
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(train=f"{train_loss:.3f}", val=f"{val_loss:.3f}")
            return
        now = time.perf_counter()
        if now - self._last >= self.interval:
            self._last = now
            self._line(f"epoch {self._epoch}/{self.total}: train {train_loss:.3f}, val {val_loss:.3f} "
                       f"({now - self._t0:.0f} s)")

    def close(self, best_epoch: int, stopped_early: bool) -> None:
        """Remove the bar (terminal) or write the summary line (elsewhere)."""
        if self._bar is not None:
            self._bar.close()
            return
        how = "stopped early" if stopped_early else "done"
        self._line(f"{how} after {self._epoch} epoch(s), best epoch {best_epoch} "
                   f"({time.perf_counter() - self._t0:.1f} s)")

    def _line(self, text: str) -> None:
        print(f"bayesfuse SVI: {text}", file=self.stream, flush=True)
