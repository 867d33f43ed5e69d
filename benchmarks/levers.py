#!/usr/bin/env python
"""What each speed lever buys: the plain step and the lever's step, interleaved in ONE process on
the same batches (benchmarks/speed.py's workloads a and b, SmolLM2-135M-Instruct, LoRA r=16 on every
linear layer), so the machine's drift between processes (+-20% seen on a shared 2-core CPU) cancels.

    PYTHONPATH=src python benchmarks/levers.py --threads 2                 # every lever, a and b, ~10 min
    PYTHONPATH=src python benchmarks/levers.py --workloads a --levers train.loss_chunk=1024
    PYTHONPATH=src python benchmarks/levers.py --tiny                      # plumbing, tiny random Llama

Each lever is a `KEY=VALUE` override; the plain run has the same key at its "off" value (OFF below).
Both runs are built by tailorlm's own setup_run from the same config and stepped in turn (ABAB, BABA,
...) by tailorlm's own train_step, so they see the same examples; the report gives each one's median
seconds per step over the steps after --warmup, the ratio, and the largest relative difference of
their step losses (a lever must not change what is computed). Peak memory needs a process of its
own: benchmarks/speed.py --set KEY=VALUE.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import cpu_flags, device_name, md_table  # noqa: E402
from speed_contenders import _known_keys, _tailorlm_config  # noqa: E402
from speed_data import prepare_data, random_llama  # noqa: E402

LEVERS = ["train.frozen_cast=true", "train.loss_chunk=1024", "train.optimizer_impl=foreach",
          "train.optimizer_impl=fused"]
OFF = {"train.frozen_cast": "false", "train.loss_chunk": "null", "train.optimizer_impl": "default",
       "train.compile": "off", "train.frozen_bottom": "false"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workloads", default="a,b")
    p.add_argument("--levers", default=",".join(LEVERS), help="comma-separated KEY=VALUE overrides")
    p.add_argument("--steps", type=int, default=None, help="steps of each run (default: a 12, b 6)")
    p.add_argument("--warmup", type=int, default=2, help="first steps of each run left out")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--precision", default="auto")
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--tiny", action="store_true", help="a 2-layer random Llama and few rows: the plumbing")
    a = p.parse_args(argv)
    a.batch_a, a.row_tokens_a, a.batch_b, a.seq_b, a.heldout_a, a.heldout_b = 8, 256, 4, 512, 0, 0
    a.rows = 200 if a.tiny else 400
    a.workloads = [w for w in a.workloads.split(",") if w]
    a.levers = [x for x in a.levers.split(",") if x]
    return a


def build_pair(a, w: str, info: dict, lever: str, model: str, work: Path):
    """(plain run, lever run): RunStates from tailorlm's setup_run, differing in the lever's key only."""
    from tailorlm.config import load_config
    from tailorlm.train import setup_run
    key = lever.split("=", 1)[0]
    steps = a.steps or (12 if w == "a" else 6)
    runs = []
    for tag, over in (("plain", f"{key}={OFF[key]}"), ("lever", lever)):
        spec = {"model": model, "raw_data": info["raw_data"], "method": "lora", "steps": steps,
                "batch": a.batch_a if w == "a" else a.batch_b, "lr": 2e-4, "precision": a.precision,
                "device": "cpu", "seed": 0}
        raw = _known_keys(_tailorlm_config(spec, work / f"run-{w}-{tag}"))
        raw["train"]["threads"] = a.threads
        run = setup_run(load_config(raw=raw, overrides=[over]), quiet=True)
        run.model.train()
        runs.append(run)
    return runs, steps


def interleave(runs, steps: int) -> tuple[list[list[float]], list[list[float]]]:
    """Step both runs in turn (the first of each pair alternating); each step's seconds and loss."""
    from tailorlm.train.step import train_step
    times, losses = [[], []], [[], []]
    for i in range(steps):
        for j in ((0, 1) if i % 2 == 0 else (1, 0)):
            t0 = time.perf_counter()
            rec, _ = train_step(runs[j], False)
            times[j].append(time.perf_counter() - t0)
            losses[j].append(rec["loss"])
    return times, losses


def measure(a, w: str, info: dict, lever: str, model: str, work: Path) -> list:
    runs, steps = build_pair(a, w, info, lever, model, work)
    times, losses = interleave(runs, steps)
    plain, fast = (statistics.median(t[a.warmup:]) for t in times)
    diff = max(abs(x - y) / abs(y) for x, y in zip(losses[1], losses[0]))
    del runs
    return [w, lever, f"{plain:.3f}", f"{fast:.3f}", f"{plain / fast:.2f}x", f"{diff:.1e}"]


def main(argv=None) -> int:
    import torch

    from tailorlm.device import resolve_precision
    from tailorlm.models.load import resolve
    a = parse_args(argv)
    torch.set_num_threads(a.threads)
    work = Path(tempfile.mkdtemp(prefix="tailorlm-levers-"))
    model = str(random_llama(work / "model", resolve(a.model), True, "cpu")) if a.tiny else a.model
    infos = prepare_data(work, a, str(resolve(model)))
    rows = [measure(a, w, infos[w], lever, model, work) for w in a.workloads for lever in a.levers]
    print(f"# speed levers, interleaved in one process: {device_name('cpu')}, CPU flags {' '.join(cpu_flags())}, "
          f"{resolve_precision(a.precision, 'cpu')}, {a.threads} threads; model {model}")
    print(md_table(["wl", "lever", "plain s/step", "lever s/step", "speed-up", "max rel. loss diff"], "llrrrr", rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
