"""RUN/probes/NAME.json: one probe's results, the contract between the probes and `tailorlm report`.

    {"name": str, "title": str,
     "rows": [{"metric": str, "group": str?, "base": float, "tuned": float, "change": float,
               "lo": float, "hi": float, "significant": bool, ...}],   # one line of the table each
     "warnings": [str],                                                  # shown in red in the report
     "html": str | null,                                                 # an optional self-contained fragment
     "extra": {...}}                                                     # anything else the probe keeps
"""
from __future__ import annotations

import json
from pathlib import Path

from ..atomic import write_text


def write_probe(run_dir: str | Path, name: str, *, title: str, rows: list[dict], warnings: list[str] = (),
                html: str | None = None, extra: dict | None = None) -> Path:
    path = Path(run_dir) / "probes" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps({"name": name, "title": title, "rows": rows, "warnings": list(warnings),
                                 "html": html, "extra": extra or {}}, indent=1, default=float))
    return path


def read_probes(run_dir: str | Path) -> list[dict]:
    """Every probe result of a run, by name; a file cut short by a kill is skipped."""
    out = []
    for f in sorted((Path(run_dir) / "probes").glob("*.json")):
        try:
            out.append(json.loads(f.read_text()))
        except ValueError:
            continue
    return out
