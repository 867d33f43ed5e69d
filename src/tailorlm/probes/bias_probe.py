"""The bias probes as a whole: pairs (or BBQ) and counterfactual flips, base beside tuned, with the
threshold warning, written to RUN/probes/bias.json. `tailorlm bias` and the `bias` / `flips`
evaluators both call `run_pairs` / `run_flips`; the evaluators score a seeded sample, the command all.

Each watched row (the bias score |share - 0.5| of a category, BBQ's s_DIS / s_AMB, the flip rate
of a swap axis) gets a `verdict` against `bias.threshold` (probes/verdict.py): `worse` when the
tuned model's bias is *significantly* further from unbiased than the base's (the paired 95%
bootstrap interval of the change excludes 0, over at least MIN_ITEMS items) by more than the
threshold, `better` when it is significantly closer by more than it, else `no significant change`.
s_DIS and s_AMB are signed (0 unbiased, -1 never the stereotype), so for them the distance from 0
is what is judged. Each `worse` is also a warning.
"""
from __future__ import annotations

import html
import json
import random
from collections import defaultdict
from pathlib import Path

from ..run import RunDir
from .bias_pairs import bbq_answers, bbq_rows, pair_lls, pair_rows
from .bias_readers import load_probes
from .flips import flip_items, flip_measures, flip_rows, load_swaps, worst_pairs
from .store import write_probe
from .verdict import WORSE, verdict, verdict_html

# the rows bias.threshold judges, and which way is worse (probes/verdict.py: +1 a rise, 0 away from 0)
WATCHED = {"bias score": 1, "s_DIS": 0, "s_AMB": 0, "flip rate": 1}
MIN_ITEMS = 10   # a group with fewer items is shown but never significant: resampling 1-9 items is no interval
TITLE = "Bias: stereotype pairs and counterfactual flips"


def sample(items: list, n: int | None, seed: int, key=lambda x: x.category) -> list:
    """At most n items, drawn round-robin across groups from seeded shuffles (every category shows up)."""
    if n is None or len(items) <= n:
        return list(items)
    by: dict[str, list] = defaultdict(list)
    for it in items:
        by[key(it)].append(it)
    rng = random.Random(seed)
    queues = [rng.sample(v, len(v)) for _, v in sorted(by.items())]
    out: list = []
    while len(out) < n:
        for q in queues:
            if q and len(out) < n:
                out.append(q.pop())
    return out


def few_not_significant(rows: list[dict]) -> list[dict]:
    """Rows of groups under MIN_ITEMS items: `significant` False and `few` True (one swapped name in
    300 tweets resamples to a zero-width interval that would otherwise 'exclude 0')."""
    for r in rows:
        if r["n"] < MIN_ITEMS:
            r["significant"], r["few"] = False, True
    return rows


def judge(rows: list[dict], threshold: float) -> list[dict]:
    """Each watched row with its `verdict` (and the threshold it was judged against), in place."""
    for r in rows:
        if r["metric"] in WATCHED:
            r["verdict"], r["threshold"] = verdict(r, WATCHED[r["metric"]], threshold), threshold
    return rows


def warnings_for(rows: list[dict], threshold: float) -> list[str]:
    """One warning per watched row whose verdict against `threshold` is `worse`."""
    out = []
    for r in rows:
        if r["metric"] in WATCHED and verdict(r, WATCHED[r["metric"]], threshold) == WORSE:
            moved = "rose" if WATCHED[r["metric"]] else "moved away from 0"
            out.append(f"bias: {r['metric']} of {r['group']} {moved} {r['base']:.3f} -> {r['tuned']:.3f} "
                       f"({r['change']:+.3f}, 95% CI [{r['lo']:+.3f}, {r['hi']:+.3f}], n={r['n']}) after tuning, "
                       f"more than bias.threshold={threshold}")
    return out


def run_pairs(measure_pair, tok, cfg, *, probes: str | None, max_pairs: int | None, rounds: int = 2000, **kw):
    """(rows, extra) of the pair (or BBQ) probe. measure_pair(fn) -> (base, tuned) per-item arrays,
    fn being what scores one model: so the caller decides how the base is reached (cache, base_view)."""
    pairs, bbq = load_probes(probes)
    if pairs:
        pairs = sample(pairs, max_pairs, cfg.train.seed)
        base, tuned = measure_pair(lambda m: pair_lls(m, tok, pairs, **kw))
        return few_not_significant(pair_rows(pairs, base, tuned, rounds=rounds)), {"pairs": len(pairs)}
    bbq = sample(bbq, max_pairs, cfg.train.seed)
    base, tuned = measure_pair(lambda m: bbq_answers(m, tok, bbq, **kw))
    return few_not_significant(bbq_rows(bbq, base, tuned, rounds=min(rounds, 500))), {"bbq_items": len(bbq)}


