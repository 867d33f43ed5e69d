"""One writer per folder: an exclusive lock a process holds for as long as it writes a run (or a
continual plan's folder, or a comparison's).

Two writers in one folder interleave: a second `train` emptied the folder while the first was still
setting up, then both logged every step into one metrics.jsonl. So whatever writes or deletes in a
run first takes `FOLDER/.tailorlm-lock`: an `fcntl.flock` on that file (taken without waiting), with
the holder's PID, command line, host and start time written in it. A second writer is refused in
one line naming the holder (`RunLockedError`, exit 2), before it has changed anything.

flock is the kernel's: it goes with the process, however it ends (an exception, a signal, SIGKILL,
a power cut), so a dead holder never blocks anyone. Released normally, the file is deleted; a file
left by a killed process is recognised (its flock is free) and taken over with a one-line note. A
releasing holder deletes the file while others may have it open, so a taker checks, once it holds
the flock, that the file it locked is still the one at the path (else it locks again).

The lock is per process and re-entrant by folder (a command that holds a run may call code that
takes it again); under torchrun only rank 0 (RANK=0) takes it, the ranks writing nothing there.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

from ..errors import RunExistsError
from .folder import CONFIG, LOCK

try:
    import fcntl
except ImportError:   # (no flock on this platform: one writer per folder is the user's care)
    fcntl = None


class RunLockedError(RunExistsError):
    """Another live process is writing the folder; the message names it."""


class RunLock:
    """A held lock: the open lock file (its flock) and whether the folder was made to hold it."""

    def __init__(self, folder: Path, fd: int, made: bool):
        self.folder, self.fd, self.made = folder, fd, made

    def release(self) -> None:
        """Delete the lock file (while still holding it), then drop the flock; a folder made only to
        hold the lock and still empty goes too, so a refused start leaves nothing behind."""
        if self.fd < 0:
            return
        _held.pop(_key(self.folder), None)
        try:
            if _same_file(self.fd, self.folder / LOCK):
                os.unlink(self.folder / LOCK)
            if self.made:
                os.rmdir(self.folder)
        except OSError:
            pass
        os.close(self.fd)
        self.fd = -1


_held: dict[Path, RunLock] = {}


def _key(folder: Path) -> Path:
    return Path(folder).resolve()


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _command() -> str:
    argv = list(sys.argv)
    if argv and Path(argv[0]).name in ("tailorlm", "__main__.py"):
        argv[0] = "tailorlm"
    return " ".join(argv).replace("\n", " ")[:200]


def _read(fd: int) -> dict:
    try:
        data = os.pread(fd, 4096, 0)
        rec = json.loads(data.decode("utf-8", "replace")) if data.strip() else {}
        return rec if isinstance(rec, dict) else {}
    except (OSError, ValueError):
        return {}


def _holder(fd: int) -> dict:
    """What a live holder wrote; it writes right after it locks, so an empty file is read again briefly."""
    for _ in range(20):
        rec = _read(fd)
        if rec.get("pid"):
            return rec
        time.sleep(0.05)
    return {}


def _who(rec: dict) -> str:
    where = f" on {rec['host']}" if rec.get("host") and rec.get("host") != socket.gethostname() else ""
    cmd = f" ({rec['command']})" if rec.get("command") else ""
    since = f", started {rec['started']}" if rec.get("started") else ""
    return f"pid {rec.get('pid', 'unknown')}{where}{cmd}{since}"


def _alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except (OSError, ValueError, TypeError, OverflowError):
        return False
    return True


def _open(folder: Path, create: bool) -> tuple[int, bool]:
    made = False
    while True:
        if create and not folder.is_dir():
            try:
                folder.mkdir(parents=True)
                made = True
            except FileExistsError:
                pass
        try:
            return os.open(folder / LOCK, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644), made
        except FileNotFoundError:   # a releasing holder removed the folder it had made: make it again
            if not create:
                raise


def acquire(folder: Path, *, create: bool = True, fix: str = "") -> tuple[RunLock, str | None]:
    """Take FOLDER's lock (making the folder where `create`): (the lock, a note where a stale lock
    was taken over). Raises RunLockedError, having changed nothing, where a live process holds it."""
    folder, made = Path(folder), False
    while True:
        fd, m = _open(folder, create)
        made = made or m
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            rec = _holder(fd)
            os.close(fd)
            raise RunLockedError(f"{folder} is being written by another tailorlm process: {_who(rec)}; nothing was "
                                 f"changed. Fix: wait for it to end, or stop it (kill {rec.get('pid', 'PID')})"
                                 f"{fix}") from None
        if _same_file(fd, folder / LOCK):
            break
        os.close(fd)   # a holder deleted it as we opened it: lock the new one
    old = _read(fd)
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps({"tool": "tailorlm", "pid": os.getpid(), "command": _command(),
                               "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S")})
                   + "\n").encode(), 0)
    note = None
    if old.get("pid"):
        gone = "is still running but no longer holds it" if _alive(old["pid"]) else "is gone"
        note = f"{folder}: took over a stale lock of {_who(old)}, which {gone}"
    return RunLock(folder, fd, made), note


def take(folder: Path, *, create: bool = True, fix: str = "") -> tuple[RunLock | None, bool, str | None]:
    """FOLDER's lock for this process: (the lock, newly taken?, a stale-lock note). Already held here:
    that lock, not new. Not rank 0 under torchrun, or no flock: (None, False, None)."""
    if fcntl is None or os.environ.get("RANK", "0") != "0":
        return None, False, None
    if (lock := _held.get(_key(folder))) is not None:
        return lock, False, None
    lock, note = acquire(folder, create=create, fix=fix)
    _held[_key(folder)] = lock
    return lock, True, note


@contextmanager
def hold(folder: Path, *, create: bool = True, fix: str = "", say=None):
    """FOLDER's lock for the block (re-entrant: the outermost holder releases it). A stale-lock note
    goes to `say`, by default one line on stderr."""
    lock, new, note = take(Path(folder), create=create, fix=fix)
    if note:
        (say or (lambda s: print(s, file=sys.stderr, flush=True)))(f"[tailorlm] {note}")
    try:
        yield lock
    finally:
        if new:
            lock.release()


def hold_run(run_dir: Path, fix: str = ""):
    """The lock of a run a command writes into (probes/, report.html); a folder that is no run (no
    config.yaml) is not touched, and the command says what is wrong with it."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG).is_file():
        return nullcontext()
    return hold(run_dir, create=False, fix=fix)


@contextmanager
def released_after(folder: Path):
    """Release FOLDER's lock at the end of the block if it was taken inside it (train takes it where
    it prepares the run folder, and holds it until the run has ended, however it ends)."""
    before = _key(folder) in _held
    try:
        yield
    finally:
        lock = None if before else _held.get(_key(folder))
        if lock is not None:
            lock.release()
