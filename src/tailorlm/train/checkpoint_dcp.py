"""Checkpoints of a run of several processes: torch.distributed.checkpoint (DCP), read safely.

Each rank writes its own shards into `dcp/`, rank 0 adds state.json and, after every rank is done,
the manifest (checkpoint.py's format, its hashes, its atomic rename). State is keyed by parameter name
(get_state_dict / set_state_dict), not by shard, so such a checkpoint loads into any number of
processes, one included (DCP loads without a process group), and a single-process checkpoint loads
into a parallel run.

DCP itself unpickles two things without torch's weights_only guard: `dcp/.metadata` (pickle.load)
and every non-tensor value (torch.load(weights_only=False)), so a checkpoint whose files were swapped
with the manifest rewritten could run code on resume. Here the metadata goes through an unpickler
that builds only DCP's own metadata classes and torch's dtypes, and the values through
torch.load(weights_only=True). Reading fills copies of the run's tensors: a checkpoint that fails
leaves the model and optimizer as they were, and `apply()` assigns only after everything was read.
"""
from __future__ import annotations

import json
import pickle
import shutil
import warnings
from pathlib import Path

import torch
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner

from ..atomic import temp_dir_beside


def trainable_state(model, **options) -> dict:
    """The model's trainable parameters by name, through DCP's get_model_state_dict (sharded DTensors
    under FSDP; `full_state_dict=True, cpu_offload=True` gathers them to rank 0). A frozen weight tied
    to another (a tied LM head) slips through ignore_frozen_params, so names are checked here."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    own = {n for n, p in model.named_parameters() if p.requires_grad}
    sd = get_model_state_dict(model, options=StateDictOptions(ignore_frozen_params=True, **options))
    return {k: v for k, v in sd.items() if k in own}


def _state(model, optimizer) -> dict:
    """{"model": trainable parameters by name[, "optim": optimizer state by parameter name]}: sharded
    (DTensor) under FSDP, plain tensors otherwise."""
    if optimizer is None:
        return {"model": trainable_state(model)}
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return {"model": trainable_state(model),
            "optim": get_optimizer_state_dict(model, optimizer, options=StateDictOptions(ignore_frozen_params=True))}


def save_sharded(ckpt_dir: Path, *, model, optimizer, state: dict, dist) -> Path:
    import torch.distributed.checkpoint as dcp

    from .checkpoint import _seal, failure

    def make_tmp():
        t = temp_dir_beside(ckpt_dir)
        (t / "dcp").mkdir()
        return str(t)

    tmp = Path(dist.on_main(make_tmp))
    err = None
    try:
        dcp.save(_state(model, optimizer), checkpoint_id=str(tmp / "dcp"))   # collective; files fsynced by DCP
    except (Exception, CheckpointException) as e:  # noqa: BLE001 - DCP raises the same failure on every rank
        err = failure(ckpt_dir, _cause(e), "dcp/")
    if dist.main and err is None:
        try:
            (tmp / "state.json").write_text(json.dumps(state))
            files = ["state.json"] + sorted(f"dcp/{p.name}" for p in (tmp / "dcp").iterdir())
            _seal(tmp, files, ckpt_dir, unsynced=["state.json"])   # (DCP fsyncs its own files)
        except Exception as e:  # noqa: BLE001
            err = failure(ckpt_dir, e, "state.json")
    # every rank leaves together, and with the same outcome: rank 0's
    why = dist.broadcast(None if err is None else err.args)
    if why is not None:
        if dist.main:
            shutil.rmtree(tmp, ignore_errors=True)
        raise OSError(*why)
    return ckpt_dir


# ---------------------------------------------------------------- reading without running anything

class _MetadataUnpickler(pickle.Unpickler):
    """Builds DCP's metadata (its own dataclasses and enums, paths, torch's sizes, dtypes and layouts)
    and nothing else: no callable a payload could name."""
    MODULES = ("torch.distributed.checkpoint.metadata", "torch.distributed.checkpoint.filesystem")
    OTHERS = {("torch", "Size"), ("torch.serialization", "_get_layout"), ("collections", "OrderedDict"),
              ("pathlib", "PosixPath"), ("pathlib", "WindowsPath"), ("pathlib", "PurePosixPath"),
              ("pathlib", "PureWindowsPath")}

    def find_class(self, module: str, name: str):
        import importlib

        if module in self.MODULES:
            obj = getattr(importlib.import_module(module), name, None)
            if isinstance(obj, type) and obj.__module__ == module:   # a class of DCP's own (no functions)
                return obj
        elif (module, name) in self.OTHERS:
            return super().find_class(module, name)
        elif module == "torch" and isinstance(getattr(torch, name, None), (torch.dtype, torch.layout,
                                                                          torch.memory_format)):
            return getattr(torch, name)
        raise pickle.UnpicklingError(f"it names {module}.{name}, which is not checkpoint metadata")


class SafeReader(FileSystemReader):
    def read_metadata(self, *args, **kwargs):
        with open(Path(self.path) / ".metadata", "rb") as fh:
            metadata = _MetadataUnpickler(fh).load()
        from torch.distributed.checkpoint.metadata import Metadata, StorageMeta

        if not isinstance(metadata, Metadata):
            raise pickle.UnpicklingError(f"it holds a {type(metadata).__name__}, not DCP metadata")
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


class SafePlanner(DefaultLoadPlanner):
    def load_bytes(self, read_item, value) -> None:
        from torch.distributed.checkpoint._traverse import set_element

        obj = torch.load(value, weights_only=True)   # (DCP's own planner: weights_only=False)
        if self.flatten_state_dict:
            set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], obj)
        else:
            self.state_dict[read_item.dest_index.fqn] = obj


def unreadable(dcp_dir: Path) -> str | None:
    """Why dcp/.metadata cannot be read safely (None: it can), before any model exists."""
    try:
        SafeReader(str(dcp_dir)).read_metadata()
    except (OSError, MemoryError):
        raise
    except Exception as e:  # noqa: BLE001 - a payload, a truncated or foreign pickle: not this checkpoint
        from .checkpoint import describe

        return f"dcp/.metadata cannot be read safely ({describe(e)})"
    return None


def read_sharded(dcp_dir: Path, model, optimizer):
    """DCP's shards into copies of this run's state (resharded to its processes, one included);
    returns the function that assigns them. Raises Unloadable for anything that does not load."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict, set_state_dict
    from torch.utils._pytree import tree_map_only

    from .checkpoint import Unloadable, describe

    sd = tree_map_only(torch.Tensor, lambda t: t.detach().clone(), _state(model, optimizer))
    alone = not (torch.distributed.is_available() and torch.distributed.is_initialized())
    try:
        with warnings.catch_warnings():   # DCP warns that one process without a group loads alone: it should
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
            dcp.load(sd, storage_reader=SafeReader(str(dcp_dir)), planner=SafePlanner(), no_dist=alone)
    except (MemoryError, PermissionError):
        raise
    except (Exception, CheckpointException) as e:  # noqa: BLE001 - shapes, names, a payload: it does not fit
        raise Unloadable(f"dcp/ does not load into this run ({describe(_cause(e))})") from None
    opts = StateDictOptions(ignore_frozen_params=True, strict=False)   # (sd holds every trainable name)
    if optimizer is None:
        return lambda: set_model_state_dict(model, sd["model"], options=opts)
    return lambda: set_state_dict(model, optimizer, model_state_dict=sd["model"], optim_state_dict=sd["optim"],
                                  options=opts)


