"""Atomic, verifiable training checkpoints, used only when every file loads.

A checkpoint is written into a temporary folder beside its final place, every file fsynced, a
manifest of SHA-256 hashes written last, then the folder is renamed into place. A reader trusts a
checkpoint only if its manifest verifies, so a kill mid-save leaves nothing that looks complete.

    checkpoints/step-000050/
        trainable.safetensors   the method's own parameters, by name
        optimizer.pt            AdamW state (tensors and numbers only; loaded with weights_only=True)
        state.json              step, scheduler, RNG states, data position, metrics so far
        manifest.json           {file: sha256}, written last

Hashes prove a file is what was written, not that it loads, so a checkpoint is usable only when
every file loads into this run: `unreadable` test-reads each one before any model exists, and `read`
(checkpoint_read.py) checks every tensor against the run's model and optimizer before `apply()`
assigns anything. A run of several processes (train.parallel) writes `dcp/` shards instead
(checkpoint_dcp.py); `read` and `load` read either format.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..atomic import replace_dir, temp_dir_beside
from . import checkpoint_dcp
from .checkpoint_dcp import trainable_state  # noqa: F401  (part of this module's interface)

MANIFEST = "manifest.json"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# torch's advice to load an untrusted file anyway (or to allowlist what it refused): never repeated
_UNSAFE = re.compile(r"weights_only\W{0,3}(=|set to)\W{0,3}False|can still be loaded|re-running|safe_globals|allowlist",
                     re.IGNORECASE)
# what torch.save says when a write comes up short: on a full disk, its only words for it (no errno)
_SHORT_WRITE = ("unexpected pos", "file write failed", "PytorchStreamWriter failed")


class Unloadable(ValueError):
    """A checkpoint whose files verify but do not load into this run; the message names the file and why."""


def describe(e: BaseException) -> str:
    """An exception in one line (torch's messages run over several), for the one line a user sees.
    torch's refusal of a pickle keeps only what it refused, never its advice to load it unsafely."""
    text = _ANSI.sub("", str(e))
    if "WeightsUnpickler error:" in text:
        text = "torch.load(weights_only=True) refused it: " + text.split("WeightsUnpickler error:", 1)[1].strip()
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    kept = " ".join(s for s in re.split(r"(?<=[.!?])\s+", first) if not _UNSAFE.search(s))
    return f"{type(e).__name__}: {(kept or 'refused by torch.load(weights_only=True)')[:300]}"


def failure(ckpt_dir: Path, e: BaseException, writing: str) -> OSError:
    """The one OSError a failed save raises, naming the checkpoint. A full disk is said to be one
    whichever way it surfaced: ENOSPC, or torch.save's "unexpected pos" / "file write failed"."""
    chain, c = [], e
    while c is not None and len(chain) < 5:
        chain.append(c)
        c = c.__cause__ or c.__context__
    text = " ".join(str(x) for x in chain)
    full = (any(getattr(x, "errno", None) in (errno.ENOSPC, errno.EDQUOT) for x in chain)
            or "No space left" in text or any(s in text for s in _SHORT_WRITE))
    if not full:
        return _oserror(getattr(e, "errno", None) or errno.EIO, f"checkpoint {ckpt_dir.name}: {describe(e)}")
    try:
        free = shutil.disk_usage(ckpt_dir.parent).free / 2**20
        free = f", {free:,.0f} MiB free there now"
    except OSError:
        free = ""
    return _oserror(errno.ENOSPC, f"checkpoint {ckpt_dir.name} not written: the disk is full ({writing} could not be "
                                  f"written in {ckpt_dir.parent}{free}; {describe(e)})")


def _oserror(code: int, message: str) -> OSError:
    """An OSError carrying `code` whose text is `message` alone (no "[Errno 28]" before it)."""
    e = OSError(message)
    e.errno = code
    return e


def _sha256(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync(p: Path) -> None:
    fd = os.open(p, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _seal(tmp: Path, files: list[str], ckpt_dir: Path, unsynced: list[str]) -> None:
    """fsync what is not on disk yet, write the manifest of `files` last, then rename into place."""
    for f in unsynced:
        _fsync(tmp / f)
    (tmp / MANIFEST).write_text(json.dumps({f: _sha256(tmp / f) for f in files}))
    _fsync(tmp / MANIFEST)
    replace_dir(tmp, ckpt_dir)


def save(ckpt_dir: Path, *, params: dict[str, torch.Tensor], optimizer, state: dict, model=None,
         dist=None) -> Path:
    """Write a checkpoint atomically; returns its final path. Raises one OSError naming the checkpoint
    (leaving older ones intact) whatever failed: torch.save reports a full disk as a RuntimeError,
    safetensors as its own error, and the caller must see one kind to keep the run going.
    With `dist` of several ranks, every rank calls this, and the model's shards go through DCP."""
    if dist is not None and dist.parallel:
        return checkpoint_dcp.save_sharded(ckpt_dir, model=model, optimizer=optimizer, state=state, dist=dist)
    tmp = temp_dir_beside(ckpt_dir)
    writing = "trainable.safetensors"
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in params.items()}, str(tmp / writing))
        files = ["trainable.safetensors", "state.json"]
        if optimizer is not None:
            writing = "optimizer.pt"
            torch.save(optimizer.state_dict(), tmp / writing)
            files.append(writing)
        writing = "state.json"
        (tmp / writing).write_text(json.dumps(state))
        writing = MANIFEST
        _seal(tmp, files, ckpt_dir, unsynced=files)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, Exception):
            raise failure(ckpt_dir, e, writing) from e
        raise
    return ckpt_dir


