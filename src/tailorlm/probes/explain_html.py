"""Explanations as highlighted text: a self-contained HTML fragment (inline styles only, no script,
no remote resource) that `tailorlm report` places in report.html, and a minimal page around it.

Each input is a card: the tuned and the base model's answers; the user's text coloured by each
model's token attributions toward the tuned answer (a diverging palette: blue supports the answer,
red speaks against it, one scale for both rows so they compare); the text, template and answer
coloured by the change in log-probability tuned - base (blue: more likely after tuning) and by
KL(base || tuned) (purple); the positions that shifted most with the tokens that rose and fell
there; and both greedy continuations. Every word shows its numbers on hover (title). Words, not
sub-word pieces, are coloured (a word's value is the sum of its pieces'), and the quantities are
named as the console names them (probes/explain_text.py: p among the labels, log p(answer)).
"""
from __future__ import annotations

from html import escape

from ..html_page import page as shell
from .explain_text import LOGP, P_LABELS, answer_text, at_word, interval, merged, shown, target_text, word_spans

BLUE, RED, PURPLE = (33, 102, 172), (178, 24, 43), (118, 42, 131)
TOKEN = "border-radius:3px;padding:1px 0;margin:0 0 2px 0;line-height:1.9"
MAX_CARDS = 20   # inputs drawn; a file of hundreds would make report.html heavy to open
MUTED = "color:#888;font-family:ui-monospace,monospace;font-size:0.82em"


def _shade(rgb: tuple, strength: float) -> str:
    """Background with alpha = strength (0..1); white text once the colour is dark."""
    a = max(0.0, min(1.0, strength))
    fg = "#fff" if a > 0.6 else "#111"
    return f"background:rgba({rgb[0]},{rgb[1]},{rgb[2]},{a * 0.9:.3f});color:{fg}"


def _visible(text: str) -> str:
    return escape(shown(text).replace("\n", "\u23ce"))


def _span(text: str, style: str, title: str) -> str:
    return f'<span style="{TOKEN};{style}" title="{escape(title)}">{_visible(text)}</span>'


def diverging(tokens: list[str], values: list[float], scale: float, label: str) -> str:
    """Tokens on blue (positive) or red (negative) in proportion to |value| / scale."""
    scale = scale or 1.0
    return "".join(_span(t, _shade(BLUE if v >= 0 else RED, abs(v) / scale), f"{label} {v:+.3f}")
                   for t, v in zip(tokens, values))


def _row(name: str, body: str) -> str:
    return (f'<div style="display:flex;gap:12px;margin:6px 0"><div style="flex:0 0 150px;color:#555;'
            f'font-size:0.85em;padding-top:3px">{escape(name)}</div><div style="white-space:pre-wrap;'
            f'word-break:break-word;flex:1">{body}</div></div>')


def _answers(it: dict) -> str:
    changed = "" if it["answer"] == it["base_answer"] else ' &middot; <b style="color:#b2182b">changed by tuning</b>'
    if it.get("reference") is not None:   # the file's own answer: what the rows below score
        changed += f' &middot; reference <b>{escape(str(it["reference"]))}</b> (scored below)'
    return (f'<div style="margin-bottom:6px">tuned: <b>{escape(answer_text(it, "tuned"))}</b> &middot; '
            f'base: <b>{escape(answer_text(it, "base"))}</b>{changed}</div>')


def _attributions(it: dict, task: str) -> str:
    """Per side, the user's words coloured by their summed attributions toward the tuned answer."""
    a = it.get("attribution")
    if not a:
        return ""
    sides = {side: merged(it["pieces"], a[side]["scores"]) for side in ("tuned", "base")}
    scale = max((abs(v) for _, vals in sides.values() for v in vals), default=1.0)
    out = ""
    for side, (words, vals) in sides.items():
        s = a[side]
        note = f"; IG delta {s['delta']:+.3g}" if s.get("delta") is not None else ""
        out += _row(f"why, {side} ({s['method']}; target {target_text(s, task)}{note})",
                    diverging(words, vals, scale, "attribution"))
    return out


def _changes(d: dict) -> str:
    """Δ log p and KL rows over the scored words (each the sum over its tokens); the template in
    muted monospace."""
    spans = word_spans(d["tokens"], d["region"])

    def add(vals: list[float]) -> list[float]:   # per word, the sum over its tokens (log p of the word)
        return [sum(vals[i] for i in g) for g in spans]
    tokens, region = ["".join(d["tokens"][i] for i in g) for g in spans], [d["region"][g[0]] for g in spans]
    base, tuned, kls = add(d["logp_base"]), add(d["logp_tuned"]), add(d["kl"])
    delta = [t - b for b, t in zip(base, tuned)]
    dscale = max(map(abs, delta), default=1.0) or 1.0
    kscale = max(kls, default=1.0) or 1.0
    dl, kl = "", ""
    for tok, reg, dv, k, b, t in zip(tokens, region, delta, kls, base, tuned):
        extra = f";{MUTED}" if reg == "template" else (";font-weight:600" if reg == "answer" else "")
        tip = f"log p base {b:.2f}, tuned {t:.2f}, change {dv:+.2f}; KL {k:.3f} ({reg})"
        dl += _span(tok, _shade(BLUE if dv >= 0 else RED, abs(dv) / dscale) + extra, tip)
        kl += _span(tok, _shade(PURPLE, k / kscale) + extra, tip)
    return _row("log p, tuned - base", dl) + _row("KL(base || tuned)", kl)


