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
    lines: int = 1                        # lines lost with it (a CSV quoting error loses the rest of the file)

    @property
    def text(self) -> str:
        """The message without its location (what the audit shows beside file and line)."""
        lost = f"; lines {self.line}-{self.line + self.lines - 1} ({self.lines} lines) are not read: the rest " \
            "of the file is lost" if self.lines > 1 else ""
        return f"{self.message}{lost}"

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.text}"


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
        except RecursionError:   # json's parser recurses once per level of nesting
            _fail_or_skip(Problem(str(path), n, "bad JSON: nested too deeply to read"), on_error, out.skipped)
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
            # the csv module cannot resynchronise after a quoting error: every line from here on is lost,
            # and the problem says how many, so the summary counts lines, not one "bad line"
            line = numbers[min(start, len(numbers) - 1)] if numbers else 1
            _fail_or_skip(Problem(str(path), line, f"bad CSV: {e}", lines=max(1, numbers[-1] - line + 1)),
                          on_error, out.skipped)
            break
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


def train_files(spec) -> list[tuple[Path, int]]:
    """(path, weight) of each file `data.train` names: one path, or a list of paths and {path, weight}
    entries (objects with .path/.weight, or dicts). The weight is how many times the file's training
    rows are repeated (after the validation split, so no copy of a held-out row is trained on)."""
    items = spec if isinstance(spec, (list, tuple)) else [spec]
    out = []
    for it in items:
        if isinstance(it, dict):
            out.append((Path(it["path"]).expanduser(), int(it.get("weight", 1))))
        elif hasattr(it, "path"):
            out.append((Path(it.path).expanduser(), int(getattr(it, "weight", 1))))
        else:
            out.append((Path(it).expanduser(), 1))
    return out


def files_label(spec) -> str:
    """How messages name the file(s) of `data.train` (one path, or several joined by commas)."""
    return ", ".join(str(p) for p, _ in train_files(spec))


def _read_one(path: Path, on_error: str) -> ReadResult:
    if path.is_dir():
        inside = sorted(p.name for p in path.iterdir() if p.suffix.lower() in READERS)[:5]
        hint = f" (it holds {', '.join(inside)})" if inside else ""
        raise DataError(f"{path}: is a directory, not a data file. Fix: name a JSONL, CSV or Parquet file "
                        f"in data.train / data.val{hint}")
    if not path.is_file():
        raise DataError(f"{path}: no such file. Fix: check data.train / data.val in the config")
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise DataError(f"{path}: unknown file type {path.suffix!r}; use one of {', '.join(READERS)}")
    return reader(path, on_error)


def read_rows(path, on_error: str = "stop") -> ReadResult:
    """Read a data file, or each of several (`data.train` as a list; weights are applied by the
    caller), into rows; see the module docstring for the error policy."""
    out = ReadResult(rows=[])
    for p, _ in train_files(path):
        res = _read_one(p, on_error)
        out.rows += res.rows
        out.skipped += res.skipped
        out.repaired += res.repaired
    return out
