"""The comparison's grid: configs x methods x seeds x training-set sizes, each cell an ordinary run
named by what it varies, with the dotted overrides that make it.

What is held fixed, so that only the method differs:

  data        every run of one training-set size reads the same rows. A size N is the first N rows
              of ONE seeded shuffle (seed 0) of the training pool, so a smaller set is a prefix of a
              larger one; the held-out validation rows are carved out once (seed 0) and shared, and
              a classifier's labels are pinned from the whole pool (a 16-row subset may miss one).
  data order  train.seed is the same for every method of one seed index, and the batch order is a
              function of (rows, batch size, train.seed) alone (data/batching.py Order).
  tokens      steps x (batch_size x grad_accum) x max_length is the same for every run of one size
              (checked: a grid whose runs differ there fails with the keys to set).

What the seed varies: seed index k runs with train.seed = the config's seed + k, which drives the
batch order, the method's initialisation (LoRA's A, the adapters' down-projections, sampled prompt
embeddings), the few-shot demonstrations, the retention probe's base-model samples and, without
--train-sizes, the validation split carved from data.train. The spread over seeds is therefore the
spread a user would see rerunning one method, which is what a difference between methods is held to.
"""
from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

from ..atomic import write_text
from ..config import Config, load_config
from ..data import detect_format, read_rows, split_rows
from ..errors import ConfigError

PEAK_CALLBACK = "tailorlm.compare.measure:PeakMemory"   # logs the training window's peak memory
DATA_SEED = 0     # the one shuffle every training-set size is a prefix of


@dataclass(frozen=True)
class RunSpec:
    name: str                    # folder under COMPARE/runs/
    label: str                   # the configuration compared (a table row): config name and/or method
    config: str                  # the config file
    method: str
    seed: int                    # seed index (train.seed = config's seed + this)
    size: int | None             # training rows; None: the config's own data
    overrides: tuple[str, ...]   # `tailorlm train CONFIG <these> output.dir=...`


