"""Progress that stays readable in a log: a tqdm bar on a terminal, whole lines everywhere else.

tqdm redraws its bar with carriage returns; written to a file (a Slurm ``.out``, ``nohup``, CI) every redraw
stays, so a long run leaves megabytes of half-overwritten bars. ``progress_bar`` gives a real tqdm bar when its
stream is a terminal and otherwise a ``LineProgress``: the same calls (``update``, ``set_postfix``,
``set_description_str``, ``n`` / ``refresh``, ``reset``, ``close``, iteration), printed as one plain line at most
every ``every_s`` seconds, plus a first line at the start and a last one at ``close``::

    train: 120/1000 (12%) | 3.10 s/it | 6m12s elapsed | eta 45m24s | loss=0.123

Lines are printed only from those calls (no thread of its own): a loop that calls nothing for a minute prints
nothing for a minute. In data (floor 1) so that every package with a loop to show can use it.
"""

from __future__ import annotations

import sys
import time
from typing import Callable, Iterable, TextIO

__all__ = ["DEFAULT_EVERY_S", "LineProgress", "is_terminal", "progress_bar"]

DEFAULT_EVERY_S = 30.0


def is_terminal(stream) -> bool:
    """Whether ``stream`` is a terminal (a closed or unusual stream counts as not one)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def duration(seconds: float) -> str:
    """``45s``, ``12m05s``, ``3h02m``: short enough for a line per interval."""
    s = int(max(0.0, seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class LineProgress:
    """tqdm's interface (the part TrackStream uses), written as whole lines at most every ``every_s`` seconds.

    ``write`` (a function taking one line, e.g. a logger's ``info``) replaces ``file``; ``clock`` is injectable for
    tests. The rate is that of the last interval (steps since the previous line over its seconds), so a run
    resumed at step s (``n`` set directly) or a phase that slows down shows its rate now, not an average."""

    def __init__(
        self,
        iterable: Iterable | None = None,
        *,
        total: float | None = None,
        desc: str | None = None,
        unit: str = "it",
        file: TextIO | None = None,
        write: Callable[[str], object] | None = None,
        every_s: float = DEFAULT_EVERY_S,
        disable: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ):
        if every_s < 0:
            raise ValueError(f"progress: every_s={every_s} must be >= 0 (seconds between lines)")
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.iterable, self.total, self.desc, self.unit = iterable, total, (desc or "").strip(), unit
        self.every_s, self.disable, self.clock = every_s, disable, clock
        self._write = write or (lambda line: _print_line(file if file is not None else sys.stderr, line))
        self.postfix = ""
        self.closed = False
        self.reset(total)
        self.refresh(due_only=False)  # as tqdm does: a log shows at once that the loop began, and its total

    def reset(self, total: float | None = None) -> None:
        """Back to 0 of ``total`` (tqdm's ``reset``: a new phase on the same line)."""
        self.total = total if total is not None else self.total
        self.n = 0
        self.start_t = self.last_print_t = self.clock()
        self.last_print_n = 0  # tqdm's name: setting it with ``n`` (a resumed run) keeps the rate honest

    def __iter__(self):
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:  # as tqdm does: a loop that ends (or breaks) leaves its last line
            self.close()

    def __len__(self) -> int:
        return int(self.total or 0)

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: float = 1) -> None:
        self.n += n
        self.refresh(due_only=True)

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **kwargs) -> None:
        items = {**(ordered_dict or {}), **kwargs}
        self.set_postfix_str(", ".join(f"{k}={_short(v)}" for k, v in items.items()), refresh=refresh)

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = str(s)
        if refresh:
            self.refresh(due_only=True)

    def set_description_str(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = (desc or "").strip()  # a bar's column padding is noise in a line
        if refresh:
            self.refresh(due_only=True)

    set_description = set_description_str

    def refresh(self, due_only: bool = True) -> None:
        """A line if ``every_s`` has passed since the last one (tqdm redraws on every call; a log would fill)."""
        now = self.clock()
        if not self.disable and not self.closed and (not due_only or now - self.last_print_t >= self.every_s):
            self._print(now)

    def close(self) -> None:
        """The last line (where the loop ended and how long it took), once."""
        if not self.closed:
            self.refresh(due_only=False)
            self.closed = True

    def line(self, now: float | None = None) -> str:
        """What the next line would say (``now`` defaults to the clock)."""
        now = self.clock() if now is None else now
        parts = [f"{self.desc}: {_count(self.n, self.total)}" if self.desc else _count(self.n, self.total)]
        dt, dn = now - self.last_print_t, self.n - self.last_print_n
        if dt > 0 and dn > 0:
            rate = dn / dt
            parts.append(f"{rate:.2f} {self.unit}/s" if rate >= 1 else f"{1 / rate:.2f} s/{self.unit}")
        parts.append(f"{duration(now - self.start_t)} elapsed")
        if self.total and dt > 0 and dn > 0 and self.n < self.total:
            parts.append(f"eta {duration((self.total - self.n) * dt / dn)}")
        if self.postfix:
            parts.append(self.postfix)
        return " | ".join(parts)

    def _print(self, now: float) -> None:
        self._write(self.line(now))
        self.last_print_t, self.last_print_n = now, self.n


def progress_bar(
    iterable: Iterable | None = None,
    *,
    file: TextIO | None = None,
    every_s: float = DEFAULT_EVERY_S,
    disable: bool = False,
    **tqdm_kwargs,
):
    """A tqdm bar when ``file`` (default stderr) is a terminal, else a ``LineProgress`` with the same calls.

    ``tqdm_kwargs`` go to tqdm unchanged (its look on a terminal is the caller's); a ``LineProgress`` takes
    ``total``, ``desc`` and ``unit`` from them and ignores the rest (bar formats, widths, ``leave``)."""
    file = sys.stderr if file is None else file
    if is_terminal(file):
        from tqdm import tqdm  # only a terminal needs it

        return tqdm(iterable, file=file, disable=disable, **tqdm_kwargs)
    keep = {k: tqdm_kwargs[k] for k in ("total", "desc", "unit") if k in tqdm_kwargs}
    return LineProgress(iterable, file=file, every_s=every_s, disable=disable, **keep)


def _count(n: float, total: float | None) -> str:
    if not total:
        return _short(n)
    return f"{_short(n)}/{_short(total)} ({100 * n / total:.0f}%)"


def _short(value) -> str:
    """Whole counts as integers, other floats in 4 significant digits, anything else as ``str``."""
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{value:.4g}"
    return str(value)


def _print_line(stream: TextIO, line: str) -> None:
    stream.write(line + "\n")
    stream.flush()  # a line that sits in a buffer until the job ends says nothing about the job
