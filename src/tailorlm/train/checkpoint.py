"""Atomic, verifiable training checkpoints.

A checkpoint is written into a temporary folder beside its final place, every file fsynced, a
manifest of SHA-256 hashes written last, then the folder is renamed into place. A reader trusts a
checkpoint only if its manifest verifies, so a kill mid-save leaves nothing that looks complete.

    checkpoints/step-000050/
        trainable.safetensors   the method's own parameters, by name
        optimizer.pt            AdamW state (tensors and numbers only; loaded with weights_only=True)
        state.json              step, scheduler, RNG states, data position, metrics so far
        manifest.json           {file: sha256}, written last
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

MANIFEST = "manifest.json"
KILL_IN_SAVE = "TAILORLM_TEST_KILL_IN_SAVE"   # tests only: SIGKILL this process midway through saving step N


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


def rng_state() -> dict:
    st = {"python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
          "numpy": [np.random.get_state()[0], np.random.get_state()[1].tolist(), *np.random.get_state()[2:]],
          "torch": torch.get_rng_state().tolist()}
    if torch.cuda.is_available():
        st["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return st


def set_rng_state(st: dict) -> None:
    random.setstate((st["python"][0], tuple(st["python"][1]), st["python"][2]))
    n = st["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), *n[2:]))
    torch.set_rng_state(torch.tensor(st["torch"], dtype=torch.uint8))
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in st["cuda"]])


def save(ckpt_dir: Path, *, params: dict[str, torch.Tensor], optimizer, state: dict) -> Path:
    """Write a checkpoint atomically; returns its final path. Raises (leaving older ones intact) on failure."""
    ckpt_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{ckpt_dir.name}.", dir=ckpt_dir.parent))
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in params.items()}, str(tmp / "trainable.safetensors"))
        if os.environ.get(KILL_IN_SAVE) == str(state.get("step")):  # fault injection for the tests
            os.kill(os.getpid(), signal.SIGKILL)
        files = ["trainable.safetensors", "state.json"]
        if optimizer is not None:
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
            files.append("optimizer.pt")
        (tmp / "state.json").write_text(json.dumps(state))
        for f in files:
            _fsync(tmp / f)
        (tmp / MANIFEST).write_text(json.dumps({f: _sha256(tmp / f) for f in files}))
        _fsync(tmp / MANIFEST)
        if ckpt_dir.exists():
            shutil.rmtree(ckpt_dir)
        os.rename(tmp, ckpt_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
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
        if f.parent != ckpt_dir.resolve():
            return f"manifest names a path outside the checkpoint: {name!r}"
        if not f.is_file():
            return f"{name} is missing"
        if _sha256(f) != digest:
            return f"{name} does not match its hash (truncated or modified)"
    return None


def latest(ckpt_root: Path) -> tuple[Path | None, list[str]]:
    """Newest verified checkpoint, and a note for each newer one skipped. Half-written temporary
    folders (a save that died) are removed."""
    notes = []
    for t in ckpt_root.glob(".step-*"):
        shutil.rmtree(t, ignore_errors=True)
        notes.append(f"removed {t.name}: an interrupted save")
    for d in sorted(ckpt_root.glob("step-*"), reverse=True):
        why = verify(d)
        if why is None:
            return d, notes
        notes.append(f"skipped {d.name}: {why}")
    return None, notes


def load(ckpt_dir: Path, *, model, optimizer=None) -> dict:
    params = load_file(str(ckpt_dir / "trainable.safetensors"))
    own = dict(model.named_parameters())
    unknown = set(params) - set(own)
    if unknown:
        raise ValueError(f"{ckpt_dir}: checkpoint has parameters this model lacks: {sorted(unknown)[:3]}")
    with torch.no_grad():
        for k, v in params.items():
            own[k].copy_(v)
    if optimizer is not None:
        optimizer.load_state_dict(torch.load(ckpt_dir / "optimizer.pt", weights_only=True, map_location="cpu"))
    return json.loads((ckpt_dir / "state.json").read_text())


def rotate(ckpt_root: Path, keep_last: int) -> None:
    """Delete all but the newest keep_last verified checkpoints; never the newest verified one."""
    good = [d for d in sorted(ckpt_root.glob("step-*")) if verify(d) is None]
    for d in good[:-max(1, keep_last)]:
        shutil.rmtree(d, ignore_errors=True)
