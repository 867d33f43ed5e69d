"""Charts as inline SVG strings: a page that holds them needs no script, stylesheet or network.

    line_chart(series, title=..., hlines=...)    lines over steps; hlines are reference values (the base model)
    scatter_chart(points, title=..., ...)        labelled points with error bars and the Pareto front joined

Every chart is `<svg data-chart="TITLE">`, and each series a `<g data-series="NAME" data-last="REPR"
data-n="N">` (the last y drawn, repr of the float, and how many points were drawn), so a test reads back
from the page what was drawn. Long series are downsampled per bucket keeping each bucket's min and max
(the "M4"/min-max idea: a spike survives, the shape at a glance does not change) and the first and last
points, so a 100k-step run draws at most ~400 points per line.
"""
from __future__ import annotations

import math
from html import escape

# Okabe & Ito's colour-blind-safe palette (blue, vermillion, green, purple, orange, sky, yellow, grey)
COLOURS = ["#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#b8a200", "#777777"]
MAX_POINTS = 400
FONT = 'font-family="system-ui,-apple-system,Segoe UI,sans-serif" font-size="11"'
HLINE_DASH = "2 3"   # reference lines dotted, series dashed ("6 3"): a run's base line and its val loss differ
CHAR_W = 6.2   # rough width of one 11px character, for laying out the legend


def colour(i: int) -> str:
    return COLOURS[i % len(COLOURS)]


def finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def downsample(points: list, limit: int = MAX_POINTS) -> list:
    """At most ~limit points, in x order: the first and last, and per bucket the min and max y."""
    if len(points) <= limit:
        return list(points)
    inner, buckets = points[1:-1], max(1, (limit - 2) // 2)
    size = len(inner) / buckets
    out = [points[0]]
    for b in range(buckets):
        chunk = inner[int(b * size): int((b + 1) * size)]
        if not chunk:
            continue
        lo, hi = min(chunk, key=lambda p: p[1]), max(chunk, key=lambda p: p[1])
        out += sorted({id(lo): lo, id(hi): hi}.values(), key=lambda p: p[0])
    return out + [points[-1]]


def nice_ticks(lo: float, hi: float, n: int = 5, integer: bool = False) -> list[float]:
    """About n round ticks (1, 2, 2.5, 5 x 10^k) covering [lo, hi]; `integer`: whole steps only (x = steps)."""
    if hi <= lo:
        lo, hi = lo - (abs(lo) or 1) * 0.5, hi + (abs(hi) or 1) * 0.5
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw and not (integer and m * mag % 1))
    first = math.ceil(lo / step - 1e-9) * step
    return [round(first + i * step, 12) for i in range(int((hi - first) / step + 1e-9) + 1)]


def fmt(v: float) -> str:
    """A tick or value label: 0.0002 -> 2e-4, 12000 -> 12k, 0.83333 -> 0.8333, 3.0 -> 3."""
    a = abs(v)
    if a == 0:
        return "0"
    if a < 1e-3:
        mant, exp = f"{v:.2e}".split("e")
        return f"{float(mant):g}e{int(exp)}"
    if a >= 1e6:
        return f"{v / 1e6:.3g}M"
    if a >= 1e4:
        return f"{v / 1e3:.3g}k"
    return f"{v:.4g}"


def _legend(entries: list[tuple[str, str, bool | str]], x0: float, width: float) -> tuple[list[str], int]:
    """Legend items (swatch + text) laid out left to right, wrapping; returns the parts and rows used."""
    parts, x, row = [], x0, 0
    for text, c, dashed in entries:
        w = 26 + CHAR_W * len(text)
        if x + w > width and x > x0:
            x, row = x0, row + 1
        y = 34 + row * 15
        dash = f' stroke-dasharray="{dashed if isinstance(dashed, str) else "5 3"}"' if dashed else ""
        parts.append(f'<line x1="{x:.0f}" x2="{x + 16:.0f}" y1="{y - 4}" y2="{y - 4}" stroke="{c}" '
                     f'stroke-width="2.5"{dash}/><text x="{x + 20:.0f}" y="{y}" fill="#333">{escape(text)}</text>')
        x += w + 10
    return parts, row + 1 if entries else 0


def _frame(title: str, width: int, height: int, body: list[str]) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" data-chart="{escape(title)}" width="{width}" '
            f'height="{height}" viewBox="0 0 {width} {height}" role="img" {FONT}><title>{escape(title)}</title>'
            f'<text x="10" y="16" style="font:600 13px system-ui,sans-serif" fill="#222">{escape(title)}</text>'
            + "".join(body) + "</svg>")


