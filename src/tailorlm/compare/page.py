"""compare.html: the comparison table (mean +- sd over seeds), the pairs inside the seed spread, and
Pareto charts of gain against forgetting and against cost; one self-contained page (inline CSS and
SVG, nothing fetched). Each run links to its own report.html (or its folder)."""
from __future__ import annotations

import math
from html import escape
from pathlib import Path

from ..atomic import write_text
from ..html_page import STYLE, page
from ..report.svg import line_chart, scatter_chart
from .table import FRONTS, PAIR_FIELDS, collapse_warnings, tone

COST_LABELS = {"ref_nll_change": "general-text NLL change (nats/token)", "kl_to_base": "KL(base || tuned)",
               "wall_time_s": "wall time (s)", "peak_rss_bytes": "peak memory (GiB)",
               "trainable_params": "trainable parameters (log10)"}


def _x(field: str, v: float | None) -> float | None:
    """Chart coordinate: memory in GiB, parameters on a log10 axis (11k to 135M side by side)."""
    if v is None:
        return None
    if field == "peak_rss_bytes":
        return v / 2**30
    if field == "trainable_params":
        return math.log10(max(v, 1))
    return v


def _xerr(field: str, s: dict) -> float | None:
    if s["sd"] is None or field == "trainable_params":
        return None
    return s["sd"] / 2**30 if field == "peak_rss_bytes" else s["sd"]


def _cell(s: dict | None, f: str = "{:.4f}", signed: bool = False, cls: str | None = None, note: str = "") -> str:
    """mean, and +- sd below it in small type (one seed: the value alone); `cls` colours it (table.tone)."""
    if not s:
        return "<td>-</td>"
    v = (("{:+" + f[2:]) if signed else f).format(s["mean"])
    sd = f"<br><small>± {f.format(s['sd'])}</small>" if s["sd"] is not None else ""
    attr = f' class="{cls}"' if cls else ""
    return f"<td{attr}>{v}{sd}{note}</td>"


def _gain(g: dict) -> str:
    """The gain over base: green when it is one, red when a loss, and never green for a collapse
    (marked, with the label the classifier answered for every row)."""
    t = tone(g)
    note = ""
    if t == "collapsed":
        labels = ", ".join(sorted(set(g["collapsed"].values())))
        seeds = "" if len(g["collapsed"]) == g["seeds"] else f" in {len(g['collapsed'])} of {g['seeds']} seeds"
        note = f'<br><span class="collapse">&#9888; collapsed: always {escape(labels)}{seeds}</span>'
    return _cell(g["gain"], signed=True, cls=t, note=note)


def _links(out: dict, g: dict) -> str:
    by = {r["name"]: r for r in out["runs"]}
    return " ".join(f'<a href="{escape(by[n]["report"] or by[n]["dir"])}">s{by[n]["seed"]}</a>' for n in g["runs"])


def _name(g: dict) -> str:
    same = g["label"] == g["method"]
    method = "" if same else f' <small>({escape(g["method"])})</small>'
    return f'<td class="name">{escape(g["label"])}{method}</td>'


def gain_table(out: dict, size) -> str:
    """What tuning gained and what it forgot, per configuration."""
    metric = escape(out.get("metric") or "")
    rows = []
    for g in (g for g in out["groups"] if g["size"] == size):
        vb = g.get("vs_best") or {}
        flag = ("best" if vb.get("best") == g["label"] else f"{vb['diff']:+.4f}"
                + ("<br><small>within seed spread</small>" if vb.get("within_spread") else "")) if vb else "-"
        rows.append(f'<tr>{_name(g)}{_cell(g["tuned"])}{_gain(g)}'
                    f'{_cell(g["gain_fewshot"], signed=True)}{_cell(g["ref_nll_change"], signed=True)}'
                    f'{_cell(g["kl_to_base"])}<td>{flag}</td><td class="name">{_links(out, g)}</td></tr>')
    return (f"<table><tr><th>configuration</th><th>{metric}</th><th>gain over base</th><th>gain over few-shot</th>"
            "<th>NLL change</th><th>KL to base</th><th>gain vs the best</th><th>runs (reports)</th></tr>"
            + "".join(rows) + "</table>")


def per_class_table(out: dict, size) -> str:
    """Per-class F1 per configuration, tuned and (small) base, for classification runs; '' otherwise."""
    groups = [g for g in out["groups"] if g["size"] == size and g.get("per_class_f1")]
    labels = list(dict.fromkeys(lab for g in groups for lab in g["per_class_f1"]))
    if not labels:
        return ""
    rows = []
    for g in groups:
        base = g.get("base_per_class_f1") or {}
        rows.append(f"<tr>{_name(g)}" + "".join(
            _cell(g["per_class_f1"].get(lab), "{:.3f}", note=f"<br><small>base {base[lab]['mean']:.3f}</small>"
                  if base.get(lab) else "") for lab in labels) + "</tr>")
    return ("<h2>Per-class F1</h2><table><tr><th>configuration</th>" + "".join(f"<th>{escape(lab)}</th>"
            for lab in labels) + "</tr>" + "".join(rows) + "</table>")


