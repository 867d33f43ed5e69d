"""Stages of a continual plan: their data written once into the plan's folder in the form one model
trains on, and the score of a model on a stage (a column of the matrix R)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..atomic import write_text
from ..config import DataConfig
from ..data import Formatter, detect_format, read_rows, split_rows
from ..data.tokenize import tokenize_rows
from ..errors import ConfigError
from ..eval.metrics import val_loss
from ..eval.specs import MetricSpec, register_metrics
from ..eval.tasks import label_accuracy

HELD_OUT = 200   # scored rows carved from train when a stage names no test file

# a stage's column unit (accuracy is the accuracy evaluator's own spec)
register_metrics("continual", {"neg_nll": MetricSpec(
    "higher", "nats/token", hi=0.0, doc="negative mean NLL of a stage's held-out answers")})


@dataclass
class Stage:
    name: str
    fmt: str                     # the trained form: instruction (classification stages too), text or chat
    train: Path                  # JSONL in the plan's folder
    heldout: Path                # the rows R scores: the stage's test file, else carved from train
    labels: list[str] | None     # classification: the candidates scored by label likelihood
    data: dict                   # the `data:` section a stage's run trains on
    metric: str                  # accuracy | neg_nll


def prepare_stages(specs: list[dict], root: Path, tok, seed: int = 0) -> list[Stage]:
    """Each stage's rows as the model trains on them, written once under root/data/<name>/."""
    return [_prepare(spec, root / "data" / spec["name"], tok, seed) for spec in specs]


def _prepare(spec: dict, folder: Path, tok, seed: int) -> Stage:
    keys = {k: v for k, v in spec.items() if k != "name"}
    try:
        dcfg = DataConfig(**keys)
    except Exception as e:   # pydantic: name the stage and the key
        raise ConfigError(f"stage {spec['name']}: {e}") from None
    rows = read_rows(dcfg.train, dcfg.on_error).rows[: dcfg.limit]
    if dcfg.test:
        heldout = read_rows(dcfg.test, dcfg.on_error).rows
    else:
        rows, heldout = split_rows(rows, min(0.5, HELD_OUT / max(len(rows), 1)), HELD_OUT, seed)
    # the validation rows (the stage run's best checkpoint and early stop) are never the scored ones:
    # the stage's val file, else data.val_fraction of its training rows (at most data.val_max)
    if dcfg.val:
        val = read_rows(dcfg.val, dcfg.on_error).rows
    else:
        rows, val = split_rows(rows, dcfg.val_fraction, dcfg.val_max, seed)
    fmt = detect_format(rows, dcfg)
    labels = (dcfg.labels or sorted({str(r[dcfg.label_field or "label"]) for r in rows})) \
        if fmt == "classification" else None
    fm = Formatter(fmt, tok, dcfg, labels)
    convert = _as_instruction(fm) if fmt in ("classification", "instruction") else dict
    trained = "instruction" if fmt in ("classification", "instruction") else fmt
    folder.mkdir(parents=True, exist_ok=True)
    paths = folder / "train.jsonl", folder / "heldout.jsonl", folder / "val.jsonl"
    # a folder from before the validation slice (train and heldout only) keeps validating on heldout:
    # its stages already trained on all of train.jsonl
    legacy = paths[0].is_file() and not paths[2].is_file()
    for path, part in zip(paths, (rows, heldout) if legacy else (rows, heldout, val)):
        if not path.is_file():   # written once: a resumed plan trains on exactly the same rows
            write_rows(path, [convert(r) for r in part])
    data = {"train": str(paths[0]), "val": str(paths[1 if legacy else 2]), "format": trained,
            "max_length": dcfg.max_length, "too_long": dcfg.too_long, "system": dcfg.system,
            "chat_template": dcfg.chat_template, "packing": dcfg.packing, "audit": False}
    return Stage(spec["name"], trained, paths[0], paths[1], labels, data,
                 "accuracy" if fmt == "classification" else "neg_nll")


def _as_instruction(fm: Formatter):
    def convert(row: dict) -> dict:
        prompt, response = fm.prompt_response(row)   # the stage's template rendered, its labels listed
        return {"prompt": prompt, "response": response}
    return convert


def write_rows(path: Path, rows: list[dict]) -> None:
    """Rows as JSONL, without the reader's bookkeeping (_file, _line, _replayed, ...)."""
    write_text(path, "".join(json.dumps({k: v for k, v in r.items() if not k.startswith("_")}) + "\n" for r in rows))


def stage_rows(stage: Stage, which: str = "heldout") -> list[dict]:
    return read_rows(stage.heldout if which == "heldout" else stage.train, "stop").rows


def score(model, stage: Stage, tok, *, device: str, precision: str, n: int, batch_size: int = 16) -> float:
    """The stage's column of R (measure's "score")."""
    return measure(model, stage, tok, device=device, precision=precision, n=n, batch_size=batch_size)["score"]


@torch.no_grad()
def measure(model, stage: Stage, tok, *, device: str, precision: str, n: int, batch_size: int = 16) -> dict:
    """{"score": the stage's column of R, accuracy by label likelihood over the stage's own labels or
    the negative per-token NLL of its held-out targets (instruction answers, text)}; a classification
    stage adds "majority" (always answering its most common class) and, when the model answered one
    label for every held-out row, "collapsed" (that label: its accuracy is that class's rate)."""
    rows = stage_rows(stage)[:n]
    dcfg = DataConfig(**{**stage.data, "train": str(stage.train)})
    fm = Formatter(stage.fmt, tok, dcfg, stage.labels)
    if stage.metric == "accuracy":
        rep = label_accuracy(model, fm, rows, device=device, precision=precision, batch_size=batch_size)
        return {"score": rep["accuracy"], "majority": rep["majority"], "collapsed": rep.get("collapsed")}
    examples, _ = tokenize_rows(rows, stage.fmt, tok, dcfg, None, fm)
    loss = val_loss(model, examples, pad_id=tok.pad_token_id, device=device, precision=precision,
                    batch_size=batch_size, row_tokens=dcfg.max_length)["loss"]
    return {"score": -loss}