def _axes(box, xt, yt, sx, sy, x_label, y_label) -> list[str]:
    """Grid lines, tick labels and axis titles; box = (left, top, right, bottom) of the plot area."""
    l, t, r, b = box
    out = [f'<rect x="{l}" y="{t}" width="{r - l}" height="{b - t}" fill="#fcfcfc" stroke="#ccc"/>']
    for v in yt:
        y = sy(v)
        out.append(f'<line x1="{l}" x2="{r}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e6e6e6"/>'
                   f'<text x="{l - 5}" y="{y + 3.5:.1f}" text-anchor="end" fill="#555">{fmt(v)}</text>')
    for v in xt:
        x = sx(v)
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{b}" y2="{b + 4}" stroke="#999"/>'
                   f'<text x="{x:.1f}" y="{b + 15}" text-anchor="middle" fill="#555">{fmt(v)}</text>')
    out.append(f'<text x="{(l + r) / 2:.0f}" y="{b + 29}" text-anchor="middle" fill="#555">{escape(x_label)}</text>')
    if y_label:
        out.append(f'<text transform="translate(12 {(t + b) / 2:.0f}) rotate(-90)" text-anchor="middle" '
                   f'fill="#555">{escape(y_label)}</text>')
    return out


def _scale(lo: float, hi: float, a: float, b: float):
    span = (hi - lo) or 1.0
    return lambda v: a + (v - lo) / span * (b - a)


def _range(vals: list[float], ticks: int) -> tuple[list[float], float, float]:
    lo, hi = min(vals), max(vals)
    pad = (hi - lo) * 0.05 or (abs(hi) * 0.05 or 0.5)
    t = nice_ticks(lo - pad, hi + pad, ticks)
    return t, min(t[0], lo - pad), max(t[-1], hi + pad)


def _clean(points) -> list[tuple[float, float]]:
    return sorted(((float(x), float(y)) for x, y in points if finite(x) and finite(y)), key=lambda p: p[0])