def verify(ckpt_dir: Path) -> str | None:
    """None when the checkpoint is complete and untampered, else the reason it is not."""
    m = ckpt_dir / MANIFEST
    if not m.is_file():
        return "no manifest (incomplete write)"
    try:
        manifest = json.loads(m.read_text())
    except json.JSONDecodeError:
        return "manifest is not valid JSON"
    for name, digest in manifest.items():
        f = (ckpt_dir / name).resolve()
        if not f.is_relative_to(ckpt_dir.resolve()) or f == ckpt_dir.resolve():
            return f"manifest names a path outside the checkpoint: {name!r}"
        if not f.is_file():
            return f"{name} is missing"
        if _sha256(f) != digest:
            return f"{name} does not match its hash (truncated or modified)"
    return None


def unreadable(ckpt_dir: Path) -> str | None:
    """Why a checkpoint whose hashes verify still cannot be read (None: it can), before any model
    exists: state.json parsed (and its step the folder's), the parameters' safetensors header,
    optimizer.pt unpickled as `read` does it (weights_only, memory-mapped: no tensor data read), DCP's
    metadata through its restricted unpickler. A payload written together with a matching manifest is
    refused here, before a run commits to it; whether the tensors fit the run, `read` checks."""
    why = _state_problem(ckpt_dir)
    if why is not None:
        return why
    if (ckpt_dir / "dcp").is_dir():
        return checkpoint_dcp.unreadable(ckpt_dir / "dcp")
    f = ckpt_dir / "trainable.safetensors"
    try:
        with safe_open(str(f), framework="pt") as fh:
            fh.keys()
    except (MemoryError, PermissionError):
        raise
    except Exception as e:  # noqa: BLE001 - a pickle renamed, a truncated header: not a checkpoint of ours
        return f"trainable.safetensors cannot be read ({describe(e)})"
    f = ckpt_dir / "optimizer.pt"
    if not f.is_file():
        return None
    try:
        torch.load(f, weights_only=True, map_location="cpu", mmap=True)
    except (MemoryError, PermissionError):
        raise
    except Exception as e:  # noqa: BLE001 - any failure to read it makes the checkpoint unusable
        return f"optimizer.pt cannot be loaded safely ({describe(e)})"
    return None


def _state_problem(ckpt_dir: Path) -> str | None:
    try:
        st = json.loads((ckpt_dir / "state.json").read_text())
    except (OSError, ValueError) as e:
        return f"state.json cannot be read ({describe(e)})"
    step = st.get("step") if isinstance(st, dict) else None
    if not isinstance(step, int) or isinstance(step, bool):
        return "state.json holds no step"
    named = ckpt_dir.name.removeprefix("step-")
    if ckpt_dir.name.startswith("step-") and named.isdigit() and int(named) != step:
        return f"state.json holds step {step}, not {int(named)}"
    return None


def latest(ckpt_root: Path) -> tuple[Path | None, list[str]]:
    """Newest usable (verified, readable) checkpoint, and a note for each newer one skipped.
    Temporary folders of saves that died (steps, best, a replaced one) are removed."""
    notes = []
    for t in [*ckpt_root.glob(".step-*"), *ckpt_root.glob(".best.*")]:
        shutil.rmtree(t, ignore_errors=True)
        notes.append(f"removed {t.name}: an interrupted save")
    for d in sorted(ckpt_root.glob("step-*"), reverse=True):
        why = verify(d) or unreadable(d)
        if why is None:
            return d, notes
        notes.append(f"skipped {d.name}: {why}")
    return None, notes


def discard(ckpt_root: Path, keep: Path) -> list[str]:
    """Remove what a run resuming from `keep` cannot use: the newer checkpoints `latest` skipped (the
    resumed run writes those steps again) and older ones that do not verify (a save or a rotation
    cut short). Returns a note for each."""
    notes = []
    for d in sorted(ckpt_root.glob("step-*")):
        why = None if d == keep else verify(d) or (unreadable(d) if d.name > keep.name else None)
        if why is not None:
            shutil.rmtree(d)
            notes.append(f"removed {d.name}: {why}")
    return notes


def rotate(ckpt_root: Path, keep_last: int) -> None:
    """Delete all but the newest keep_last verified checkpoints, and any older one that does not
    verify (a rotation cut short); never the newest verified one."""
    every = sorted(ckpt_root.glob("step-*"))
    good = [d for d in every if verify(d) is None]
    broken = [d for d in every if good and d < good[-1] and d not in good]
    for d in good[:-max(1, keep_last)] + broken:
        shutil.rmtree(d, ignore_errors=True)


# reading a checkpoint into a run, all or nothing (checkpoint_read.py): part of this module's interface
from .checkpoint_read import Loaded, load, read  # noqa: E402, F401
