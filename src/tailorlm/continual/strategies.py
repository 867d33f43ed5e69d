"""Continual strategies: how stage t starts, what it trains on, what it is penalised by, and which
model scores task i after it. One registry entry each; the loop is never edited, they plug in
through `model.init_from`, the training rows, callbacks with an `extra_loss`, and `eval_model`.

    naive             each stage starts from the previous stage's model
    replay            + a reservoir buffer of earlier stages' rows mixed into each stage's rows
                      (Rolnick et al. 2019, "Experience Replay for Continual Learning")
    ewc               + lambda * sum F (theta - theta*)^2, theta* the previous stage's end, F the online
                      Fisher: F_t = decay * F_(t-1) + diag Fisher of stage t (Schwarz et al. 2018), each
                      the mean of per-example squared gradients of log p(y|x) on the stage's own training
                      rows at its end (Kirkpatrick et al. 2017; regularizers.fisher_diagonal)
    l2sp              + lambda * sum (theta - theta*)^2 (Li et al. 2018), anchored the same way
    distill           + lambda * T^2 * KL(prev_T || current_T) on the stage's own inputs, prev = the
                      previous stage's model (Li & Hoiem 2017, Learning without Forgetting)
    olora             a new LoRA per stage, earlier ones frozen and active, + lambda1 * sum |A_old A_new^T|
                      + lambda2 * sum ||new LoRA tensor||_2 (Wang et al. 2023)            (olora.py)
    adapter_per_task  a fresh adapter per stage from the base; task i is scored with its own adapter
                      (the task's identity is used at inference)                          (olora.py)
"""
from __future__ import annotations

import json
import random
from pathlib import Path

from safetensors.torch import load_file, save

from ..atomic import write_bytes, write_text
from ..data.batching import Order
from ..retention import regularizers as reg
from ..train import Callback
from ..train.view import RunView
from .olora import AdapterPerTask, OLoRA
from .stages import Stage


class Naive:
    """Stage t starts from stage t-1's final model; nothing else."""
    needs_same_format = False

    def __init__(self, scfg, folder: Path):
        self.s, self.folder = scfg, folder

    def stage_config(self, t: int, raw: dict, prev: Path | None) -> dict:
        if prev is not None:
            raw["model"] = {**raw["model"], "init_from": str(prev)}
        return raw

    def train_rows(self, t: int, stage: Stage, rows: list[dict]) -> list[dict]:
        return rows

    def start_model(self, t: int, cfg):
        return None

    def callbacks(self, t: int, stage: Stage) -> list:
        return []

    def after_stage(self, t: int, stage: Stage, model, cfg, tok) -> None:
        """Whatever the next stage needs from this one (buffers, anchors), saved under self.folder."""

    def eval_model(self, t: int, i: int, final_model, load):
        """The model that scores task i (0-based training order) after stage t: the stage's own."""
        return final_model


class Reservoir:
    """A uniform sample of at most `cap` of all rows seen (Vitter's algorithm R), seeded and saved."""

    def __init__(self, cap: int, seed: int, path: Path):
        self.cap, self.path = cap, path
        st = json.loads(path.read_text()) if path.is_file() else {"seen": 0, "items": [], "rng": None}
        self.seen, self.items = st["seen"], st["items"]
        self.rng = random.Random(seed)
        if st["rng"] is not None:
            self.rng.setstate((st["rng"][0], tuple(st["rng"][1]), st["rng"][2]))

    def add(self, rows: list[dict]) -> None:
        for r in rows:
            self.seen += 1
            if len(self.items) < self.cap:
                self.items.append(r)
            else:
                j = self.rng.randrange(self.seen)
                if j < self.cap:
                    self.items[j] = r

    def save(self) -> None:
        st = self.rng.getstate()
        write_text(self.path, json.dumps({"seen": self.seen, "items": self.items, "rng": [st[0], list(st[1]), st[2]]}))


class Replay(Naive):
    """Earlier stages' rows (a reservoir of `buffer` rows) make up `ratio` of each stage's rows."""
    needs_same_format = True

    def train_rows(self, t: int, stage: Stage, rows: list[dict]) -> list[dict]:
        buf = Reservoir(self.s.buffer, self.s.seed, self.folder / "buffer.json")
        if not buf.items:
            return rows
        k = round(self.s.ratio * len(rows) / (1 - self.s.ratio))
        rng = random.Random(self.s.seed + t)
        replayed = [dict(r, _replayed=True) for r in (rng.choices(buf.items, k=k) if k > len(buf.items)
                                                       else rng.sample(buf.items, k))]
        return rows + replayed

    def after_stage(self, t: int, stage: Stage, model, cfg, tok) -> None:
        from .stages import stage_rows

        buf = Reservoir(self.s.buffer, self.s.seed, self.folder / "buffer.json")
        buf.add([{**{k: v for k, v in r.items() if not k.startswith("_")}, "_stage": stage.name}
                 for r in stage_rows(stage, "train")])
        buf.save()


