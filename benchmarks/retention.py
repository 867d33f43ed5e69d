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
import re
import time
from pathlib import Path

from harness import finished, md_table, wiki_articles, write_jsonl
from tailorlm.config import load_config
from tailorlm.demo import demo_config, write_split
from tailorlm.train import train

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
    """The articles' paragraphs of 40 words or more, one {"text": ...} a line."""
    try:
        articles = wiki_articles()
    except FileNotFoundError:
        raise SystemExit("needs the gensim wheel's test data: pip install --no-deps gensim") from None
    write_jsonl(out, [{"text": para} for text in articles for para in strip_wikitext(text).split("\n\n")
                      if len(para.split()) >= 40])
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
        s = finished(run, a.steps, need=() if i else ("base",))
        if s is not None:   # finished earlier (same steps): its numbers, not a rerun
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
    print(md_table(["mitigation", "held-out accuracy", "general NLL change", "KL to base", "wall time"], "lrrrr",
                   [[name, f"{acc:.3f}", f"{dn:+.4f}", f"{kl:.4f}", f"{wall:.0f} s"] for name, acc, dn, kl, wall in rows]))
    gain0, drift0 = rows[0][1] - base["accuracy"], rows[0][2]
    for name, acc, dn, kl, wall in rows[1:]:
        keeps = (acc - base["accuracy"]) / gain0 if gain0 > 0 else float("nan")
        cut = 1 - dn / drift0 if drift0 > 0 else float("nan")
        ok = keeps >= 0.9 and cut >= 0.5
        print(f"{name}: keeps {keeps:.0%} of the accuracy gain, cuts the NLL increase by {cut:.0%}"
              f"{'  <- meets the aim' if ok else ''}")


if __name__ == "__main__":
    main()