def _shifts(d: dict) -> str:
    cell = "padding:2px 8px;border-bottom:1px solid #eee;text-align:left"

    def toks(entries: list) -> str:
        return ", ".join(f"{_visible(t)!s} {b:.2f}&rarr;{a:.2f}" for t, b, a in entries)
    rows = "".join(f'<tr><td style="{cell}">{escape(at_word(d["tokens"], d["region"], s["pos"]))}</td>'
                   f'<td style="{cell}">{s["kl"]:.3f}</td>'
                   f'<td style="{cell};color:{"#2166ac"}">{toks(s["rose"])}</td>'
                   f'<td style="{cell};color:#b2182b">{toks(s["fell"])}</td></tr>' for s in d["shifts"][:3])
    head = "".join(f'<th style="{cell};font-weight:600">{h}</th>' for h in
                   ("at token", "KL", "rose (p base &rarr; tuned)", "fell"))
    return f'<table style="border-collapse:collapse;font-size:0.85em;margin:6px 0 6px 162px">{head}{rows}</table>'


def _greedy(d: dict) -> str:
    flag = "differ" if d["greedy_differs"] else "same"
    return (_row(f"greedy, base ({flag})", f'<span style="color:#333">{escape(shown(d["greedy_base"]))}</span>')
            + _row("greedy, tuned", f'<span style="color:#333">{escape(shown(d["greedy_tuned"]))}</span>'))


def legend() -> str:
    sw = lambda rgb, t: f'<span style="{TOKEN};{_shade(rgb, 0.8)};padding:1px 6px">{t}</span>'  # noqa: E731
    return (f'<div style="font-size:0.82em;color:#555;margin:4px 0 10px">{sw(BLUE, "supports / more likely")} '
            f'{sw(RED, "against / less likely")} {sw(PURPLE, "distribution moved (KL)")} &nbsp;'
            "colour strength is relative within each card; hover a word for its numbers. "
            f"<b>{P_LABELS}</b>: p(label | prompt) renormalised over the run's labels; <b>{LOGP}</b>: the "
            "natural-log probability of the answer's tokens after the prompt, summed (what the attributions "
            "explain)</div>")


def fragment(record: dict) -> str:
    """The explanations of one `explain` record as a self-contained HTML fragment."""
    cards = []
    for it in record["inputs"][:MAX_CARDS]:
        body = _answers(it) + _attributions(it, record.get("task", "causal_lm"))
        if it.get("diff"):
            body += _changes(it["diff"]) + _shifts(it["diff"]) + _greedy(it["diff"])
        cards.append(f'<div style="border:1px solid #ddd;border-radius:6px;padding:10px 14px;margin:10px 0">{body}</div>')
    more = len(record["inputs"]) - MAX_CARDS
    if more > 0:
        cards.append(f'<div style="color:#555;font-size:0.85em">{more} more inputs: in the table above and in '
                     'explain.json, not drawn</div>')
    return (f'<div style="font-family:system-ui,-apple-system,Segoe UI,sans-serif;font-size:15px;color:#111">'
            f'{legend()}{"".join(cards)}</div>')


def table(record: dict) -> str:
    """The probe's rows (base, tuned, change and its 95% interval) and warnings, as report.html shows them."""
    cell = "padding:3px 10px;border-bottom:1px solid #eee;text-align:right"
    head = "".join(f'<th style="{cell}">{h}</th>' for h in ("", "n", "base", "tuned", "change", "95% interval",
                                                             "verdict"))
    colour = {"worse": ";color:#b2182b;font-weight:600", "better": ";color:#11793a;font-weight:600"}
    body = "".join(f'<tr><td style="{cell};text-align:left">{escape(r["metric"])}</td><td style="{cell}">'
                   f'{r.get("n", "")}</td><td style="{cell}">'
                   f'{r["base"]:.3f}</td><td style="{cell}">{r["tuned"]:.3f}</td><td style="{cell}">{r["change"]:+.3f}'
                   f'</td><td style="{cell}">{interval(r)}</td><td class="{_verdict_class(r)}" style="{cell}'
                   f'{colour.get(r.get("verdict"), "")}">{escape(r.get("verdict", ""))}</td></tr>'
                   for r in record["rows"])
    warn = "".join(f'<div style="color:#b2182b;margin:4px 0">{escape(w)}</div>' for w in record["warnings"])
    return f'<table style="border-collapse:collapse;font-size:0.9em">{head}{body}</table>{warn}'


def _verdict_class(r: dict) -> str:
    return {"worse": "bad", "better": "good"}.get(r.get("verdict"), "")


def page(record: dict) -> str:
    """A minimal standalone page around the fragment (explain.html)."""
    return shell("tailorlm explain", f'<h2>Explanations: {escape(record["run"])}</h2>{table(record)}{record["html"]}',
                 "body{max-width:1100px;margin:20px auto;padding:0 16px;font-family:system-ui,sans-serif}")
