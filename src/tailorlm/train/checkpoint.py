"""Atomic, verifiable training checkpoints.

A checkpoint is written into a temporary folder beside its final place, every file fsynced, a
manifest of SHA-256 hashes written last, then the folder is renamed into place. A reader trusts a
checkpoint only if its manifest verifies, so a kill mid-save leaves nothing that looks complete.

    checkpoints/step-000050/
        trainable.safetensors   the method's own parameters, by name
        optimizer.pt            AdamW state (tensors and numbers only; loaded with weights_only=True)
        state.json              step, scheduler, RNG states, data position, metrics so far
        manifest.json           {file: sha256}, written last

A run of several processes (train.parallel) writes the parameters and optimiser state with
torch.distributed.checkpoint instead: each rank writes its own shards into `dcp/`, rank 0 adds
state.json and, after every rank is done, the manifest. State is keyed by parameter name
(get_state_dict / set_state_dict), not by shard, so such a checkpoint loads into any number of
processes, one included (DCP loads without a process group), and a single-process checkpoint
loads into a parallel run. `load` reads either format.

    checkpoints/step-000050/
        dcp/.metadata, dcp/__0_0.distcp, dcp/__1_0.distcp, ...   {"model": ..., "optim": ...}
        state.json
        manifest.json
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..atomic import replace_dir, temp_dir_beside

MANIFEST = "manifest.json"


def describe(e: BaseException) -> str:
    """An exception in one line (torch's messages run over several), for the one line a user sees."""
    return f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:300]}"


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
    """Write a checkpoint atomically; returns its final path. Raises OSError (leaving older ones intact)
    on failure, whatever failed: torch.save reports a full disk as a RuntimeError, safetensors as its
    own error, and the caller must see one kind to keep the run going.
    With `dist` of several ranks, every rank calls this, and the model's shards go through DCP."""
    if dist is not None and dist.parallel:
        return _save_sharded(ckpt_dir, model=model, optimizer=optimizer, state=state, dist=dist)
    tmp = temp_dir_beside(ckpt_dir)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in params.items()}, str(tmp / "trainable.safetensors"))
        files = ["trainable.safetensors", "state.json"]
        if optimizer is not None:
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
            files.append("optimizer.pt")
        (tmp / "state.json").write_text(json.dumps(state))
        _seal(tmp, files, ckpt_dir, unsynced=files)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, Exception) and not isinstance(e, OSError):
            raise OSError(f"checkpoint {ckpt_dir.name}: {describe(e)}") from e
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
    """Why a checkpoint whose hashes verify still cannot be loaded (None: it can). optimizer.pt is
    unpickled as `load` does it (weights_only), memory-mapped so no tensor data is read: a payload
    written together with a matching manifest is refused here, before a run commits to it."""
    f = ckpt_dir / "optimizer.pt"
    if not f.is_file():
        return None
    try:
        torch.load(f, weights_only=True, map_location="cpu", mmap=True)
    except Exception as e:  # noqa: BLE001 - any failure to read it makes the checkpoint unusable
        return f"optimizer.pt cannot be loaded safely ({describe(e)})"
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


def load(ckpt_dir: Path, *, model, optimizer=None, dist=None) -> dict:
    """Parameters (and optimiser state) into `model`, whichever format the checkpoint has and however
    many processes wrote it; returns state.json."""
    if (ckpt_dir / "dcp").is_dir():
        _load_sharded(ckpt_dir / "dcp", model, optimizer)
        return json.loads((ckpt_dir / "state.json").read_text())
    if dist is not None and dist.parallel:
        _load_single_into_parallel(ckpt_dir, model, optimizer)
        return json.loads((ckpt_dir / "state.json").read_text())
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
    """Delete all but the newest keep_last verified checkpoints, and any older one that does not
    verify (a rotation cut short); never the newest verified one."""
    every = sorted(ckpt_root.glob("step-*"))
    good = [d for d in every if verify(d) is None]
    broken = [d for d in every if good and d < good[-1] and d not in good]
    for d in good[:-max(1, keep_last)] + broken:
        shutil.rmtree(d, ignore_errors=True)


# ---------------------------------------------------------------- several processes: DCP