def cost_table(out: dict, size) -> str:
    """What each configuration cost to train and to serve."""
    rows = []
    for g in (g for g in out["groups"] if g["size"] == size):
        tp = f"{int(g['trainable_params']['mean']):,}" if g["trainable_params"] else "-"
        mb = f"{g['artifact_bytes']['mean'] / 1e6:.2f}" if g["artifact_bytes"] else "-"
        peak = _scaled(g["peak_rss_bytes"]) if g["peak_rss_bytes"] else None
        rows.append(f'<tr>{_name(g)}<td>{tp}</td><td>{mb}</td>{_cell(peak, "{:.2f}")}'
                    f'{_cell(g["wall_time_s"], "{:.0f}")}{_cell(g["tokens_per_s"], "{:.0f}")}'
                    f'{_cell(g["latency_ms"], "{:.1f}")}{_cell(g["latency_merged_ms"], "{:.1f}")}</tr>')
    return ("<table><tr><th>configuration</th><th>trainable parameters</th><th>on disk (MB)</th>"
            "<th>peak RSS (GiB)</th><th>wall (s)</th><th>tokens/s</th><th>latency (ms)</th><th>merged (ms)</th></tr>"
            + "".join(rows) + "</table>")


def _scaled(s: dict, unit: float = 2**30) -> dict:
    return {k: (v / unit if k in ("mean", "sd", "min", "max") and v is not None else v) for k, v in s.items()}


def pairs_table(out: dict, size) -> str:
    """Each pair's differences of means, marked where they are inside the seed spread."""
    got = [p for p in out["pairs"] if p["size"] == size and p["within_spread"] is not None]
    if not got:
        return '<p class="note">One seed: no spread to hold the differences to (--seeds 2 or more).</p>'
    by: dict = {}
    for p in got:
        by.setdefault((p["a"], p["b"]), {})[p["field"]] = p
    cell = lambda p: "<td>-</td>" if not p else (  # noqa: E731
        f'<td>{p["diff"]:+.4f}<br><small>{"within" if p["within_spread"] else "outside"} '
        f'± {p["spread"]:.4f}</small></td>')
    body = "".join(f'<tr><td class="name">{escape(a)} - {escape(b)}</td>' + "".join(cell(f.get(k)) for k in PAIR_FIELDS)
                   + "</tr>" for (a, b), f in by.items())
    return ("<table><tr><th>pair (a - b)</th><th>gain</th><th>NLL change</th><th>KL to base</th></tr>" + body
            + "</table>")


def charts(out: dict, size) -> str:
    groups = [g for g in out["groups"] if g["size"] == size and g["gain"]]
    parts = []
    for x, y in FRONTS:
        front = set(out["pareto"].get(f"{y}_vs_{x}", {}).get(str(size), []))
        pts = [{"name": g["label"], "x": _x(x, g[x]["mean"]), "y": g[y]["mean"], "xerr": _xerr(x, g[x]),
                "yerr": g[y]["sd"], "pareto": g["label"] in front} for g in groups if g[x]]
        parts.append(scatter_chart(pts, title=f"gain against {COST_LABELS[x]}", x_label=COST_LABELS[x],
                                   y_label=f"gain in {out.get('metric')}", width=530))
    return '<div class="charts">' + "".join(parts) + "</div>"


def by_size(out: dict) -> str:
    """Gain against training-set size, one line per configuration (several --train-sizes only)."""
    if len(out["sizes"]) < 2:
        return ""
    series = {}
    for g in out["groups"]:
        if g["gain"]:
            series.setdefault(g["label"], []).append((math.log10(g["size"]), g["gain"]["mean"]))
    return "<h2>Gain against training-set size</h2>" + line_chart(
        [{"name": k, "points": v} for k, v in series.items()], title="gain against training rows",
        x_label="training rows (log10)", y_label=f"gain in {out.get('metric')}")


def write_page(out: dict, path: Path) -> None:
    sizes = out["sizes"] or [None]
    parts = [f"<h1>Method comparison: {escape(str(out.get('metric')))}, {out['seeds']} seed(s)</h1>",
             '<p class="note">Every run of one training-set size has the same data, data order (train.seed per seed '
             "index) and token budget (steps x batch x max_length). Mean ± sd over seeds; a difference is within seed "
             "spread when |mean a - mean b| &le; sd a + sd b. Gain: tuned - base on the domain metric (base - tuned "
             "for a loss); forgetting: NLL change and KL on general text the base model wrote. Points joined by the "
             "dashed line are the Pareto front (no other configuration has more gain for less cost).</p>"]
    parts += [f'<p class="warn">&#9888; {escape(w)}</p>' for w in collapse_warnings(out)]
    for size in sizes:
        if size is not None:
            parts.append(f"<h2>{size} training rows</h2>")
        parts += ["<h2>What tuning gained and forgot</h2>", gain_table(out, size), per_class_table(out, size),
                  "<h2>What it cost</h2>",
                  cost_table(out, size), "<h2>Differences between configurations, against the seed spread</h2>",
                  pairs_table(out, size),
                  "<h2>Pareto: gain against forgetting and cost</h2>", charts(out, size)]
    parts.append(by_size(out))
    write_text(path, page("tailorlm compare", "".join(parts),
                          STYLE + ".charts{display:flex;flex-wrap:wrap;gap:10px}small{color:#666}"
                          "td.good{color:#11793a;font-weight:600}td.bad{color:#b3261e;font-weight:600}"
                          "td.collapsed{background:#fff6e0;color:#8a5300}.collapse{font-size:12px;font-weight:600}"
                          ".warn{background:#fdecea;border:1px solid #f5c2c0;color:#8c1d18;padding:6px 10px}"))
