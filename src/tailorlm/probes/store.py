"""RUN/probes/NAME.json: one probe's results, the contract between the probes and `tailorlm report`.

    {"name": str, "title": str,
     "rows": [{"metric": str, "group": str?, "base": float, "tuned": float, "change": float,
               "lo": float, "hi": float, "significant": bool, ...}],   # one line of the table each
     "warnings": [str],                                                  # shown in red in the report
     "html": str | null,                                                 # an optional self-contained fragment
     "extra": {...}}                                                     # anything else the probe keeps

A disk that cannot take the file leaves its previous version (atomic.write_text). Where the file is a
command's output (`tailorlm bias`, `privacy`, `explain`) that is the command's one-line error, exit 2;
during a run's evaluations (`spare_probes`, around them in train/phases.py) it is said once and the
run goes on: the probe's numbers are in metrics.jsonl all the same.
"""
from __future__ import annotations

import contextlib
import contextvars
import json
from pathlib import Path

from ..atomic import DiskFull, naming, say_once, write_text
from ..run import RunDir

_SPARE = contextvars.ContextVar("tailorlm_spare_probes", default=False)


@contextlib.contextmanager
def spare_probes():
    """Inside, a probe file the disk cannot take is a warning (once per file), not an error."""
    token = _SPARE.set(True)
    try:
        yield
    finally:
        _SPARE.reset(token)


def write_probe(run_dir: str | Path, name: str, *, title: str, rows: list[dict], warnings: list[str] = (),
                html: str | None = None, extra: dict | None = None) -> Path:
    path = RunDir.at(run_dir).probe_file(name)
    try:
        with naming(path):
            path.parent.mkdir(parents=True, exist_ok=True)
        write_text(path, json.dumps({"name": name, "title": title, "rows": rows, "warnings": list(warnings),
                                     "html": html, "extra": extra or {}}, indent=1, default=float))
    except DiskFull as e:
        if not _SPARE.get():
            raise
        say_once(path, f"[tailorlm] warning: {e.brief}; its numbers are in metrics.jsonl; training goes on")
    return path


def read_probes(run_dir: str | Path) -> list[dict]:
    """Every probe result of a run, by name; a file cut short by a kill is skipped."""
    out = []
    for f in RunDir.at(run_dir).probe_files():
        try:
            out.append(json.loads(f.read_text()))
        except ValueError:
            continue
    return out
