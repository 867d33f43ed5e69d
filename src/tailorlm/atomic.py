"""Writes a kill cannot leave half done, and the one rule for what tailorlm may delete.

Every file tailorlm rewrites (config.yaml, metrics.jsonl when repaired, base_eval.json,
summary.json, audit.json, the run marker) goes through `write_text`: a temporary file beside it,
fsynced, renamed over the old one, the folder fsynced. A SIGKILL at any instant leaves either the
old file or the new one, never an empty or truncated one. Folders (final/, checkpoints, exports)
are written into `temp_dir_beside` and put in place by `replace_dir`.

Temporary names are hidden and start with the name they stand for (`.config.yaml.<pid>.<hex>.tmp`,
`.final.<hex>`), so whoever owns the name knows its debris (`is_debris_of`).
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
from pathlib import Path


def fsync_dir(d: Path) -> None:
    """Make a rename in `d` durable (a crash after it must not bring the old name back)."""
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:   # (a platform without directory fds: the rename is still atomic)
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        with open(tmp, "xb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_text(path: str | Path, text: str) -> None:
    """`path` holds `text`, or (killed, disk full) still holds what it held before."""
    write_bytes(path, text.encode("utf-8"))


def temp_dir_beside(path: Path) -> Path:
    """A fresh hidden folder next to `path` (same file system, so the final rename is atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))


def replace_dir(tmp: Path, dest: Path) -> None:
    """Put the finished folder `tmp` at `dest`; an old `dest` is moved aside first and deleted last,
    so a failure before the swap leaves it whole."""
    old = None
    if dest.exists():
        old = temp_dir_beside(dest)
        os.rename(dest, old)          # (onto the empty folder mkdtemp made: atomic on POSIX)
    os.rename(tmp, dest)
    fsync_dir(dest.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def is_debris_of(name: str, owned: str) -> bool:
    """Is the entry `name` a temporary left by writing `owned` (see write_text, temp_dir_beside)?"""
    return name.startswith(f".{owned}.")


def holds_cwd(path: Path) -> bool:
    """Is `path` the current directory or one of its parents (never deleted, whatever it holds)?"""
    return Path.cwd().resolve().is_relative_to(path.resolve())


def read_jsonl(path: str | Path) -> list[dict]:
    """Every record of an append-only JSONL log (metrics.jsonl); a line cut short by a kill in the
    middle of an append is left out, so a run that is still going or was killed reads whole."""
    path = Path(path)
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out
