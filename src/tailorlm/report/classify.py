"""A classifier's part of the report: the banner of a collapsed run (one class for every held-out
row), its per-class precision, recall and F1 against the base model, and the confusion matrices.

The scores carry them (eval/tasks.py): `per_class` {label: {precision, recall, f1, support}},
`confusion` {labels, matrix} with matrix[i][j] the rows of true label i predicted as label j, and
`collapsed` (the one label answered). A collapse is said at the top of the page, before any number,
because its accuracy equals the majority rate and so reads as a gain on skewed data.
"""
from __future__ import annotations

from html import escape

from ..eval.metrics import collapsed
from ..eval.specs import find
from .svg import finite
from .tables import latest_scores, num

BANNER_STYLE = """.banner{background:#fdecea;border:2px solid #b3261e;color:#5f1410;padding:10px 14px;margin:12px 0;
border-radius:6px;font-size:15px}.banner b.what{color:#b3261e}
td.collapsed{color:#8a5300;background:#fff6e0;font-weight:600}
.confusions{display:flex;flex-wrap:wrap;gap:6px 28px}.confusions h3{margin-top:4px}
table.confusion td.hit{font-weight:600}table.confusion th.corner{font-weight:400;color:#555;font-size:12px}"""


def _held(run: dict) -> tuple[str, object]:
    """(split, rows) the classifier was scored on (collect.scored_on), ('held-out', None) if unknown."""
    split, n = (run.get("scored_on") or {}).get("accuracy", (None, None))
    return split or "held-out", n


def held_label(run: dict) -> str:
    split, n = _held(run)
    return f"{split} split, {n:,} rows" if isinstance(n, int) else f"{split} split"


def collapse_banner(run: dict, many: bool = False) -> str:
    """The warning at the top of the page when the latest scores answer one class for every row."""
    after, label = latest_scores(run)
    one = collapsed(after)
    if not one:
        return ""
    split, n = _held(run)
    rows = f"all {n:,} held-out rows" if isinstance(n, int) else "every held-out row"
    who, when = f" {escape(run['name'])}:" if many else "", escape(label[:1].upper() + label[1:])
    return (f'<div class="banner" role="alert" data-collapsed="{escape(str(one))}"><b class="what">&#9888; '
            f"Collapsed classifier.</b>{who} {when}, the model answers <b>{escape(repr(one))}</b> for "
            f"{rows} ({escape(split)} split). Its accuracy {num(after.get('accuracy'))} is only that label's share "
            f"of the rows (the majority rate is {num(after.get('majority'))}) and its macro-F1 is "
            f"{num(after.get('macro_f1'))}: the change in accuracy below is not a success. "
            "Fix: data.balance: sample or weight, or a lower train.lr.</div>")


def _f1_change(before, after, plain: bool) -> str:
    if not (finite(before) and finite(after)):
        return "<td></td>"
    good = None if plain else find("macro_f1").good_change(before, after)
    cls = "" if good is None else f' class="{"good" if good else "bad"}"'
    return f"<td{cls}>{num(after - before, True)}</td>"


def per_class_table(after: dict, base: dict | None) -> str:
    """label | rows | predicted | precision | recall | F1 | base F1 | change; the change uncoloured
    when the model collapsed (a collapsed class's F1 rises with every row it takes)."""
    conf = after.get("confusion") or {}
    labels, matrix = conf.get("labels") or list(after["per_class"]), conf.get("matrix") or []
    predicted = [sum(r[j] for r in matrix) for j in range(len(labels))] if matrix else [None] * len(labels)
    bpc, plain = (base or {}).get("per_class") or {}, collapsed(after) is not None
    head = ("<tr><th>label</th><th>rows</th><th>predicted</th><th>precision</th><th>recall</th><th>F1</th>"
            + ("<th>base F1</th><th>change</th>" if bpc else "") + "</tr>")
    body = []
    for lab, n in zip(labels, predicted):
        c, b = after["per_class"].get(lab) or {}, (bpc.get(lab) or {}).get("f1")
        body.append(f'<tr><td class="name">{escape(str(lab))}</td><td>{num(c.get("support"))}</td><td>{num(n)}</td>'
                    f'<td>{num(c.get("precision"))}</td><td>{num(c.get("recall"))}</td><td>{num(c.get("f1"))}</td>'
                    + (f"<td>{num(b)}</td>{_f1_change(b, c.get('f1'), plain)}" if bpc else "") + "</tr>")
    return f'<table class="per-class">{head}{"".join(body)}</table>'


def confusion_table(conf: dict, title: str) -> str:
    """The matrix, rows = true label and columns = predicted; a cell's shade is its share of its row
    (the diagonal green, the rest red), so where the rows went shows at a glance."""
    labels, matrix = conf.get("labels") or [], conf.get("matrix") or []
    head = ('<tr><th class="corner">true &#8595; predicted &#8594;</th>'
            + "".join(f"<th>{escape(str(lab))}</th>" for lab in labels) + "</tr>")
    body = []
    for i, (lab, row) in enumerate(zip(labels, matrix)):
        total = sum(row) or 1
        cells = []
        for j, k in enumerate(row):
            rgb = "17,121,58" if i == j else "179,38,30"
            shade = f' style="background:rgba({rgb},{0.45 * k / total:.2f})"' if k else ""
            cells.append(f'<td class="{"hit" if i == j else "miss"}"{shade}>{k:,}</td>')
        body.append(f'<tr><td class="name">{escape(str(lab))}</td>{"".join(cells)}</tr>')
    return (f'<div><h3>{escape(title)}</h3><table class="confusion" data-title="{escape(title)}">{head}'
            f'{"".join(body)}</table></div>')


def class_section(run: dict) -> str:
    """Per-class scores and the confusion matrices (after, and the base model's) of a classification run."""
    after, label = latest_scores(run)
    if not isinstance(after.get("per_class"), dict) or not after["per_class"]:
        return ""
    base = run.get("base") or {}
    parts = [f'<p class="note">Scored on the {escape(held_label(run))}; rows: held-out rows with that true label; '
             "predicted: rows the model gave that label.</p>", per_class_table(after, base)]
    mats = [confusion_table(s["confusion"], t) for s, t in ((after, f"confusion matrix, {label}"),
                                                            (base, "confusion matrix, base model"))
            if isinstance(s.get("confusion"), dict) and s["confusion"].get("matrix")]
    if mats:
        parts.append(f'<div class="confusions">{"".join(mats)}</div>')
    return "".join(parts)
