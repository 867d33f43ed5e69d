"""Forgetting and its mitigations on the real SmolLM2-135M-Instruct.

    python benchmarks/retention.py [--steps 60] [--out runs/bench-retention] [--only none "l2sp 10" ...]

A row whose run already finished in --out with the same steps is read back, not rerun, so an
interrupted benchmark continues where it stopped.

Domain: the airline tweets (3-way sentiment, as in `tailorlm demo`). General text: the 97 English
Wikipedia articles in the gensim wheel's test data, read in place (pip install --no-deps gensim),
stripped of markup, cut into 128-token blocks: half are the retention probe (NLL and KL to the base),
the other half are what `replay` and `distill` train on. Every row is the same LoRA run with one
mitigation switched on; the table gives held-out accuracy, the change of the general-text NLL, the
KL to the base model, and wall time.
"""
from __future__ import annotations

import argparse
import bz2
import importlib.util
import json
import re
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from tailorlm.config import load_config  # noqa: E402
from tailorlm.demo import demo_config, write_split  # noqa: E402
from tailorlm.train.loop import train  # noqa: E402

MITIGATIONS = {   # each at a weak and a strong setting: the trade-off, not one lucky point
    "none": {},
    "replay 0.5": {"replay": 0.5},
    "replay 1.0": {"replay": 1.0},
    "l2sp 1": {"l2sp": 1.0},
    "l2sp 10": {"l2sp": 10.0},
    "ewc 10": {"ewc": 10.0},
    "ewc 1000": {"ewc": 1000.0},
    "distill 1": {"distill": 1.0},
    "distill 5": {"distill": 5.0},
}


def strip_wikitext(t: str) -> str:
    t = re.sub(r"\{\{[^{}]*\}\}", "", t)
    t = re.sub(r"\{\{[^{}]*\}\}", "", t)                       # templates, two levels
    t = re.sub(r"<ref[^>]*/>|<ref.*?</ref>", "", t, flags=re.S)
    t = re.sub(r"<[^>]+>", "", t)
    t = re.sub(r"\[\[(?:[^|\]]*\|)?([^\]]*)\]\]", r"\1", t)    # [[link|text]] -> text
    t = re.sub(r"'{2,}", "", t)
    t = re.sub(r"^[=*#:;|!{}].*$", "", t, flags=re.M)           # headings, lists, tables
    return re.sub(r"\n{2,}", "\n\n", t).strip()


def wikipedia_jsonl(out: Path) -> Path:
    spec = importlib.util.find_spec("gensim")
    if spec is None:
        raise SystemExit("needs the gensim wheel's test data: pip install --no-deps gensim")
    src = Path(spec.submodule_search_locations[0]) / "test" / "test_data" / \
        "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
    root = ET.fromstring(bz2.open(src).read())
    ns = root.tag.split("}")[0] + "}"
    with open(out, "w") as fh:
        for page in root.iter(ns + "page"):
            text = page.findtext(f"{ns}revision/{ns}text") or ""
            if text.lower().startswith("#redirect"):
                continue
            for para in strip_wikitext(text).split("\n\n"):
                if len(para.split()) >= 40:
                    fh.write(json.dumps({"text": para}) + "\n")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--out", default="runs/bench-retention")
    ap.add_argument("--only", nargs="*", default=list(MITIGATIONS), help="rows to run; the first is the baseline")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    write_split(out / "data", n_test=300)
    wiki = wikipedia_jsonl(out / "wikipedia.jsonl")
    rows, base = [], None
    for i, name in enumerate(a.only):
        run = out / re.sub(r"\W+", "-", name)
        raw = demo_config(out / "data", str(run), a.steps)
        raw["retention"] = {"reference": str(wiki), "samples": 48, "max_length": 128, **MITIGATIONS[name]}
        raw["eval"] = {"max_examples": 300, "before": i == 0, "keep_best": False}
        raw["train"].update(eval_every=a.steps, save_every=a.steps, threads=a.threads)
        done = run / "summary.json"
        if done.is_file() and json.loads(done.read_text())["steps"] == a.steps and (i > 0 or json.loads(
                done.read_text())["base"]):   # finished earlier (same steps): its numbers, not a rerun
            s = json.loads(done.read_text())
            wall = s["wall_time_s"]
        else:
            t0 = time.time()
            s = train(load_config(raw=raw), quiet=True)
            wall = time.time() - t0
        if i == 0:
            base = s["base"]
        f = s["final"]
        rows.append((name, f["accuracy"], f["ref_nll_change"], f["kl_to_base"], wall))
        print(f"[bench] {name}: accuracy {f['accuracy']:.3f}, general NLL change {f['ref_nll_change']:+.4f}, "
              f"KL {f['kl_to_base']:.4f}, {wall:.0f} s", flush=True)
    print(f"\nbase model: held-out accuracy {base['accuracy']:.3f}, general-text NLL {base['ref_nll']:.4f}; "
          f"LoRA r=16 on the top 10 layers, {a.steps} steps of 8 tweets\n")
    print("| mitigation | held-out accuracy | general NLL change | KL to base | wall time |")
    print("|---|---:|---:|---:|---:|")
    for name, acc, dn, kl, wall in rows:
        print(f"| {name} | {acc:.3f} | {dn:+.4f} | {kl:.4f} | {wall:.0f} s |")
    gain0, drift0 = rows[0][1] - base["accuracy"], rows[0][2]
    for name, acc, dn, kl, wall in rows[1:]:
        keeps = (acc - base["accuracy"]) / gain0 if gain0 > 0 else float("nan")
        cut = 1 - dn / drift0 if drift0 > 0 else float("nan")
        ok = keeps >= 0.9 and cut >= 0.5
        print(f"{name}: keeps {keeps:.0%} of the accuracy gain, cuts the NLL increase by {cut:.0%}"
              f"{'  <- meets the aim' if ok else ''}")


if __name__ == "__main__":
    main()