class Anchored(Naive):
    """EWC (online Fisher) or L2-SP: a penalty toward the previous stage's end."""

    def callbacks(self, t: int, stage: Stage) -> list:
        anchor = self.folder / "anchor.safetensors"
        if t == 1 or not anchor.is_file():
            return []
        fisher = self.folder / "fisher.safetensors"
        return [AnchorPenalty(load_file(str(anchor)), load_file(str(fisher)) if self.s.name == "ewc" else None,
                              self.s.weight)]

    def after_stage(self, t: int, stage: Stage, model, cfg, tok) -> None:
        from ..config import DataConfig
        from ..data import build_data

        params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        write_bytes(self.folder / "anchor.safetensors",   # (atomic: a kill leaves the previous stage's)
                    save({n: p.detach().float().contiguous().cpu() for n, p in params.items()}))
        if self.s.name != "ewc":
            return
        data = build_data(DataConfig(**{**stage.data, "val": None}), tok, seed=self.s.seed)
        # the stage's own training data (Kirkpatrick et al.: the Fisher of the task just learnt, at its
        # end); fisher_diagonal takes a bounded, evenly spread sample of it, one gradient per example
        f = reg.fisher_diagonal(model, params, data.train, pad_id=tok.pad_token_id)
        path = self.folder / "fisher.safetensors"
        if path.is_file():   # online EWC: the earlier stages' importance decays, the new one adds
            old = load_file(str(path))
            f = {n: self.s.decay * old[n] + v for n, v in f.items()}
        write_bytes(path, save({n: v.contiguous().cpu() for n, v in f.items()}))


class AnchorPenalty(Callback):
    """EWC / L2-SP toward the previous stage's end, through the one loss seam (train/callbacks.py
    extra_loss: a tensor, logged as `extra_loss`); `run` is a train.view.RunView."""

    def __init__(self, anchor: dict, fisher: dict | None, weight: float):
        self.anchor, self.fisher, self.weight = anchor, fisher, weight

    def extra_loss(self, run: RunView):
        params = {n: p for n, p in run.params.items() if n in self.anchor}
        anchor = {n: a.to(params[n].device) for n, a in self.anchor.items() if n in params}
        if self.fisher is None:
            return reg.l2sp(params, anchor, self.weight)
        fisher = {n: f.to(params[n].device) for n, f in self.fisher.items() if n in params}
        return reg.ewc(params, anchor, fisher, self.weight)


class Distill(Naive):
    """Learning without Forgetting: the previous stage's model, frozen, teaches on this stage's inputs."""

    def callbacks(self, t: int, stage: Stage) -> list:
        return [] if t == 1 else [PreviousTeacher(self.s.weight, self.s.temperature, self.s.seed + t)]


class PreviousTeacher(Callback):
    """Distillation from the previous stage's model on this stage's inputs, as AnchorPenalty's seam."""

    def __init__(self, weight: float, temperature: float, seed: int):
        self.weight, self.temperature, self.seed, self.teacher = weight, temperature, seed, None

    def on_start(self, run: RunView) -> None:
        """The model as the stage starts is the previous stage's end (a resumed stage rebuilds it from
        the previous stage's final/, not from the resumed weights)."""
        from ..run import open_run

        prev = open_run(run.cfg.model.init_from).model
        self.teacher = prev.to(run.device).requires_grad_(False).eval()
        self.order = Order(len(run.data.train), max(1, run.cfg.train.batch_size // 2), self.seed)

    def extra_loss(self, run: RunView):
        batch = run.make_batch([run.data.train[i] for i in self.order.micro_batch(run.step)]).to(run.device)
        return reg.distill(run.model, self.teacher, batch, self.weight, self.temperature)


STRATEGIES = {"naive": Naive, "replay": Replay, "ewc": Anchored, "l2sp": Anchored, "distill": Distill,
              "olora": OLoRA, "adapter_per_task": AdapterPerTask}