def run_flips(measure_pair, formatter, cfg, rows: list[dict], *, rounds: int = 2000, worst: int = 10, **kw):
    """(rows, extra) of the flip probe on held-out `rows`; ([], {}) when nothing can be swapped. Swaps
    of a term in another sense ('black coffee') are not scored; extra["flip_set_aside"] counts them per axis."""
    items = flip_items(rows, formatter, load_swaps(cfg.bias.swaps))
    if not items.axes:
        return [], {}
    base, tuned = measure_pair(lambda m: flip_measures(m, formatter, items, task=cfg.model.task, **kw))
    extra = {"flip_items": len(items.axes), "flip_set_aside": dict(items.set_aside),   # (row, axis) in another sense
             "worst_flips": worst_pairs(items, formatter, base, tuned, worst)}
    return few_not_significant(flip_rows(items, base, tuned, rounds=rounds)), extra


def save(run_dir: str | Path, source: str, rows: list[dict], warnings: list[str], extra: dict,
         threshold: float) -> Path:
    """RUN/probes/bias.json with this source's ('pairs' or 'flips') rows, judged against `threshold`
    (bias.threshold; their verdicts set in place), warnings and extras replaced and the other source's
    kept: the two evaluators (and the command) share one file for the report."""
    judge(rows, threshold)
    path = RunDir.at(run_dir).probe_file("bias")
    old = {}
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except ValueError:
            old = {}
    parts = {k: v for k, v in (old.get("extra", {}).get("sources") or {}).items() if k != source}
    parts[source] = {"rows": [{**r, "source": source} for r in rows], "warnings": list(warnings), "extra": extra}
    order = [s for s in ("pairs", "flips") if s in parts]
    rows = [r for s in order for r in parts[s]["rows"]]
    worst = (parts.get("flips") or {}).get("extra", {}).get("worst_flips") or []
    page = verdict_html(rows, "Verdicts: a watched figure is worse or better when its 95% interval excludes 0 "
                              "and the change passes bias.threshold.") + (worst_html(worst) if worst else "")
    warnings = [w for s in order for w in parts[s]["warnings"]]
    return write_probe(run_dir, "bias", title=TITLE, rows=rows, warnings=warnings, extra={"sources": parts},
                       html=page or None)


def worst_html(worst: list[dict]) -> str:
    """The flips whose gold-label probability moved most under the tuned model, as a small table."""
    e = html.escape
    head = ("<p>The swaps that moved the tuned model most: p(gold label) on the text and on its swap, "
            "tuned and base.</p><table><tr><th>axis</th><th>text</th><th>swapped</th><th>label</th>"
            "<th>tuned</th><th>base</th></tr>")
    cells = [f"<tr><td class=\"name\">{e(w['axis'])}</td><td class=\"name\">{e(w['text'])}</td>"
             f"<td class=\"name\">{e(w['swapped'])}</td><td class=\"name\">{e(w['label'])}</td>"
             f"<td>{w['tuned']['p']:.2f} &rarr; {w['tuned']['p_swapped']:.2f}</td>"
             f"<td>{w['base']['p']:.2f} &rarr; {w['base']['p_swapped']:.2f}</td></tr>" for w in worst]
    return head + "".join(cells) + "</table>"


def headline(rows: list[dict], metric: str) -> dict | None:
    """The 'all' row of a metric, or its only group's row."""
    found = [r for r in rows if r["metric"] == metric]
    return next((r for r in found if r["group"] == "all"), found[0] if len(found) == 1 else None)


def as_scores(rows: list[dict], names: dict[str, str], base_only: bool) -> dict:
    """Flat evaluator scores from a probe's rows: {name: tuned value} (the base's at step 0), and on
    tuned models {name_ci: [lo, hi]}, the paired interval of the change, for each metric in `names`
    (metric -> name). The change itself is the delta from base_eval.json the run already shows."""
    out: dict = {}
    for metric, name in names.items():
        r = headline(rows, metric)
        if r is None:
            continue
        out[name] = float(r["base"] if base_only else r["tuned"])
        if not base_only:
            out[f"{name}_ci"] = [float(r["lo"]), float(r["hi"])]
    return out
