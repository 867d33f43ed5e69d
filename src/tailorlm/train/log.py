"""metrics.jsonl (one JSON object per logged event) and the progress line."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path


class MetricsLog:
    def __init__(self, path: Path, quiet: bool = False):
        self.path, self.quiet = path, quiet
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict) -> None:
        record = {"time": round(time.time(), 3), **record}
        with open(self.path, "a") as fh:
            fh.write(json.dumps(record) + "\n")

    def say(self, text: str) -> None:
        if not self.quiet:
            print(text, file=sys.stderr, flush=True)


def read_metrics(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
