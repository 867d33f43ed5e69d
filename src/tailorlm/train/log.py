"""metrics.jsonl: one JSON object per logged event, appended as it happens.

Appends are the only writes in place, and each is whole or nothing (atomic.append_whole): a full
disk never leaves half a line. A line the disk cannot take is not lost but held, in memory, and goes
in (in order, before the next one) as soon as a write fits again; the first such failure is said
once, naming the file, and training goes on: a log line is not worth a run. What is still held when
the process ends is lost, and a resume logs those steps again (they are past the last checkpoint,
which the same full disk stopped too).

A resume repairs the log (the steps a killed run logged past its last checkpoint are dropped) by
writing the repaired log beside it and renaming it over the old one, so a kill during the repair
leaves the old log whole, never a truncated one.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from ..atomic import DiskFull, append_whole, naming, read_jsonl, say_once, write_text

MAX_HELD = 10_000   # lines held while the disk is full (the oldest go first beyond it)


class MetricsLog:
    def __init__(self, path: Path):
        self.path, self.held = path, []
        with naming(path):
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict) -> None:
        record = {"time": round(time.time(), 3), **record}
        self.held.append(json.dumps(record) + "\n")
        try:
            append_whole(self.path, "".join(self.held).encode("utf-8"))
        except DiskFull as e:
            del self.held[:-MAX_HELD]
            say_once(self.path, f"[tailorlm] warning: {e.brief}; the lines it cannot take are held and written "
                                "once space frees up; training goes on")
            return
        self.held.clear()

    def truncate_after(self, step: int) -> None:
        """Drop records past `step` (logged by a run that died before its next checkpoint)."""
        keep = [r for r in read_metrics(self.path) if r.get("step", 0) <= step]
        write_text(self.path, "".join(json.dumps(r) + "\n" for r in keep))


read_metrics = read_jsonl   # (in atomic.py, below the report that reads a live run's log too)
