"""A continual plan's folder: its stage runs and its resumable state, named here and written
atomically (a plan killed mid-write resumes from the previous whole file, never half of one).

    PLAN/data/<stage>/train.jsonl, val.jsonl, heldout.jsonl
                                                       each stage's rows: trained on, validated on (the
                                                       checkpoint choice), scored; written once (continual/stages.py)
    PLAN/order-<k>/01-<stage>/ ...                     one ordinary run per stage (a RunDir)
    PLAN/order-<k>/matrix.json                         R (row 0: the base model), the probe after each stage
    PLAN/references/                                   the joint and single-stage reference runs
    PLAN/continual.json, continual.html                the summary and its page
"""
from __future__ import annotations

import json
from pathlib import Path

from ..atomic import write_text
from .folder import RunDir

MATRIX, SUMMARY, PAGE = "matrix.json", "continual.json", "continual.html"


class ContinualDir:
    """The plan folder at `root`."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    summary_file = property(lambda self: self.root / SUMMARY)
    page_file = property(lambda self: self.root / PAGE)
    references = property(lambda self: self.root / "references")
    data = property(lambda self: self.root / "data")

    def order(self, k: int) -> Path:
        return self.root / f"order-{k}"

    @staticmethod
    def stage(order: Path, t: int, name: str) -> RunDir:
        """Stage t's run in an order's folder (t from 1)."""
        return RunDir(Path(order) / f"{t:02d}-{name}")

    @staticmethod
    def read_matrix(order: Path) -> dict | None:
        """The order's state as last written; None before its first stage was scored."""
        f = Path(order) / MATRIX
        return json.loads(f.read_text()) if f.is_file() else None

    @staticmethod
    def write_matrix(order: Path, state: dict) -> None:
        write_text(Path(order) / MATRIX, json.dumps(state, indent=1))

    def write_summary(self, out: dict) -> None:
        write_text(self.summary_file, json.dumps(out, indent=1))