def trainable_state(model, **options) -> dict:
    """The model's trainable parameters by name, through DCP's get_model_state_dict (sharded DTensors
    under FSDP; `full_state_dict=True, cpu_offload=True` gathers them to rank 0). A frozen weight tied
    to another (a tied LM head) slips through ignore_frozen_params, so names are checked here."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    own = {n for n, p in model.named_parameters() if p.requires_grad}
    sd = get_model_state_dict(model, options=StateDictOptions(ignore_frozen_params=True, **options))
    return {k: v for k, v in sd.items() if k in own}


def _state(model, optimizer) -> dict:
    """{"model": trainable parameters by name[, "optim": optimiser state by parameter name]}: sharded
    (DTensor) under FSDP, plain tensors otherwise."""
    if optimizer is None:
        return {"model": trainable_state(model)}
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return {"model": trainable_state(model),
            "optim": get_optimizer_state_dict(model, optimizer, options=StateDictOptions(ignore_frozen_params=True))}


def _save_sharded(ckpt_dir: Path, *, model, optimizer, state: dict, dist) -> Path:
    import torch.distributed.checkpoint as dcp

    def make_tmp():
        t = temp_dir_beside(ckpt_dir)
        (t / "dcp").mkdir()
        return str(t)

    tmp = Path(dist.on_main(make_tmp))
    err = None
    try:
        dcp.save(_state(model, optimizer), checkpoint_id=str(tmp / "dcp"))   # collective; files fsynced by DCP
    except Exception as e:  # noqa: BLE001 - DCP raises the same failure on every rank
        err = e
    if dist.main and err is None:
        try:
            (tmp / "state.json").write_text(json.dumps(state))
            files = ["state.json"] + sorted(f"dcp/{p.name}" for p in (tmp / "dcp").iterdir())
            _seal(tmp, files, ckpt_dir, unsynced=["state.json"])   # (DCP fsyncs its own files)
        except Exception as e:  # noqa: BLE001
            err = e
    # every rank leaves together, and with the same outcome: rank 0's
    why = dist.broadcast(None if err is None else f"{type(err).__name__}: {err}")
    if why is not None:
        if dist.main:
            shutil.rmtree(tmp, ignore_errors=True)
        raise OSError(f"checkpoint {ckpt_dir.name}: {why}")
    return ckpt_dir


def _load_sharded(dcp_dir: Path, model, optimizer) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    sd = _state(model, optimizer)
    alone = not (torch.distributed.is_available() and torch.distributed.is_initialized())
    with warnings.catch_warnings():   # DCP warns that one process without a group loads alone: it should
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.load(sd, checkpoint_id=str(dcp_dir), no_dist=alone)   # reshards to this run's processes, one included
    opts = StateDictOptions(ignore_frozen_params=True, strict=False)   # (sd holds every trainable name)
    if optimizer is None:
        from torch.distributed.checkpoint.state_dict import set_model_state_dict

        set_model_state_dict(model, sd["model"], options=opts)
    else:
        set_state_dict(model, optimizer, model_state_dict=sd["model"], optim_state_dict=sd["optim"], options=opts)


def _load_single_into_parallel(ckpt_dir: Path, model, optimizer) -> None:
    """A single-process checkpoint (full tensors; optimiser state keyed by position) into a parallel
    run: keyed by name, then distributed to this rank's shards by set_state_dict."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict, set_state_dict

    msd = load_file(str(ckpt_dir / "trainable.safetensors"))
    opts = StateDictOptions(full_state_dict=True, strict=False)
    if optimizer is None:
        set_model_state_dict(model, msd, options=opts)
        return
    osd = torch.load(ckpt_dir / "optimizer.pt", weights_only=True, map_location="cpu")
    name = {id(p): n for n, p in model.named_parameters()}
    names = [name[id(p)] for g in optimizer.param_groups for p in g["params"]]   # the positions optimizer.pt uses
    osd = {"state": {names[i]: v for i, v in osd["state"].items()},
           "param_groups": [{**g, "params": [names[i] for i in g["params"]]} for g in osd["param_groups"]]}
    set_state_dict(model, optimizer, model_state_dict=msd, optim_state_dict=osd, options=opts)