def line_chart(series: list[dict], *, title: str, x_label: str = "step", y_label: str = "",
               hlines: list[dict] = (), width: int = 560, height: int = 260, y_zero: bool = False) -> str:
    """Lines over x with a legend (each name with its last value) and dotted reference lines; `y_zero`:
    the y axis starts at 0 (memory: a 2 MiB wobble on 470 MiB should look like one).

    series: [{"name", "points": [(x, y), ...], "dashed": bool?, "colour": str?, "opacity": float?}];
    hlines: [{"name", "y", "colour": str?}].
    None/NaN points are left out; a series with one point is a dot; short series (evaluations) get dots."""
    lines = [(s, _clean(s.get("points", []))) for s in series]
    lines = [(s, pts) for s, pts in lines if pts]
    refs = [h for h in hlines if finite(h.get("y"))]
    entries = [(f"{s['name']}  {fmt(pts[-1][1])}", s.get("colour") or colour(i), bool(s.get("dashed")))
               for i, (s, pts) in enumerate(lines)]
    entries += [(f"{h['name']}  {fmt(h['y'])}", h.get("colour") or "#555", HLINE_DASH) for h in refs]
    legend, rows = _legend(entries, 10, width - 10)
    box = (54, 34 + 15 * rows, width - 14, height - 36)
    if not lines:
        return _frame(title, width, height, legend + [f'<text x="{width / 2:.0f}" y="{height / 2:.0f}" '
                                                      'text-anchor="middle" fill="#888">no data yet</text>'])
    xs = [p[0] for _, pts in lines for p in pts]
    yt, ylo, yhi = _range([p[1] for _, pts in lines for p in pts] + [h["y"] for h in refs] + [0.0] * y_zero, 5)
    x0, x1 = min(xs), max(xs)
    whole = all(float(x).is_integer() for x in xs)
    xt = [v for v in nice_ticks(x0, x1, 6, whole) if x0 <= v <= x1] if x1 > x0 else [x0]
    sx = _scale(x0, x1, box[0] + 4, box[2] - 4) if x1 > x0 else (lambda v: (box[0] + box[2]) / 2)
    sy = _scale(ylo, yhi, box[3], box[1])
    body = legend + _axes(box, xt, [v for v in yt if ylo <= v <= yhi], sx, sy, x_label, y_label)
    for h in refs:
        c, y = h.get("colour") or "#555", sy(h["y"])
        body.append(f'<g data-hline="{escape(h["name"])}" data-y="{float(h["y"])!r}"><line x1="{box[0]}" '
                    f'x2="{box[2]}" y1="{y:.1f}" y2="{y:.1f}" stroke="{c}" stroke-width="1.5" '
                    f'stroke-dasharray="{HLINE_DASH}"/></g>')
    for i, (s, pts) in enumerate(lines):
        drawn, c = downsample(pts), s.get("colour") or colour(i)
        xy = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in drawn)
        dash = ' stroke-dasharray="6 3"' if s.get("dashed") else ""
        g = [f'<polyline fill="none" stroke="{c}" stroke-width="1.8" stroke-linejoin="round"{dash} points="{xy}"/>'
             if len(drawn) > 1 else ""]
        if len(drawn) <= 30:   # few points (evaluations): each one a dot, so none hides on a line
            g += [f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{c}"/>' for x, y in drawn]
        op = f' opacity="{float(s["opacity"])}"' if s.get("opacity") else ""   # (raw beside smoothed: faint)
        body.append(f'<g data-series="{escape(s["name"])}" data-last="{pts[-1][1]!r}" data-n="{len(drawn)}"{op}>'
                    f'<title>{escape(s["name"])}: last {fmt(pts[-1][1])} at {x_label} {fmt(pts[-1][0])}</title>'
                    + "".join(g) + "</g>")
    return _frame(title, width, height, body)


def scatter_chart(points: list[dict], *, title: str, x_label: str, y_label: str,
                  width: int = 560, height: int = 320) -> str:
    """Labelled points with error bars (xerr/yerr: half-widths), the Pareto-flagged ones joined in x order.

    points: [{"name", "x", "y", "xerr": float?, "yerr": float?, "pareto": bool?}]; non-finite x/y left out."""
    pts = [p for p in points if finite(p.get("x")) and finite(p.get("y"))]
    err = lambda p, k: float(p[k]) if finite(p.get(k)) else 0.0  # noqa: E731
    if not pts:
        return _frame(title, width, height, [f'<text x="{width / 2:.0f}" y="{height / 2:.0f}" '
                                             'text-anchor="middle" fill="#888">no data</text>'])
    box = (58, 30, width - 20, height - 40)
    xt, xlo, xhi = _range([p["x"] + s * err(p, "xerr") for p in pts for s in (-1, 1)], 6)
    yt, ylo, yhi = _range([p["y"] + s * err(p, "yerr") for p in pts for s in (-1, 1)], 5)
    sx, sy = _scale(xlo, xhi, box[0], box[2]), _scale(ylo, yhi, box[3], box[1])
    body = _axes(box, [v for v in xt if xlo <= v <= xhi], [v for v in yt if ylo <= v <= yhi], sx, sy,
                 x_label, y_label)
    front = sorted((p for p in pts if p.get("pareto")), key=lambda p: p["x"])
    if len(front) > 1:
        body.append('<polyline data-pareto="1" fill="none" stroke="#999" stroke-width="1.5" stroke-dasharray="5 3" '
                    'points="' + " ".join(f"{sx(p['x']):.1f},{sy(p['y']):.1f}" for p in front) + '"/>')
    for i, p in enumerate(pts):
        c, x, y = p.get("colour") or colour(i), sx(p["x"]), sy(p["y"])
        g = []
        if err(p, "xerr"):
            g.append(f'<line x1="{sx(p["x"] - err(p, "xerr")):.1f}" x2="{sx(p["x"] + err(p, "xerr")):.1f}" '
                     f'y1="{y:.1f}" y2="{y:.1f}" stroke="{c}"/>')
        if err(p, "yerr"):
            g.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{sy(p["y"] - err(p, "yerr")):.1f}" '
                     f'y2="{sy(p["y"] + err(p, "yerr")):.1f}" stroke="{c}"/>')
        ring = ' stroke="#222" stroke-width="1.5"' if p.get("pareto") else ""
        anchor = "end" if x > (box[0] + box[2]) / 2 else "start"
        g.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4.5" fill="{c}"{ring}/><text x="{x + (-7 if anchor == "end" else 7):.1f}" '
                 f'y="{y - 6:.1f}" text-anchor="{anchor}" fill="#222">{escape(str(p["name"]))}</text>')
        body.append(f'<g data-series="{escape(str(p["name"]))}" data-last="{float(p["y"])!r}" data-n="1" '
                    f'data-x="{float(p["x"])!r}"><title>{escape(str(p["name"]))}: {x_label} {fmt(p["x"])}, '
                    f'{y_label} {fmt(p["y"])}</title>' + "".join(g) + "</g>")
    return _frame(title, width, height, body)
