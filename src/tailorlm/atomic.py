"""Writes a kill cannot leave half done, and the one rule for what tailorlm may delete.

Every file tailorlm rewrites (config.yaml, metrics.jsonl when repaired, base_eval.json,
summary.json, audit.json, the run marker) goes through `write_text`: a temporary file beside it,
fsynced, renamed over the old one, the folder fsynced. A SIGKILL at any instant leaves either the
old file or the new one, never an empty or truncated one. Folders (final/, checkpoints, exports)
are written into `temp_dir_beside` and put in place by `replace_dir`; a folder meant for others (an
export) is given the umask's modes first (`share_modes`: mkdtemp makes 0700, safetensors 0600).

Temporary names are hidden and start with the name they stand for (`.config.yaml.<pid>.<hex>.tmp`,
`.final.<hex>`), so whoever owns the name knows its debris (`is_debris_of`).

A full disk (ENOSPC; a quota, EDQUOT; EIO, which some file systems give for it) is a `DiskFull`:
one line naming the file and what is left of it, never a traceback (a TailorError: a command stopped
by it exits 2) and never half a file (still an OSError, so callers that go on after a failed write
catch it). Logs are appended whole or not at all (`append_whole`), and the writes a run can do
without (a log line, a sample) say so once (`say_once`) and go on.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import shutil
import sys
import tempfile
from pathlib import Path

from .errors import TailorError

FULL = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
        errno.EIO: "the disk could not take it (an I/O error: a full or failing disk)"}
# what a library that wraps the OSError (SQLite, safetensors, a tracker) still says
FULL_TEXT = ("No space left on device", "Disk quota exceeded", "database or disk is full", "StorageFull")


def why_full(e: BaseException | None) -> str | None:
    """'the disk is full' (or its quota, or an I/O error) when `e`, or an error it wraps, is one; else None."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in FULL:
            return FULL[e.errno]
        if any(t in str(e) for t in FULL_TEXT):
            return FULL[errno.ENOSPC]
        e = e.__cause__ or e.__context__
    return None


class DiskFull(TailorError, OSError):
    """A write a full disk stopped: `could not write PATH: the disk is full (...); what is left. Fix: ...`.
    `brief` is that line without the fix, for a warning that goes on to say what the run does instead;
    `why` its middle part, for callers that say what the run kept in their own words."""

    def __init__(self, path, err: BaseException, left: str, verb: str = "write",
                 fix: str = "free space, then run the command again"):
        self.path, self.why = Path(path), f"{why_full(err) or FULL[errno.ENOSPC]} ({_short(err)})"
        self.brief = f"could not {verb} {path}: {self.why}; {left}"
        super().__init__(getattr(err, "errno", None) or errno.ENOSPC, f"{self.brief}. Fix: {fix}")
        self.filename = str(path)

    def __str__(self) -> str:
        return self.strerror


def _short(e: BaseException) -> str:
    text = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
    return (text.strip().splitlines() or [type(e).__name__])[0][:200]


@contextlib.contextmanager
def naming(path, left: str = "nothing half-written was left", verb: str = "write"):
    """Inside, an OSError that is a full disk becomes a DiskFull naming `path`."""
    try:
        yield
    except DiskFull:
        raise
    except OSError as e:
        if why_full(e) is None:
            raise
        raise DiskFull(path, e, left, verb) from e


_SAID: set = set()


def say_once(key, text: str) -> None:
    """A warning for the person watching, once per `key` (a file) in this process, above a progress
    bar if one is drawn: a log the disk cannot take must not repeat itself at every step."""
    if str(key) in _SAID:
        return
    _SAID.add(str(key))
    try:
        from tqdm import tqdm

        tqdm.write(text, file=sys.stderr)
    except ImportError:
        print(text, file=sys.stderr)
    sys.stderr.flush()


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
    left = "its previous version is intact" if path.exists() else "nothing half-written was left"
    with naming(path, left):
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


def append_whole(path: str | Path, data: bytes) -> None:
    """Append all of `data` to `path` or none of it (a DiskFull then): written at the end through one
    O_APPEND descriptor, and on a failure (a full disk cuts a write short) cut back to the length it
    had, so a reader never meets half a line. A line an older failure or a kill left without its
    newline gets one first, so this one stays whole."""
    path = Path(path)
    with naming(path, "nothing was appended (no half line)", verb="append to"):
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        start = None
        try:
            start = os.fstat(fd).st_size
            if start and os.pread(fd, 1, start - 1) != b"\n":
                data = b"\n" + data
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        except BaseException:
            if start is not None:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, start)
            raise
        finally:
            os.close(fd)


def append_lines(path: str | Path, lines: list[str], then: str) -> bool:
    """`lines` appended whole (append_whole); a full disk is said once for this file (`then`: what
    happens instead) and the lines are dropped: for the logs a run can do without (samples.jsonl)."""
    try:
        append_whole(path, "".join(lines).encode("utf-8"))
        return True
    except DiskFull as e:
        say_once(path, f"[tailorlm] warning: {e.brief}; {then}")
        return False


def write_text(path: str | Path, text: str) -> None:
    """`path` holds `text`, or (killed, disk full) still holds what it held before."""
    write_bytes(path, text.encode("utf-8"))


def temp_dir_beside(path: Path) -> Path:
    """A fresh hidden folder next to `path` (same file system, so the final rename is atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))


def umask() -> int:
    """The process's umask (os can only read it by setting it: set, then put back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def share_modes(tree: Path) -> None:
    """Give a folder made for others (an export) the modes a plain mkdir and open would: folders 0o777
    and files 0o666 (0o777 where executable) less the umask, so 0755/0644 under umask 022. mkdtemp
    makes its folder 0700 and safetensors writes its files 0600: private modes meant for a temporary
    in a shared /tmp, not for a folder handed to a colleague. Symbolic links are left alone."""
    mask = umask()
    for p in [Path(tree), *Path(tree).rglob("*")]:
        if p.is_symlink():
            continue
        full = p.is_dir() or p.stat().st_mode & 0o111
        os.chmod(p, (0o777 if full else 0o666) & ~mask)


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
