"""Reading a checkpoint into a run, all or nothing (checkpoint.py's `read` and `load`).

Hashes prove a file is what was written, not that it loads into this run: a file swapped with the
manifest rewritten, or a bug that wrote the wrong tensor, verifies and still does not fit. So every
file is read into fresh tensors and checked (every trainable parameter's name, shape and dtype, the
optimizer's groups and the shapes of its moments) before anything is assigned: a checkpoint that
fails raises Unloadable and leaves the model and optimizer as they were, for the caller to try an
older one. A read error of the disk itself (permissions, memory) is raised as it is: it says nothing
about the checkpoint, which must not be thrown away for it.
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file

from . import checkpoint_dcp
from .checkpoint import Unloadable, _state_problem, describe


@dataclass
class Loaded:
    """A checkpoint read and checked against the run, nothing assigned yet: `state` is state.json,
    `apply()` puts the parameters (and optimizer state) into the run's model (and optimizer)."""
    state: dict
    apply: Callable[[], None]


def read(ckpt_dir: Path, *, model, optimizer=None, dist=None) -> Loaded:
    """Every file of the checkpoint read into fresh tensors and checked against the run: each trainable
    parameter by name, shape and dtype, the optimizer's groups and the shape of its state. Raises
    Unloadable (the file and why) for anything that does not fit; the model and optimizer stay as they
    were until `apply()`. Denied permission and exhausted memory are raised as they are: they say
    nothing about the checkpoint."""
    why = _state_problem(ckpt_dir)
    if why is not None:
        raise Unloadable(why)
    state = json.loads((ckpt_dir / "state.json").read_text())
    if (ckpt_dir / "dcp").is_dir():
        return Loaded(state, checkpoint_dcp.read_sharded(ckpt_dir / "dcp", model, optimizer))
    params = _read_params(ckpt_dir / "trainable.safetensors", model)
    osd = None if optimizer is None else _read_optimizer(ckpt_dir / "optimizer.pt", optimizer)
    if dist is not None and dist.parallel:
        return Loaded(state, checkpoint_dcp.read_single_into_parallel(model, optimizer, params, osd))
    return Loaded(state, lambda: _assign(model, optimizer, params, osd))


def load(ckpt_dir: Path, *, model, optimizer=None, dist=None) -> dict:
    """Parameters (and optimizer state) into `model`, whichever format the checkpoint has and however
    many processes wrote it, all or nothing (see `read`); returns state.json."""
    loaded = read(ckpt_dir, model=model, optimizer=optimizer, dist=dist)
    loaded.apply()
    return loaded.state


def _shape(t) -> str:
    return f"{tuple(t.shape)} {str(t.dtype).removeprefix('torch.')}"


def _read_params(f: Path, model) -> dict[str, torch.Tensor]:
    try:
        params = load_file(str(f))
    except (MemoryError, PermissionError):
        raise
    except Exception as e:  # noqa: BLE001 - SafetensorError, a missing file: the checkpoint cannot be read
        raise Unloadable(f"{f.name} cannot be read ({describe(e)})") from None
    own = {n: p for n, p in model.named_parameters() if p.requires_grad}
    unknown, missing = sorted(set(params) - set(own)), sorted(set(own) - set(params))
    if unknown or missing:
        raise Unloadable(f"{f.name} does not fit this run (parameters this run lacks: {unknown[:3]}; this run's "
                         f"that it lacks: {missing[:3]})")
    for n, t in params.items():
        if tuple(t.shape) != tuple(own[n].shape) or t.dtype != own[n].dtype:
            raise Unloadable(f"{f.name} does not fit this run ({n} is {_shape(t)}, this run's is {_shape(own[n])})")
    return params


def _read_optimizer(f: Path, optimizer) -> dict:
    try:
        sd = torch.load(f, weights_only=True, map_location="cpu")
    except (MemoryError, PermissionError):
        raise
    except Exception as e:  # noqa: BLE001 - a payload, a truncated zip: the checkpoint cannot be read
        raise Unloadable(f"{f.name} cannot be loaded safely ({describe(e)})") from None
    why = _optimizer_misfit(sd, optimizer)
    if why is not None:
        raise Unloadable(f"{f.name} does not fit this run ({why})")
    return sd


def _optimizer_misfit(sd, optimizer) -> str | None:
    """What torch's load_state_dict would accept and the first step then fail on: groups of other
    sizes, state for a parameter this run lacks, moments of another shape than their parameter."""
    if not (isinstance(sd, dict) and isinstance(sd.get("state"), dict) and isinstance(sd.get("param_groups"), list)):
        return "not an optimizer state"
    saved, own = sd["param_groups"], optimizer.param_groups
    sizes = [len(g["params"]) if isinstance(g, dict) and isinstance(g.get("params"), list) else None for g in saved]
    if sizes != [len(g["params"]) for g in own]:
        return f"parameter groups of {sizes} parameters, this run's of {[len(g['params']) for g in own]}"
    by_id = {i: p for g, mine in zip(saved, own) for i, p in zip(g["params"], mine["params"])}
    for i, st in sd["state"].items():
        if i not in by_id or not isinstance(st, dict):
            return f"state for a parameter this run does not have ({i!r})"
        for k, v in st.items():
            if isinstance(v, torch.Tensor) and v.dim() > 0 and tuple(v.shape) != tuple(by_id[i].shape):
                return f"{k} of parameter {i} is {tuple(v.shape)}, the parameter {tuple(by_id[i].shape)}"
    return None


def _assign(model, optimizer, params: dict, osd: dict | None) -> None:
    """Checked state into the run: the optimizer first (put back as it was if torch still refuses),
    then the parameters, whose copies cannot fail once names, shapes and dtypes match."""
    if optimizer is not None:
        before = copy.deepcopy(optimizer.state_dict())
        try:
            optimizer.load_state_dict(osd)
        except (ValueError, KeyError, TypeError, RuntimeError) as e:
            optimizer.load_state_dict(before)
            raise Unloadable(f"optimizer.pt does not fit this run ({describe(e)})") from None
    own = dict(model.named_parameters())
    with torch.no_grad():
        for k, v in params.items():
            own[k].copy_(v)
