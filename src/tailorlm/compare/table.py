"""From runs to the comparison: each run's figures, then per configuration (and training-set size) the
mean and spread over seeds, the pairs whose difference is inside the seed spread, and Pareto fronts.

Per run (summary.json's step-0 `base` and its `final`, the scores of final/'s weights):

    gain           tuned - base on the domain metric, signed by its spec in the metric registry
                   (eval/specs.py): positive is better (base - tuned for a loss; for a target metric
                   such as a membership AUC, how much closer to the target tuned is)
    gain_fewshot   tuned - the base model's k-shot score (eval.fewshot; Brown et al. 2020): what tuning
                   adds over putting k training examples in the prompt
    ref_nll_change per-token NLL change on general text, and kl_to_base KL(base || tuned) at fixed
                   positions (retention/probe.py): the forgetting
    collapsed      the one label a classifier answered for every held-out row (the scores' `collapsed`;
                   an older run's `predicted` counts with one non-zero class read the same), else None:
                   its gain is the majority rate's, never shown as a success, and it is never "best"
    per_class_f1   {label: F1} of the tuned model (and base_per_class_f1) when the scores carry per_class

Per configuration over seeds: mean, sd (the sample standard deviation, n - 1; None for one seed), min
and max. Two configurations' difference is "within seed spread" when |mean_a - mean_b| <= sd_a + sd_b:
their mean +- sd intervals overlap, so a rerun with other seeds may well order them the other way
(PEFT's method-comparison suite runs one seed; its maintainers note seed spread can exceed the
differences between methods). Equal means with no spread at all (both seeds of both on the same
accuracy) count as within: nothing tells them apart.
"""
from __future__ import annotations

import itertools
import re
import statistics

from ..eval.metrics import collapsed   # the one label answered for every held-out row, else None
from ..eval.specs import find, spec
FIELDS = ("tuned", "base", "gain", "gain_fewshot", "ref_nll_change", "kl_to_base", "trainable_params",
          "artifact_bytes", "peak_rss_bytes", "peak_cuda_bytes", "wall_time_s", "train_time_s", "tokens_per_s",
          "latency_ms", "latency_merged_ms")
PAIR_FIELDS = ("gain", "ref_nll_change", "kl_to_base")
# Pareto fronts drawn and stored: (x, y); y (gain) is maximised, x (a forgetting or a cost) minimised
FRONTS = (("ref_nll_change", "gain"), ("kl_to_base", "gain"), ("wall_time_s", "gain"), ("peak_rss_bytes", "gain"),
          ("trainable_params", "gain"))


def domain_metric(summary: dict, asked: str = "auto") -> str:
    """macro-F1 for classification data (as eval.metric: auto; answering the majority class of skewed
    data scores a high accuracy, not a high macro-F1), else validation loss; or as asked."""
    if asked != "auto":
        return asked
    return "macro_f1" if "macro_f1" in (summary.get("base") or summary.get("final") or {}) else "val_loss"


def run_row(summary: dict, metric: str) -> dict:
    """The run's scores: tuned, base, gain, gain over few-shot, forgetting."""
    base, final = summary.get("base") or {}, summary.get("final") or {}
    s = spec(metric, "the compared metric")
    tuned, b = final.get(metric), base.get(metric)
    shots = sorted(k for k in base if re.fullmatch(rf"fewshot\d+_{re.escape(metric)}", k))
    few = base[shots[0]] if shots else None
    return {"metric": metric, "tuned": tuned, "base": b, "fewshot": few, "fewshot_key": shots[0] if shots else None,
            "gain": s.gain(tuned, b) if _num(tuned) and _num(b) else None,
            "gain_fewshot": s.gain(tuned, few) if _num(tuned) and _num(few) else None,
            "ref_nll_change": final.get("ref_nll_change"), "kl_to_base": final.get("kl_to_base"),
            "collapsed": collapsed(final), "base_collapsed": collapsed(base),
            "per_class_f1": _f1s(final), "base_per_class_f1": _f1s(base)}


def _f1s(scores: dict) -> dict | None:
    """{label: F1} from the scores' per_class ({label: {precision, recall, f1, support}})."""
    per = scores.get("per_class")
    return {lab: v["f1"] for lab, v in per.items()} if isinstance(per, dict) and per else None


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v


def stats(values: list) -> dict | None:
    vals = [float(v) for v in values if _num(v)]
    if not vals:
        return None
    return {"mean": statistics.fmean(vals), "sd": statistics.stdev(vals) if len(vals) > 1 else None,
            "min": min(vals), "max": max(vals), "n": len(vals)}