def _cause(e: BaseException) -> BaseException:
    """What failed inside DCP's CheckpointException (a BaseException carrying each rank's exception)."""
    failures = getattr(e, "failures", None)
    if isinstance(e, CheckpointException) and failures:
        first = next(iter(failures.values()))
        return first[0] if isinstance(first, tuple) else first
    return e


def read_single_into_parallel(model, optimizer, params: dict, osd: dict | None):
    """A single-process checkpoint (full tensors, already checked against this run; optimizer state keyed
    by position) into a parallel run: keyed by name, then distributed to this rank's shards by
    set_state_dict. Returns the function that assigns them."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict, set_state_dict

    opts = StateDictOptions(full_state_dict=True, strict=False)
    if optimizer is None:
        return lambda: set_model_state_dict(model, params, options=opts)
    name = {id(p): n for n, p in model.named_parameters()}
    saved = [i for g in osd["param_groups"] for i in g["params"]]   # the ids optimizer.pt uses, group by group
    names = dict(zip(saved, (name[id(p)] for g in optimizer.param_groups for p in g["params"])))
    osd = {"state": {names[i]: v for i, v in osd["state"].items()},
           "param_groups": [{**g, "params": [names[i] for i in g["params"]]} for g in osd["param_groups"]]}
    return lambda: set_state_dict(model, optimizer, model_state_dict=params, optim_state_dict=osd, options=opts)
