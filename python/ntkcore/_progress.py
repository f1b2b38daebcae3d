"""Progress reports of long computations: ``progress=True`` (a tqdm bar when tqdm is
installed, a line on stderr otherwise), ``False``, or a callable(done, total)."""

from __future__ import annotations

import sys
import time


def check(progress) -> None:
    """TypeError unless ``progress`` is True, False or a callable(done, total)."""
    if not (isinstance(progress, bool) or callable(progress)):
        raise TypeError(f"progress must be True, False or a callable(done, total), got {progress!r}")


class Progress:
    """Reports (done, total) to a callable, a tqdm bar (when tqdm is installed) or stderr.

    Counts over several passes: a pass reports its own (done, total) and, when done ==
    total, is added to the base of the next.  ``bound`` passes are announced as the total
    until ``finish()``, which reports the true count.
    """

    def __init__(self, progress, what: str, bound: int = 1, unit: str = "tiles"):
        check(progress)
        self._what, self._bound, self._base, self._unit = what, bound, 0, unit
        self._callback = progress if callable(progress) else None
        self._bar = None
        self._last = 0.0
        self._shown: tuple[int, int] | None = None
        self.enabled = progress is not False
        if progress is True:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self._bar = tqdm(desc=what, unit=unit.rstrip("s"))

    def _show(self, done: int, total: int, final: bool = False) -> None:
        if self._callback is not None:
            if not (final and self._shown == (done, total)):  # the core reported the end already
                self._callback(done, total)
            self._shown = (done, total)
        elif self._bar is not None:
            self._bar.total, self._bar.n = total, done
            self._bar.refresh()
        elif final or time.monotonic() - self._last > 0.5:
            self._last = time.monotonic()
            sys.stderr.write(f"\r{self._what}: {done}/{total} {self._unit}" + ("\n" if final else ""))
            sys.stderr.flush()

    def __call__(self, done: int, total: int) -> None:
        self._show(self._base + done, max(total * self._bound, self._base + total))
        if done == total:
            self._base += total

    def finish(self) -> None:
        if self.enabled:
            self._show(self._base, self._base, final=True)
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        """Reports the final count after a run that finished; only closes the bar otherwise."""
        if kind is None:
            self.finish()
        elif self._bar is not None:
            self._bar.close()

    @property
    def callback(self):
        return self if self.enabled else None
