"""`tailorlm bias RUN [--probes FILE]`: what tuning did to the model's social bias.

Scores the run's base model (its adapters switched off, or the base folder for full fine-tuning)
and its tuned final/ on the same inputs and prints, per category, base, tuned and the change with a
paired 95% bootstrap interval: stereotype pairs (the shipped set, a CrowS-Pairs CSV or a BBQ JSONL)
for a causal LM, and counterfactual flips (group terms, names, company names swapped in held-out
rows) for classification data. Writes RUN/probes/bias.json, which `tailorlm report` draws; a
significant rise past bias.threshold is printed as a warning and kept there."""
from __future__ import annotations

import math

HELP = "bias before and after tuning: stereotype pairs and counterfactual flips"
EXAMPLES = """examples:
  tailorlm bias runs/my-run                          the shipped pairs (7 categories) + flips
  tailorlm bias runs/my-run --probes crows_pairs_anonymized.csv
  tailorlm bias runs/my-run --probes Gender_identity.jsonl --max-pairs 500    BBQ: s_DIS, s_AMB
  tailorlm bias runs/my-run bias.threshold=0.1       overrides of the run's stored config"""


def add_arguments(p) -> None:
    p.add_argument("run", help="a run directory (its final/ against its base model)")
    p.add_argument("overrides", nargs="*", help="dotted overrides of the run's config, e.g. bias.threshold=0.1")
    p.add_argument("--probes", help="a CrowS-Pairs CSV, a BBQ JSONL or a pairs YAML (default: bias.probes, "
                   "else the shipped pairs)")
    p.add_argument("--max-pairs", type=int, default=None, help="score at most this many pairs / questions "
                   "(a seeded sample across categories; default: all)")
    p.add_argument("--max-rows", type=int, default=300, help="held-out rows swapped for the flips (default 300)")


def fmt_change(r: dict) -> str:
    if not math.isfinite(r["base"]):
        return "n/a"
    star = "*" if r["significant"] else " "
    return (f"{r['base']:7.3f} {r['tuned']:7.3f} {r['change']:+7.3f} [{r['lo']:+.3f}, {r['hi']:+.3f}]{star}")


def table(rows: list[dict], what: str) -> str:
    """One line per group, one 'base tuned change [lo, hi]' column per metric; * = interval excludes 0."""
    metrics = list(dict.fromkeys(r["metric"] for r in rows))
    groups = list(dict.fromkeys(r["group"] for r in rows))
    by = {(r["metric"], r["group"]): r for r in rows}
    width = max(len(what), *(len(g) for g in groups))
    heads = [m + ": base tuned change [95% CI]" for m in metrics]
    cols = [max(44, len(h)) for h in heads]   # a long metric name widens its column, not the next one's
    head = f"{what:<{width}} {'n':>5}  " + "  ".join(f"{h:<{c}}" for h, c in zip(heads, cols))
    lines = [head]
    for g in groups:
        n = next(by[(m, g)]["n"] for m in metrics if (m, g) in by)
        cells = [f"{fmt_change(by[(m, g)]) if (m, g) in by else '':<{c}}" for m, c in zip(metrics, cols)]
        lines.append(f"{g:<{width}} {n:>5}  " + "  ".join(cells))
    return "\n".join(lines)


def bias_command(a) -> int:
    from ..run.folder import run_dir_of
    from ..run.lock import hold_run

    with hold_run(run_dir_of(a.run)):   # it writes RUN/probes/bias.json: not while another process writes the run
        return _run(a)


def _run(a) -> int:
    from ..probes.bias_probe import MIN_ITEMS, run_flips, run_pairs, save, warnings_for
    from ..probes.pair import base_view
    from ..run import open_run

    opened = open_run(a.run, a.overrides, threads=True)   # (train.threads kept for the command's life)
    cfg, model, tok, run_dir = opened.cfg, opened.model, opened.tokenizer, opened.run.path
    device = opened.device
    model.to(device).eval()
    kw = dict(device=device, precision=cfg.train.precision, batch_size=cfg.eval.batch_size)

    def measure_pair(score):
        tuned = score(model)
        with base_view(model, cfg, device) as base:
            return score(base), tuned

    warnings: list[str] = []
    if cfg.model.task == "causal_lm":
        rows, extra = run_pairs(measure_pair, tok, cfg, probes=a.probes or cfg.bias.probes, max_pairs=a.max_pairs, **kw)
        w = warnings_for(rows, cfg.bias.threshold)
        save(run_dir, "pairs", rows, w, {**extra, "probes": a.probes or cfg.bias.probes or "shipped"})
        warnings += w
        what = (f"stereotype pairs: {extra['pairs']} (sentence log-likelihood, nats; ideal share 0.5, bias score 0)"
                if "pairs" in extra else
                f"BBQ: {extra['bbq_items']} questions (0 = unbiased, 1 = always the stereotype, -1 = never)")
        print(f"{what}; * = the paired 95% interval of the change excludes 0")
        print(table(rows, "category"))
    data = opened.data
    held = (data.test_rows or data.val_rows)[:a.max_rows]
    if data.fmt == "classification" and held:
        rows, extra = run_flips(measure_pair, data.formatter, cfg, held, **kw)
        if rows:
            w = warnings_for(rows, cfg.bias.threshold)
            save(run_dir, "flips", rows, w, extra)
            warnings += w
            print(f"\ncounterfactual flips: {extra['flip_items']} swaps in {len(held)} held-out rows (groups under "
                  f"{MIN_ITEMS} swaps are never starred)")
            if extra.get("flip_set_aside"):
                print("set aside, a term in another sense ('black coffee', 'senior engineer'): " +
                      ", ".join(f"{a} {k}" for a, k in extra["flip_set_aside"].items()))
            print(table(rows, "axis"))
            for x in extra["worst_flips"][:3]:
                t = x["tuned"]
                print(f"  {x['axis']}: p({x['label']}) {t['p']:.2f} -> {t['p_swapped']:.2f}  {x['text'][:70]!r} -> "
                      f"{x['swapped'][:70]!r}")
    for w in warnings:
        print(f"[tailorlm] warning: {w}")
    print(f"\nwritten to {opened.run.probe_file('bias')}")
    return 0
