"""Ranks: who this process is, and everything the loop does differently when there are several.

Launched by torchrun (`torchrun --nproc-per-node N -m tailorlm train cfg.yaml`), a process reads its
rank from the environment torchrun sets, joins the process group (gloo on CPU, NCCL on CUDA, chosen
from the device) and wraps the model with PyTorch's own data-parallel engines, in place, so the model
keeps its class and attributes (`model.config`, PEFT's `active_peft_config`) and the loss functions
call it as before:

    ddp   torch.distributed._composable.replicate: DistributedDataParallel's reducer (bucketed,
          overlapped all-reduce) attached to the module by hooks instead of a wrapper object.
          Chosen over the DistributedDataParallel wrapper because the loop, the loss and the
          evaluation read attributes of the model, which a wrapper would hide behind `.module`.
    fsdp  torch.distributed.fsdp.fully_shard (FSDP2): every decoder layer, then the root, sharded
          over the ranks; frozen base weights are sharded too, but get neither gradients nor
          optimizer state (the optimizer only ever sees the method's trainable parameters).

Both engines average gradients over ranks. Each rank's loss is its sum of per-token losses divided
by the number of target tokens in the whole global batch, times the world size, so what lands in
.grad is sum over ranks of (loss sum / global target tokens): the same gradient one process
computes on the whole global batch.

One process (no torchrun) gives `Dist()`: world 1, every helper a no-op, nothing imported.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ConfigError


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    mode: str = "none"          # none | ddp | fsdp
    device: str = "cpu"

    @property
    def main(self) -> bool:
        """Rank 0: the one that logs and writes files."""
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.world > 1

    # ---------------------------------------------------------------- small collectives
    def sum(self, *values: float) -> list[float]:
        """Each value summed over all ranks (one all-reduce, float64)."""
        if not self.parallel:
            return list(values)
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64, device=self._comm_device())
        dist.all_reduce(t)
        return t.tolist()

    def broadcast(self, obj):
        """Rank 0's `obj` on every rank (scores, decisions: ranks must never disagree on a branch)."""
        if not self.parallel:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def on_main(self, fn, *args, **kwargs):
        """fn run on rank 0 only (it touches the file system), its result given to every rank."""
        return self.broadcast(fn(*args, **kwargs) if self.main else None)

    def barrier(self) -> None:
        if self.parallel:
            import torch.distributed as dist

            dist.barrier()

    def _comm_device(self) -> str:
        return "cuda" if self.device == "cuda" else "cpu"

    # ---------------------------------------------------------------- the loop's hooks
    def per_rank(self, batch_size: int) -> int:
        """train.batch_size is the global micro-batch; each rank takes an equal share of it."""
        if batch_size % self.world:
            fit = (batch_size // self.world + 1) * self.world
            raise ConfigError(f"train.batch_size={batch_size} is the micro-batch of all {self.world} processes "
                              f"together and must split evenly between them. Fix: train.batch_size={fit}")
        return batch_size // self.world

    def step_examples(self, order, first: int, count: int, local: list[int]) -> list[int]:
        """The example ids of micro-batches first..first+count-1 over all ranks (what rank 0 logs)."""
        if not self.parallel:
            return local
        return [i for g in range(first, first + count) for r in range(self.world)
                for i in order.micro_batch(g, r, self.world)]

    def sync_gradients(self, model, sync: bool) -> None:
        """Gradient accumulation: only the last micro-batch of a step communicates."""
        if self.parallel:
            model.set_requires_gradient_sync(sync)

    @property
    def grad_scale(self) -> float:
        """Multiplies the loss before backward: both engines average over ranks, we want the sum."""
        return float(self.world)

    def clip_grad_norm(self, params: dict, max_norm: float | None) -> torch.Tensor:
        """The global gradient norm (after clipping to max_norm); DTensor gradients under FSDP."""
        if not params:
            return torch.tensor(0.0)
        norm = torch.nn.utils.clip_grad_norm_(list(params.values()), max_norm or float("inf"))
        return norm.full_tensor() if hasattr(norm, "full_tensor") else norm

    # ---------------------------------------------------------------- wrapping and export
    def wrap(self, model, precision: str):
        """The model, data-parallel in place (same object, same class plus the engine's mixin)."""
        if not self.parallel:
            return model
        if self.mode == "ddp":
            from torch.distributed._composable import replicate

            # DDP over the module's parameters only (no buffer broadcasts: rotary tables are equal on
            # every rank), so evaluation forwards under no_grad stay free of collectives
            ids = [torch.cuda.current_device()] if self.device == "cuda" else None
            return replicate(model, device_ids=ids)
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        mesh = init_device_mesh(self._comm_device(), (self.world,))
        mp = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if precision == "bf16"
              else MixedPrecisionPolicy())
        blocks = set(getattr(_base(model), "_no_split_modules", None) or ())
        for m in model.modules():
            if type(m).__name__ in blocks:
                fully_shard(m, mesh=mesh, mp_policy=mp)
        fully_shard(model, mesh=mesh, mp_policy=mp)
        return model

    def save_final(self, method, model, tok, out: Path, rebuild) -> None:
        """final/ through the method's own save. Under parallelism the trained parameters are
        gathered to rank 0 and put into a plain model (`rebuild()`: base + method, unwrapped), so
        final/ is the same ordinary HF folder or PEFT adapter a single process writes."""
        if not self.parallel:
            method.save(model, tok, out)
            return
        from .checkpoint import trainable_state

        full = trainable_state(model, full_state_dict=True, cpu_offload=True)   # collective; rank 0 holds it
        err = None
        if self.main:
            try:
                plain = rebuild()
                own = dict(plain.named_parameters())
                missing = set(full) ^ {n for n, p in own.items() if p.requires_grad}
                if missing:
                    raise ValueError(f"trained and rebuilt parameters differ: {sorted(missing)[:3]}")
                with torch.no_grad():
                    for k, v in full.items():
                        own[k].copy_(v)
                method.save(plain, tok, out)
            except Exception as e:  # noqa: BLE001 - every rank must leave this function together
                err = e
        if self.broadcast(repr(err) if err is not None else None) is not None:
            if err is not None:
                raise err
            raise RuntimeError("rank 0 could not write final/ (see its error)")

    def close(self) -> None:
        """Leave the group together: no rank tears down its connections while another still has
        collective work in flight (the last evaluation's all-gathers under FSDP)."""
        if self.parallel:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.barrier()
                dist.destroy_process_group()