def aggregate(rows: list[dict]) -> list[dict]:
    """One entry per (configuration, training-set size), in first-seen order: its runs and the stats
    of every field over seeds."""
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["label"], r["size"]), []).append(r)
    out = []
    for (label, size), rs in groups.items():
        out.append({"label": label, "size": size, "method": rs[0]["method"], "runs": [r["name"] for r in rs],
                    "seeds": len(rs), **{f: stats([r.get(f) for r in rs]) for f in FIELDS},
                    "collapsed": {r["name"]: r["collapsed"] for r in rs if r.get("collapsed")},
                    "per_class_f1": _label_stats([r.get("per_class_f1") for r in rs]),
                    "base_per_class_f1": _label_stats([r.get("base_per_class_f1") for r in rs])})
    return out


def _label_stats(per_run: list[dict | None]) -> dict | None:
    """{label: stats over seeds of its F1}, labels in first-seen order; None when no run has them."""
    got = [d for d in per_run if d]
    labels = list(dict.fromkeys(lab for d in got for lab in d))
    return {lab: stats([d.get(lab) for d in got]) for lab in labels} or None


def tone(g: dict) -> str | None:
    """How a group's gain is shown: "collapsed" (a run answered one class: its gain is no success,
    whatever its sign), "good" (mean gain > 0), "bad" (< 0), else None."""
    if g.get("collapsed"):
        return "collapsed"
    gain = (g.get("gain") or {}).get("mean")
    return None if gain is None or gain == 0 else "good" if gain > 0 else "bad"


def collapse_warnings(out: dict) -> list[str]:
    """One line per run whose classifier answered one class for every held-out row."""
    f = lambda v, spec: "n/a" if v is None else format(v, spec)  # noqa: E731
    return [f"warning: {r['name']} answers {r['collapsed']!r} for every held-out row (a collapsed classifier): "
            f"its {r['metric']} {f(r['tuned'], '.4f')} is that one class's score, so its gain {f(r['gain'], '+.4f')} "
            "is no success. Try data.balance: sample or weight, or a lower train.lr"
            for r in out["runs"] if r.get("collapsed")]


def within_spread(a: dict | None, b: dict | None) -> bool | None:
    """|mean_a - mean_b| <= sd_a + sd_b (equal means with no spread count as within); None without
    two seeds on both sides."""
    if not a or not b or a["sd"] is None or b["sd"] is None:
        return None
    return abs(a["mean"] - b["mean"]) <= a["sd"] + b["sd"]


def pairs(groups: list[dict]) -> list[dict]:
    """Every two configurations of one size, on gain and forgetting: their difference and whether it
    is inside the seed spread."""
    out = []
    for a, b in itertools.combinations(groups, 2):
        if a["size"] != b["size"]:
            continue
        for f in PAIR_FIELDS:
            if a[f] and b[f]:
                sd = None if a[f]["sd"] is None or b[f]["sd"] is None else a[f]["sd"] + b[f]["sd"]
                out.append({"a": a["label"], "b": b["label"], "size": a["size"], "field": f,
                            "diff": a[f]["mean"] - b[f]["mean"], "spread": sd,
                            "within_spread": within_spread(a[f], b[f])})
    return out


def pareto(points: list[tuple[str, float, float]]) -> set[str]:
    """Names of the points no other point beats: x no larger and y no smaller, one of them strictly."""
    return {n for n, x, y in points
            if not any(x2 <= x and y2 >= y and (x2 < x or y2 > y) for _, x2, y2 in points)}


def _cost(field: str):
    """x as a cost to minimise: a registered metric's spec.cost (ref_nll_change, kl_to_base: lower is
    better), a resource (time, memory, parameters, bytes) as it is."""
    s = find(field)
    return s.cost if s else (lambda v: v)


def fronts(groups: list[dict]) -> dict:
    """{"x_vs_y": {size: [labels on the front]}} over the groups' means (y: the gain, signed by the
    metric's spec already; x: a cost, by _cost)."""
    out = {}
    for x, y in FRONTS:
        per, cost = {}, _cost(x)
        for size in dict.fromkeys(g["size"] for g in groups):
            pts = [(g["label"], cost(g[x]["mean"]), g[y]["mean"]) for g in groups
                   if g["size"] == size and g[x] and g[y]]
            per[str(size)] = sorted(pareto(pts))
        out[f"{y}_vs_{x}"] = per
    return out


def best_flags(groups: list[dict]) -> None:
    """Each group's `vs_best`: the best mean gain of its size, and whether this group is within seed
    spread of it (the best itself: None). A collapsed group is best only when every group collapsed."""
    for size in dict.fromkeys(g["size"] for g in groups):
        same = [g for g in groups if g["size"] == size and g["gain"]]
        if not same:
            continue
        best = max([g for g in same if not g.get("collapsed")] or same, key=lambda g: g["gain"]["mean"])
        for g in same:
            g["vs_best"] = {"best": best["label"], "diff": g["gain"]["mean"] - best["gain"]["mean"],
                            "within_spread": None if g is best else within_spread(g["gain"], best["gain"])}
