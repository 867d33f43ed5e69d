"""Fault injection for the tests, from the test side: callbacks named in `train.callbacks`
("tests.faults:Faults") that read what to break from the environment, so a resumed run (same
config, no variable set) runs clean.

    TAILORLM_TEST_KILL_IN_SAVE=N     SIGKILL this process midway through saving checkpoint step N
                                     (after the parameters are written, before the manifest);
                                     `best`: midway through the first save of checkpoints/best
    TAILORLM_TEST_FAIL_AT=R:S        rank R raises before step S
    TAILORLM_TEST_KILL_AT=NAME:S     SIGKILL after step S of the run whose folder name contains NAME
    TAILORLM_TEST_KILL_AT_WRITE=F    SIGKILL this process the moment it opens a file named F (or a
                                     temporary named after it, `.F.*`) to write it: created or
                                     truncated, nothing written yet
    TAILORLM_TEST_SIGNAL_IN_SETUP=S  send this process signal S (TERM, KILL) during start-up, while
                                     the callbacks load (after the run directory is prepared, before
                                     the data, the model and the base evaluation)
    TAILORLM_TEST_FULL_DISK=S[-E][:NAME,...]
                                     the disk fills after step S is logged (freed after step E): every write into
                                     the run folder (only into the files and folders NAME, with their
                                     temporaries) fails with ENOSPC after part of it landed (FullDisk)

In-process tests patch a FullDisk for the test only and name `tests.faults:full_disk` in
`train.callbacks`, which hands the loop the disk the test set in `DISK`.
"""
from __future__ import annotations

import errno
import os
import signal
from pathlib import Path

from tailorlm.train import Callback

KILL_IN_SAVE = "TAILORLM_TEST_KILL_IN_SAVE"
FAIL_AT = "TAILORLM_TEST_FAIL_AT"
KILL_AT = "TAILORLM_TEST_KILL_AT"
KILL_AT_WRITE = "TAILORLM_TEST_KILL_AT_WRITE"
SIGNAL_IN_SETUP = "TAILORLM_TEST_SIGNAL_IN_SETUP"
FULL_DISK = "TAILORLM_TEST_FULL_DISK"
DISK = None   # the FullDisk an in-process test installed (see full_disk)


def _kill_in_save(at: str) -> None:
    from tailorlm.train import checkpoint

    real = checkpoint.save_file
    mark = ".best." if at == "best" else f".step-{int(at):06d}."

    def save_file(tensors, path, *a, **k):   # the checkpoint's first file: kill right after it
        real(tensors, path, *a, **k)
        if mark in str(path):
            os.kill(os.getpid(), signal.SIGKILL)
    checkpoint.save_file = save_file


def _kill_at_write(name: str) -> None:
    """Every Python-level open (builtins.open, and io.open, which pathlib's write_text uses)."""
    import builtins
    import io

    real = io.open

    def opener(file, mode="r", *a, **k):
        fh = real(file, mode, *a, **k)
        base = os.path.basename(os.fspath(file)) if isinstance(file, (str, os.PathLike)) else ""
        if ("w" in mode or "x" in mode) and (base == name or base.startswith(f".{name}.")):
            os.kill(os.getpid(), signal.SIGKILL)
        return fh
    builtins.open = io.open = opener


class Faults(Callback):
    def __init__(self):
        if os.environ.get(KILL_IN_SAVE):
            _kill_in_save(os.environ[KILL_IN_SAVE])
        if os.environ.get(KILL_AT_WRITE):
            _kill_at_write(os.environ[KILL_AT_WRITE])
        if os.environ.get(SIGNAL_IN_SETUP):
            os.kill(os.getpid(), getattr(signal, "SIG" + os.environ[SIGNAL_IN_SETUP]))
        self.disk = FullDisk.parse(os.environ[FULL_DISK]).install() if os.environ.get(FULL_DISK) else None

    def on_step_start(self, run) -> None:
        at = os.environ.get(FAIL_AT)
        if at and at == f"{run.dist.rank}:{run.step + 1}":
            raise RuntimeError(f"injected failure on rank {run.dist.rank} before step {run.step + 1}")

    def on_step_end(self, run, rec) -> None:
        if self.disk is not None:
            self.disk.on_step_end(run, rec)
        at = os.environ.get(KILL_AT)
        if at:
            name, _, step = at.rpartition(":")
            if name in run.run_dir.name and rec["step"] == int(step):
                os.kill(os.getpid(), signal.SIGKILL)


