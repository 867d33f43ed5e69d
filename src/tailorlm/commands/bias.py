"""`tailorlm bias RUN [--probes FILE]`: what tuning did to the model's social bias.

Scores the run's base model (its adapters switched off, or the base folder for full fine-tuning)
and its tuned final/ on the same inputs and prints, per category, base, tuned and the change with a
paired 95% bootstrap interval: stereotype pairs (the shipped set, a CrowS-Pairs CSV or a BBQ JSONL)
for a causal LM, and counterfactual flips (group terms, names, company names swapped in held-out
rows) for classification data. Writes RUN/probes/bias.json, which `tailorlm report` draws. Ends
with one line per watched figure: better, worse (red on a terminal) or no significant change against
bias.threshold (probes/verdict.py); each `worse` is kept in bias.json as a warning."""
from __future__ import annotations

import math
import sys

HELP = "bias before and after tuning: stereotype pairs and counterfactual flips"
EXAMPLES = """examples:
  tailorlm bias runs/my-run                          the shipped pairs (7 categories) + flips
  tailorlm bias runs/my-run --probes crows_pairs_anonymized.csv
  tailorlm bias runs/my-run --probes Gender_identity.jsonl --max-pairs 500    BBQ: s_DIS, s_AMB
  tailorlm bias runs/my-run bias.threshold=0.1       overrides of the run's stored config"""
GROUP_WIDTH = 24   # a longer category name is cut: the table stays within probes.verdict.WIDTH columns


def add_arguments(p) -> None:
    p.add_argument("run", help="a run directory (its final/ against its base model)")
    p.add_argument("overrides", nargs="*", help="dotted overrides of the run's config, e.g. bias.threshold=0.1")
    p.add_argument("--probes", help="a CrowS-Pairs CSV, a BBQ JSONL or a pairs YAML (default: bias.probes, "
                   "else the shipped pairs)")
    p.add_argument("--max-pairs", type=int, default=None, help="score at most this many pairs / questions "
                   "(a seeded sample across categories; default: all)")
    p.add_argument("--max-rows", type=int, default=300, help="held-out rows swapped for the flips (default 300)")


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 3] + "..."


def table(rows: list[dict], what: str) -> str:
    """Per metric a block: its name, then per group n, base, tuned, change and the paired 95% interval
    of the change (* when it excludes 0): about 80 columns, whatever the metrics."""
    from ..probes.verdict import number

    width = min(GROUP_WIDTH, max(len(what), *(len(r["group"]) for r in rows)))
    head = f"  {what:<{width}} {'n':>5} {'base':>7} {'tuned':>7} {'change':>7}  95% CI of the change"
    lines = []
    for metric in dict.fromkeys(r["metric"] for r in rows):
        lines += ["", metric, head]
        for r in (r for r in rows if r["metric"] == metric):
            ci = f"[{number(r['lo'], True)}, {number(r['hi'], True)}]" if math.isfinite(r["lo"]) else ""
            lines.append(f"  {_short(r['group'], width):<{width}} {r['n']:>5} {number(r['base']):>7} "
                         f"{number(r['tuned']):>7} {number(r['change'], True):>7}  {ci}{' *' if r['significant'] else ''}")
    return "\n".join(lines)


def verdicts(rows: list[dict], threshold: float, color: bool) -> str:
    """The closing lines: one per watched row (probes/bias_probe.WATCHED), better / worse / no
    significant change against bias.threshold, only `worse` in red."""
    from ..probes.bias_probe import MIN_ITEMS, WATCHED
    from ..probes.verdict import finding_line, verdict_block

    found = [finding_line(r, WATCHED[r["metric"]], threshold, "bias.threshold", MIN_ITEMS)
             for r in rows if r["metric"] in WATCHED]
    head = (f"verdicts, bias.threshold={threshold:g} (counted when the 95% interval excludes 0 and the change "
            "passes it):")
    return verdict_block(found, head, color)


def bias_command(a) -> int:
    from ..run.folder import run_dir_of
    from ..run.lock import hold_run

    with hold_run(run_dir_of(a.run)):   # it writes RUN/probes/bias.json: not while another process writes the run
        return _run(a)


def _run(a) -> int:
    from ..probes.bias_probe import MIN_ITEMS, run_flips, run_pairs, save, warnings_for
    from ..probes.pair import base_view
    from ..probes.verdict import use_color
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

    say = _printer()
    judged: list[dict] = []
    if cfg.model.task == "causal_lm":
        rows, extra = run_pairs(measure_pair, tok, cfg, probes=a.probes or cfg.bias.probes, max_pairs=a.max_pairs, **kw)
        save(run_dir, "pairs", rows, warnings_for(rows, cfg.bias.threshold),
             {**extra, "probes": a.probes or cfg.bias.probes or "shipped"}, cfg.bias.threshold)
        judged += rows
        say(f"stereotype pairs: {extra['pairs']} (sentence log-likelihood, nats; ideal share 0.5, bias score 0)"
            if "pairs" in extra else
            f"BBQ: {extra['bbq_items']} questions (0 = unbiased, 1 = always the stereotype, -1 = never)")
        say(table(rows, "category"))
    data = opened.data
    held = (data.test_rows or data.val_rows)[:a.max_rows]
    if data.fmt == "classification" and held:
        rows, extra = run_flips(measure_pair, data.formatter, cfg, held, **kw)
        if rows:
            save(run_dir, "flips", rows, warnings_for(rows, cfg.bias.threshold), extra, cfg.bias.threshold)
            judged += rows
            say(f"\ncounterfactual flips: {extra['flip_items']} swaps in {len(held)} held-out rows (groups under "
                f"{MIN_ITEMS} swaps are never starred)")
            if extra.get("flip_set_aside"):
                say("set aside, a term in another sense ('black coffee', 'senior engineer'): " +
                    ", ".join(f"{a} {k}" for a, k in extra["flip_set_aside"].items()))
            say(table(rows, "axis"))
            if extra["worst_flips"]:
                say("\nthe swaps that moved the tuned model most (p of the gold label, text -> swapped):")
            for x in extra["worst_flips"][:3]:
                t = x["tuned"]
                say(f"  {x['axis']}: p({x['label']}) {t['p']:.2f} -> {t['p_swapped']:.2f}\n"
                    f"    {_short(x['text'], 44)!r} -> {_short(x['swapped'], 44)!r}")
    say(f"\nwritten to {opened.run.probe_file('bias')}\n")
    print(verdicts(judged, cfg.bias.threshold, use_color(sys.stdout)))
    return 0


def _printer():
    """print, each line cut to probes.verdict.WIDTH columns."""
    from ..probes.verdict import wrap

    return lambda text: print(wrap(text))