def split_overrides(items: list[str], methods: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """(overrides for every run, {method: overrides for its runs only}); `lora:train.lr=1e-3` is the
    second kind, so each method can keep its own learning rate in one grid."""
    common, per = [], {}
    for item in items:
        head, sep, rest = item.partition(":")
        if sep and "=" in rest and "=" not in head and "." not in head:
            if methods and head not in methods:
                raise ConfigError(f"override {item!r} names method {head!r}, which is not compared "
                                  f"({', '.join(methods)}). Fix: one of those, or drop the prefix")
            per.setdefault(head, []).append(rest)
        else:
            common.append(item)
    return common, per


def expand(configs: list[str], root: Path, *, methods: list[str] | None = None, seeds: int = 1,
           sizes: list[int] | None = None, overrides: list[str] = (), fewshot: int = 0) -> list[RunSpec]:
    """Every run of the grid, in the order they run: seed index outermost, so a compare stopped early
    has every method at seed 0 first. `fewshot`: eval.fewshot for configs that leave it at 0 (the
    base model's k-shot score, the baseline tuning must beat)."""
    if not configs:
        raise ConfigError("compare needs at least one config file. Fix: tailorlm compare CFG [CFG...]")
    if seeds < 1:
        raise ConfigError(f"--seeds {seeds}: at least 1")
    common, per = split_overrides(list(overrides), methods or [])
    stems = [_safe(Path(c).stem) for c in configs]
    if len(set(stems)) < len(stems):
        raise ConfigError(f"two configs share a name ({', '.join(stems)}); runs are named after them. "
                          "Fix: rename one")
    cells = []   # (label, config, method, overrides before seed/data)
    for path, stem in zip(configs, stems):
        own = load_config(path, common).method.name
        for m in methods or [own]:
            label = stem if not methods else m if len(configs) == 1 else f"{stem}-{m}"
            swap = [] if m == own else [f"method={_flow({'name': m})}"]   # another method: its defaults
            ov = [*common, *swap, *per.get(m, [])]
            if fewshot and not load_config(path, ov).eval.fewshot:
                ov.append(f"eval.fewshot={fewshot}")
            cells.append((label, path, m, ov))
    runs = []
    for k in range(seeds):
        for size in sizes or [None]:
            for label, path, m, ov in cells:
                cfg = load_config(path, ov)
                extra = [f"train.seed={cfg.train.seed + k}"]
                if size is not None:
                    extra += subset(cfg, size, root)
                cbs = [c for c in cfg.train.callbacks if c != PEAK_CALLBACK] + [PEAK_CALLBACK]
                extra.append(f"train.callbacks={_flow(cbs)}")
                name = label + (f"-n{size}" if size is not None else "") + f"-s{k}"
                runs.append(RunSpec(name, label, path, m, k, size, tuple(ov + extra)))
    check_budget(runs)
    return runs


def budget(cfg: Config) -> tuple[int, int, int]:
    """(steps, examples per step, tokens per example): the token budget of a run."""
    t = cfg.train
    return t.steps, t.batch_size * t.grad_accum, cfg.data.max_length


def check_budget(runs: list[RunSpec]) -> None:
    """Every run of one training-set size has the same steps x batch x max_length, else ConfigError."""
    seen: dict = {}
    for r in runs:
        cfg = load_config(r.config, list(r.overrides))
        if cfg.train.epochs is not None:
            raise ConfigError(f"{r.config} sets train.epochs, so its steps depend on its data; a comparison gives "
                              "every run the same budget. Fix: --steps N")
        seen.setdefault(r.size, {})[r.name] = budget(cfg)
    for size, got in seen.items():
        if len(set(got.values())) > 1:
            rows = ", ".join(f"{n}: {s} steps x {b} x {L} tokens" for n, (s, b, L) in got.items())
            raise ConfigError(f"the runs do not have the same token budget ({rows}). Fix: --steps N and, where "
                              "they differ, train.batch_size=B data.max_length=L for every run")


def subset(cfg: Config, size: int, root: Path) -> list[str]:
    """Overrides that make a run read the first `size` rows of the shared shuffle, writing the files
    once into ROOT/data/ (the held-out rows too; a classifier's labels pinned)."""
    d = cfg.data
    if not isinstance(d.train, str):
        raise ConfigError("--train-sizes draws subsets of one training file; data.train lists several. "
                          "Fix: one data.train file")
    key = json.dumps([str(Path(d.train).resolve()), d.val and str(Path(d.val).resolve()), d.val_fraction,
                      d.val_max, d.limit])
    folder = root / "data" / f"{_safe(Path(d.train).stem)}-{hashlib.sha1(key.encode()).hexdigest()[:8]}"
    pool_file, val_file = folder / "pool.jsonl", folder / (Path(d.val).name if d.val else "val.jsonl")
    if not pool_file.is_file():
        rows = read_rows(d.train, d.on_error).rows
        rows = rows[: d.limit] if d.limit else rows
        pool, val = (rows, None) if d.val else split_rows(rows, d.val_fraction, d.val_max, DATA_SEED)
        random.Random(DATA_SEED).shuffle(pool)
        if val is not None:
            _write_rows(val_file, val)
        _write_rows(pool_file, pool)   # last: its presence says the folder is complete
    pool = read_rows(str(pool_file)).rows
    if size > len(pool) or size < 1:
        raise ConfigError(f"--train-sizes {size}: {d.train} has {len(pool)} training rows (after the held-out "
                          f"split). Fix: sizes from 1 to {len(pool)}")
    train_file = folder / f"train-{size}.jsonl"
    if not train_file.is_file():
        _write_rows(train_file, pool[:size])
    out = [f"data.train={_flow(str(train_file.resolve()))}", "data.limit=null"]
    out.append(f"data.val={_flow(str(Path(d.val).resolve() if d.val else val_file.resolve()))}")
    if not d.labels and detect_format(pool, d) == "classification":
        key = d.label_field or "label"
        labels = sorted({str(r[key]) for r in pool if r.get(key) not in (None, "")})
        out.append(f"data.labels={_flow(labels)}")
    return out


def _write_rows(path: Path, rows: list[dict]) -> None:
    """JSONL without the reader's bookkeeping fields (_file, _line)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, "".join(json.dumps({k: v for k, v in r.items() if not k.startswith("_")}, ensure_ascii=False)
                             + "\n" for r in rows))


def _flow(value) -> str:
    """A value for a dotted override: JSON (which YAML reads) without spaces, one shell word."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "run"