def _enospc(path) -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fsdecode(path) if isinstance(path, bytes) else str(path))


class FullDisk(Callback):
    """A disk that fills: while full, a write into the run folder (only into the files or folders in
    `names`, and their hidden temporaries, when given) fails with ENOSPC after part of its bytes landed,
    as a real full disk cuts a write short. Caught where tailorlm's bytes reach the disk: os.write,
    Python's open (builtins and io, which pathlib's write_text uses) and a checkpoint's tensors
    (safetensors writes from Rust). As a callback (after tailorlm's own: step S's record is logged by
    then) it fills after step `after` (None: at once, in `root`) and is freed after step `until`.
    `failed` lists the paths whose writes it cut."""

    def __init__(self, after: int | None = None, until: int | None = None, names=None, root=None):
        self.after, self.until, self.names = after, until, set(names) if names else None
        self.root, self.full, self.failed, self._short = None, False, [], set()
        if after is None:
            self.fill(root)

    @classmethod
    def parse(cls, spec: str) -> "FullDisk":
        steps, _, names = spec.partition(":")
        after, _, until = steps.partition("-")
        return cls(int(after), int(until) if until else None, names.split(",") if names else None)

    def fill(self, root) -> None:
        self.root, self.full = Path(os.path.abspath(root)), True

    def free(self) -> None:
        self.full = False
        self._short.clear()

    def on_step_end(self, run, rec) -> None:
        if rec["step"] == self.until:
            self.free()
        elif rec["step"] == self.after:
            self.fill(run.run_dir)

    def hit(self, path) -> bool:
        if not self.full:
            return False
        p = Path(os.path.abspath(os.fsdecode(path)))
        if not p.is_relative_to(self.root):
            return False
        parts = p.relative_to(self.root).parts
        return self.names is None or any(x == n or x.startswith(f".{n}.") for x in parts for n in self.names)

    def install(self, patch=setattr) -> "FullDisk":
        """Patch the writers (`patch`: setattr for good, a test's monkeypatch.setattr for that test)."""
        import builtins
        import io

        from tailorlm.train import checkpoint

        real_write, real_open, real_save = os.write, io.open, checkpoint.save_file

        def write(fd, data):   # a short write, then ENOSPC on the rest
            try:
                path = os.readlink(f"/proc/self/fd/{fd}") if self.full else None
            except OSError:
                path = None
            if path is None or not self.hit(path):
                return real_write(fd, data)
            if fd in self._short or len(data) < 2:
                self._short.discard(fd)
                self.failed.append(path)
                raise _enospc(path)
            self._short.add(fd)
            return real_write(fd, data[:len(data) // 2])

        def opener(file, mode="r", *a, **k):
            fh = real_open(file, mode, *a, **k)
            if isinstance(file, (str, bytes, os.PathLike)) and set(mode) & set("wax+") and self.hit(file):
                return _Cut(fh, self)
            return fh

        def save_file(tensors, path, *a, **k):
            real_save(tensors, path, *a, **k)
            if self.hit(path):
                with real_open(path, "r+b") as fh:
                    fh.truncate(os.path.getsize(path) // 2)
                self.failed.append(str(path))
                raise _enospc(path)

        patch(os, "write", write)
        patch(builtins, "open", opener)
        patch(io, "open", opener)
        patch(checkpoint, "save_file", save_file)
        return self


class _Cut:
    """A file opened on a full disk: a write lands in part, then fails."""

    def __init__(self, fh, disk: FullDisk):
        self._fh, self._disk = fh, disk

    def write(self, data):
        self._fh.write(data[:len(data) // 2])
        self._fh.flush()
        self._disk.failed.append(self._fh.name)
        raise _enospc(self._fh.name)

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._fh.close()

    def __getattr__(self, name):
        return getattr(self._fh, name)


def full_disk():
    """For `train.callbacks`: the disk the in-process test installed (DISK), or nothing to do."""
    return DISK if DISK is not None else Callback()
