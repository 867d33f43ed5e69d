"""metrics.jsonl: one JSON object per logged event, appended as it happens.

Appends are the only writes in place. A resume repairs the log (the steps a killed run logged past
its last checkpoint are dropped) by writing the repaired log beside it and renaming it over the old
one, so a kill during the repair leaves the old log whole, never a truncated one.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from ..atomic import read_jsonl, write_text


class MetricsLog:
    def __init__(self, path: Path):
        self.path = path
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict) -> None:
        record = {"time": round(time.time(), 3), **record}
        with open(self.path, "a") as fh:
            fh.write(json.dumps(record) + "\n")

    def truncate_after(self, step: int) -> None:
        """Drop records past `step` (logged by a run that died before its next checkpoint)."""
        keep = [r for r in read_metrics(self.path) if r.get("step", 0) <= step]
        write_text(self.path, "".join(json.dumps(r) + "\n" for r in keep))


read_metrics = read_jsonl   # (in atomic.py, below the report that reads a live run's log too)
