"""Read JSONL, CSV and Parquet into rows, each remembering the file and line it came from.

Every malformed line is named by file and line. `on_error="stop"` raises at the first one with the
fix; `on_error="skip"` drops it and records it, so the count reaches the run summary: nothing is
dropped silently. Parquet goes through `datasets` (Arrow), whose rows cannot be malformed line by
line; JSONL and CSV are parsed here because `datasets` reports neither the line nor the file.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path


from ..errors import DataError  # noqa: F401  (raised here; imported from here by callers)


@dataclass
class Problem:
    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


@dataclass
class ReadResult:
    rows: list[dict]                      # each row has "_file" and "_line" besides its fields
    skipped: list[Problem] = field(default_factory=list)
    repaired: int = 0                     # lines whose bare carriage returns became spaces (CSV)


FIX = "fix the line, or set data.on_error: skip to drop such lines (they are counted)"


def _fail_or_skip(problem: Problem, on_error: str, skipped: list[Problem]) -> None:
    if on_error == "stop":
        raise DataError(f"{problem}\n  {FIX}")
    skipped.append(problem)


def _decoded_lines(path: Path, on_error: str, skipped: list[Problem]):
    """Yield (line_number, text) with each line decoded as UTF-8 on its own, so that one badly
    encoded line is reported where it is instead of failing the whole file."""
    with open(path, "rb") as fh:
        for n, raw in enumerate(fh, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                _fail_or_skip(Problem(str(path), n, f"not valid UTF-8 ({e.reason} at byte {e.start})"),
                              on_error, skipped)
                continue
            if n == 1:
                text = text.lstrip("\ufeff")
            yield n, text


def _read_jsonl(path: Path, on_error: str) -> ReadResult:
    out = ReadResult(rows=[])
    for n, text in _decoded_lines(path, on_error, out.skipped):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as e:
            _fail_or_skip(Problem(str(path), n, f"bad JSON: {e.msg} (column {e.colno})"), on_error, out.skipped)
            continue
        if not isinstance(row, dict):
            _fail_or_skip(Problem(str(path), n, f"expected a JSON object, got {type(row).__name__}"),
                          on_error, out.skipped)
            continue
        row.update(_file=str(path), _line=n)
        out.rows.append(row)
    return out


def _read_csv(path: Path, on_error: str) -> ReadResult:
    out = ReadResult(rows=[])
    # Decode line by line first (bad bytes are per-line problems), then let csv handle quoting, which
    # may span lines; csv reads the physical lines, so each record keeps the number of the line it
    # starts on. A bare carriage return (not part of CRLF) would end a record early or break quoting,
    # so it becomes a space, and the rows where that happened are counted.
    lines = []
    for n, text in _decoded_lines(path, on_error, out.skipped):
        body = text[:-2] if text.endswith("\r\n") else text
        if "\r" in body:
            out.repaired += 1
            text = body.replace("\r", " ") + text[len(body):]
        lines.append((n, text))
    numbers = [n for n, _ in lines]
    reader = csv.reader((t for _, t in lines), strict=True)
    header: list[str] | None = None
    while True:
        start = reader.line_num
        try:
            rec = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            line = numbers[min(start, len(numbers) - 1)] if numbers else 1
            _fail_or_skip(Problem(str(path), line, f"bad CSV: {e}"), on_error, out.skipped)
            break  # the csv module cannot resynchronise after a quoting error
        line = numbers[start] if start < len(numbers) else start + 1
        if header is None:
            header = rec
            continue
        if not rec or all(not c.strip() for c in rec):
            continue
        if len(rec) != len(header):
            _fail_or_skip(Problem(str(path), line, f"expected {len(header)} fields ({', '.join(header)}), "
                                  f"got {len(rec)}"), on_error, out.skipped)
            continue
        row = dict(zip(header, rec))
        row.update(_file=str(path), _line=line)
        out.rows.append(row)
    return out


def _read_parquet(path: Path, on_error: str) -> ReadResult:
    import datasets

    ds = datasets.Dataset.from_parquet(str(path))
    rows = ds.to_list()
    for i, row in enumerate(rows, start=1):
        row.update(_file=str(path), _line=i)  # Parquet has rows, not lines: "line" is the row number
    return ReadResult(rows=rows)


READERS = {".jsonl": _read_jsonl, ".json": _read_jsonl, ".csv": _read_csv, ".parquet": _read_parquet}


def read_rows(path: str | Path, on_error: str = "stop") -> ReadResult:
    """Read a data file into rows; see the module docstring for the error policy."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"{path}: no such file. Fix: check data.train / data.val in the config")
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise DataError(f"{path}: unknown file type {path.suffix!r}; use one of {', '.join(READERS)}")
    return reader(path, on_error)
