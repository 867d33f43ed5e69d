"""continual.html: the accuracy matrix R as a heatmap and the metrics over stages, one self-contained
page (inline CSS and SVG; nothing fetched), for each order of the plan."""
from __future__ import annotations

import html
from pathlib import Path

from ..eval.specs import find
from ..html_page import page
from .metrics import by_unit


def _cell(v: float, lo: float, hi: float, collapsed: str | None = None) -> str:
    """A cell shaded from white (lowest in the matrix) to blue (highest); a collapsed classifier's cell
    (one label for every held-out row) amber and marked instead, whatever its score."""
    if collapsed:
        return (f'<td class="collapsed" style="background:#fff6e0;color:#8a5300">{v:.3f}<br><small>&#9888; always '
                f"{html.escape(collapsed)}</small></td>")
    x = 0.0 if hi <= lo else (v - lo) / (hi - lo)
    r, g, b = (int(255 - x * (255 - c)) for c in (33, 102, 172))
    ink = "#fff" if x > 0.6 else "#222"
    return f'<td style="background:rgb({r},{g},{b});color:{ink}">{v:.3f}</td>'


def heatmap(R: list[list[float]], names: list[str], units: list[str] | None = None,
            collapsed: list[list] | None = None) -> str:
    """R with each column shaded within its unit (accuracy and negative NLL never share a scale);
    `collapsed` (per row, per task: the label answered for every row, else None) marks those cells."""
    units = units or ["score"] * len(names)
    collapsed = collapsed or [[None] * len(names) for _ in R]
    span = {u: [R[t][i] for t in range(len(R)) for i in range(len(names)) if units[i] == u] for u in set(units)}
    head = "<tr><th>after \\ task</th>" + "".join(
        f"<th>{html.escape(n)}<br><small>{html.escape(_unit(u))}</small></th>" for n, u in zip(names, units)) + "</tr>"
    rows = [f'<tr><td class="name">{"base model" if t == 0 else f"stage {t}: {html.escape(names[t - 1])}"}</td>'
            + "".join(_cell(v, min(span[units[i]]), max(span[units[i]]), collapsed[t][i]) for i, v in enumerate(row))
            + "</tr>" for t, row in enumerate(R)]
    return "<table>" + head + "".join(rows) + "</table>"


def _unit(metric: str) -> str:
    """'accuracy (fraction)', 'neg_nll (nats/token)': the column's metric and its unit (eval/specs.py)."""
    s = find(metric)
    return f"{metric} ({s.unit})" if s else metric


def over_stages(R: list[list[float]], units: list[str] | None = None) -> list[dict]:
    """The metrics of the plan cut after each stage t (the first t tasks), t = 1..T, per unit."""
    return [by_unit([row[:t] for row in R[: t + 1]], (units or [])[:t] or None) for t in range(1, len(R))]


def line_chart(series: dict[str, list[float | None]], width: int = 520, height: int = 220) -> str:
    """Lines over stages 1..T in inline SVG, one colour per series, with a legend."""
    colours = ["#2166ac", "#b2182b", "#1b7837", "#762a83", "#e08214"]
    vals = [v for s in series.values() for v in s if v is not None]
    if not vals:
        return ""
    lo, hi = min(vals + [0.0]), max(vals + [0.0])
    span = (hi - lo) or 1.0
    n = max(len(s) for s in series.values())
    x = lambda i: 50 + i * (width - 80) / max(n - 1, 1)  # noqa: E731
    y = lambda v: 20 + (hi - v) / span * (height - 50)  # noqa: E731
    parts = [f'<line x1="50" x2="{width - 30}" y1="{y(0):.1f}" y2="{y(0):.1f}" stroke="#aaa" stroke-dasharray="4"/>',
             f'<text x="4" y="{y(hi) + 4:.1f}">{hi:.2f}</text><text x="4" y="{y(lo) + 4:.1f}">{lo:.2f}</text>']
    for k, (name, s) in enumerate(series.items()):
        pts = [(x(i), y(v)) for i, v in enumerate(s) if v is not None]
        c = colours[k % len(colours)]
        if len(pts) > 1:
            parts.append(f'<polyline fill="none" stroke="{c}" stroke-width="2" points="'
                         + " ".join(f"{a:.1f},{b:.1f}" for a, b in pts) + '"/>')
        parts += [f'<circle cx="{a:.1f}" cy="{b:.1f}" r="3" fill="{c}"/>' for a, b in pts]
        parts.append(f'<text x="{width - 24}" y="{20 + 16 * k}" fill="{c}">{html.escape(name)}</text>')
    parts += [f'<text x="{x(i) - 14:.1f}" y="{height - 8}">stage {i + 1}</text>' for i in range(n)]
    return f'<svg width="{width + 170}" height="{height}" role="img">' + "".join(parts) + "</svg>"


def write_report(out: dict, path: Path, warnings: list[str] = ()) -> None:
    """The page; `warnings` (the collapsed stages) in a box at the top."""
    parts = [f"<h1>Continual plan: strategy {html.escape(out['strategy']['name'])}</h1>"]
    parts += [f'<p class="warn" style="background:#fdecea;color:#8c1d18;padding:6px 10px">&#9888; '
              f"{html.escape(w.removeprefix('[continual] warning: '))}</p>" for w in warnings]
    if out.get("note"):
        parts.append(f'<p class="note">{html.escape(out["note"])}</p>')
    parts.append('<p class="note">ACC = mean of the last row; BWT = mean of R[T][i] - R[i][i]; F = mean of the '
                 "best earlier score minus the last; LA = mean of the diagonal; FWT = mean of R[i-1][i] - R[0][i]; "
                 "general NLL change and KL are against the base model on general text. Stages scored in different "
                 "units (accuracy, negative NLL) are averaged apart: ACC[accuracy], ACC[neg_nll].</p>")
    for k, o in enumerate(out["orders"]):
        parts.append(f"<h2>Order {k}: {' &rarr; '.join(html.escape(n) for n in o['order'])}</h2>")
        units = o.get("units")
        parts.append(heatmap(o["R"], o["order"], units, o.get("collapsed")))
        cut = over_stages(o["R"], units)
        for u in dict.fromkeys(units or [None]):
            sub = "" if len(set(units or [])) <= 1 else f"[{u}]"
            parts.append(f"<p>The metrics of the stages learnt so far, after each stage{f' ({_unit(u)})' if sub else ''}</p>")
            parts.append(line_chart({m: [c.get(m + sub) for c in cut] for m in ("ACC", "LA", "BWT", "F")}))
        parts.append("<p>Forgetting on general text, against the base model</p>")
        parts.append(line_chart({"general NLL change": [p["ref_nll_change"] for p in o["probe"][1:]],
                                 "KL to base": [p["kl_to_base"] for p in o["probe"][1:]]}))
    m = out["mean"]
    parts.append("<h2>Summary</h2><table><tr>" + "".join(f"<th>{k}</th>" for k in m) + "</tr><tr>"
                 + "".join(f"<td>{v:+.3f}</td>" for v in m.values()) + "</tr></table>")
    refs = out.get("references") or {}
    if refs:
        parts.append("<h2>References</h2><table>" + "".join(
            f'<tr><td class="name">{html.escape(k)}</td><td>'
            + ", ".join(f"{n} {v:.3f}" for n, v in scores.items()) + "</td></tr>" for k, scores in refs.items())
            + "</table>")
    path.write_text(page("continual", "".join(parts)))
