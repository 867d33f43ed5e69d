"""metrics.jsonl (one JSON object per logged event) and the progress line."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path


class MetricsLog:
    """`enabled=False` (every rank but 0 of a parallel run): writes and says nothing."""

    def __init__(self, path: Path, quiet: bool = False, enabled: bool = True):
        self.path, self.quiet, self.enabled = path, quiet, enabled
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        record = {"time": round(time.time(), 3), **record}
        with open(self.path, "a") as fh:
            fh.write(json.dumps(record) + "\n")

    def truncate_after(self, step: int) -> None:
        """Drop records past `step` (logged by a run that died before its next checkpoint)."""
        if not self.enabled:
            return
        keep = [r for r in read_metrics(self.path) if r.get("step", 0) <= step]
        self.path.write_text("".join(json.dumps(r) + "\n" for r in keep))

    def say(self, text: str, always: bool = False) -> None:
        if self.enabled and (always or not self.quiet):
            print(text, file=sys.stderr, flush=True)


class Silent:
    """The progress bar of a rank that does not print (tqdm's write prints even when disabled)."""

    def write(self, *a, **k) -> None: ...
    def update(self, *a, **k) -> None: ...
    def set_postfix(self, *a, **k) -> None: ...
    def close(self) -> None: ...


def progress(total: int, initial: int, quiet: bool, enabled: bool = True):
    if not enabled:
        return Silent()
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=quiet, desc="train", dynamic_ncols=True)


def read_metrics(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
