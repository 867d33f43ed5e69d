"""Signs of life during long waits: the training steps, the base-model and final evaluations, the
retention reference sampling.

On a terminal a tqdm bar; anywhere else (stderr redirected to a log file, a CI console, a pipe) a
plain line every TAILORLM_PROGRESS_EVERY seconds (default 30), because tqdm's carriage returns pile
every update into one unreadable line there:

    [tailorlm] base model evaluation: accuracy 120/300 rows (40%), 1m 12s, ~1m 48s left

The callers say what is being waited for and what is counted, nothing else:

    with phase("base model evaluation"):                 # train/setup.py, train/phases.py, commands
        for i in track(range(0, n, bs), "val_loss", total=n, unit="rows", step=bs):   # eval/, retention/
            ...

`track` is silent outside a phase (a benchmark or a test calling an evaluator directly sees nothing)
and inside `quiet()`.
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
from typing import Iterable, Iterator, TextIO

_STATE = {"phase": None, "quiet": False}


def every_s() -> float:
    """Seconds between plain progress lines (TAILORLM_PROGRESS_EVERY; 0 prints at every update)."""
    try:
        return max(0.0, float(os.environ.get("TAILORLM_PROGRESS_EVERY", "30")))
    except ValueError:
        return 30.0


def is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):   # a closed or odd stream: not a terminal
        return False


def duration(seconds: float) -> str:
    """'45s', '3m 07s', '1h 02m'."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    """What the person is waiting for; the loops inside report their progress under this name."""
    before = _STATE["phase"]
    _STATE["phase"] = name
    try:
        yield
    finally:
        _STATE["phase"] = before


@contextlib.contextmanager
def quiet(flag: bool = True) -> Iterator[None]:
    """No progress from `track` inside (train(quiet=True), tests)."""
    before = _STATE["quiet"]
    _STATE["quiet"] = flag or before
    try:
        yield
    finally:
        _STATE["quiet"] = before


class Progress:
    """A counter towards `total`: a tqdm bar on a terminal, else a plain line every `every` seconds
    and a last one at close when it printed any. `set_postfix` adds figures (loss, lr) to both."""

    def __init__(self, total: int, desc: str, unit: str = "it", *, initial: int = 0, stream: TextIO | None = None,
                 every: float | None = None, disable: bool = False, leave: bool = True):
        self.stream = stream or sys.stderr
        self.total, self.desc, self.unit, self.disable = total, desc, unit, disable
        self.n = self.first = self.shown = initial
        self.every = every_s() if every is None else every
        self.start = self.last = time.monotonic()
        self.postfix, self.bar = "", None
        if not disable and is_terminal(self.stream):
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True, leave=leave,
                            file=self.stream)

    def update(self, k: int = 1) -> None:
        self.n += k
        if self.bar is not None:
            self.bar.update(k)
        elif not self.disable and time.monotonic() - self.last >= self.every:
            self._line()

    def set_postfix(self, **figures) -> None:
        if self.bar is not None:
            self.bar.set_postfix(**figures)
        self.postfix = ", ".join(f"{k} {v}" for k, v in figures.items())

    def write(self, text: str) -> None:
        """A message, above the bar on a terminal."""
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif not self.disable and self.shown != self.first and self.n != self.shown:
            self._line(done=True)   # the earlier lines promised an end: say where it got to
        self.disable = True

    def _line(self, done: bool = False) -> None:
        now = time.monotonic()
        took, rate = now - self.start, (self.n - self.first) / max(now - self.start, 1e-9)
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        left = f", ~{duration((self.total - self.n) / rate)} left" if rate > 0 and self.total and self.n < self.total else ""
        extra = f", {self.postfix}" if self.postfix else ""
        print(f"[tailorlm] {self.desc}: {self.n}/{self.total} {self.unit}{pct}, {duration(took)}{left}{extra}",
              file=self.stream, flush=True)
        self.last, self.shown = now, self.n


def track(items: Iterable, what: str, *, total: int, unit: str = "rows", step: int = 1) -> Iterator:
    """Yields `items`, counting `step` per item (a batch of `step` rows; the last may hold fewer,
    so the count stops at `total`), under the current phase's name; silent outside a phase."""
    name = _STATE["phase"]
    if name is None or _STATE["quiet"]:
        yield from items
        return
    bar = Progress(total, f"{name}: {what}", unit, leave=False)
    try:
        for item in items:
            yield item
            bar.update(min(step, total - bar.n))
    finally:
        bar.close()