def torchrun_entry(run):
    """`run` as the entry point of a rank under torchrun: torch's `record` writes the rank's error
    where torchrun reads it, so torchrun's summary names the failing rank and its message. A rank
    whose collective failed only because another rank died waits for torchrun to stop it (SIGTERM,
    within a second on the same machine) instead of reporting a second, misleading root cause; on
    another machine, whose torchrun does not see the failed process, it fails after the wait."""
    import sys
    import time

    from torch.distributed.elastic.multiprocessing.errors import record

    def rank_entry(*args, **kwargs):
        try:
            return run(*args, **kwargs)
        except Exception as e:
            if peer_failed(e):
                print(f"[tailorlm] rank {os.environ.get('RANK')}: another rank failed ({e}); waiting to be stopped",
                      file=sys.stderr, flush=True)
                time.sleep(30)
            raise

    return record(rank_entry)


def peer_failed(e: BaseException) -> bool:
    """Did this collective fail because a peer process went away (gloo: its socket closed)?"""
    import torch.distributed as dist

    text = str(e)
    return isinstance(e, dist.DistBackendError) or "closed by peer" in text or "reset by peer" in text


def _base(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def init(parallel: str, device: str) -> Dist:
    """This process's place in the job, from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK,
    MASTER_ADDR/PORT); joins the process group. Without torchrun: one process, nothing to do."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist(device=device)
    if parallel == "none":
        raise ConfigError(f"launched as {world} processes (WORLD_SIZE={world}) but train.parallel is none. "
                          "Fix: train.parallel=ddp (replicated weights) or train.parallel=fsdp (sharded)")
    import torch.distributed as dist

    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda":
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        if device == "cuda":
            dist.init_process_group("nccl", device_id=torch.device("cuda", local))
        else:
            dist.init_process_group("gloo")
    return Dist(rank=rank, world=world, mode=parallel, device=device)
