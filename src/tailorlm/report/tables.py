"""The report's tables, as HTML strings: before/after with deltas, probes, the data and its audit,
the environment, and what the run said along the way (warnings, interruptions, checkpoint errors)."""
from __future__ import annotations

import math
from html import escape

from ..eval.metrics import NOT_FOR_CLASSIFICATION, collapsed, deltas
from ..eval.specs import find, owner
from .charts import FORGETTING
from .svg import finite

HIDDEN = {"step", "val_tokens", "majority"}   # counts and references, not scores
ONE_CLASS = ("accuracy", "macro_f1")          # what a collapsed classifier's gain is not


def num(v, signed: bool = False) -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return escape(str(v)) if v is not None else ""
    if not math.isfinite(v):
        return str(v)
    return f"{v:+.4f}" if signed else (f"{v:,}" if isinstance(v, int) else f"{v:.4f}")


def _change_cell(metric: str, before, after, change, one_class: str | None = None) -> str:
    """The change, green when base -> after is an improvement and red when it is a loss, by the metric's
    spec (eval/specs.py; a target metric: closer to its target); uncoloured without a direction. A
    classifier that answers one class for every row (`one_class`): its accuracy and macro-F1 change is
    never green, however large, but marked as that collapse."""
    if one_class and metric in ONE_CLASS and finite(change):
        return (f'<td class="collapsed" title="the model answers {escape(repr(one_class))} for every held-out '
                f'row">{num(change, True)} &#9888; one class</td>')
    s = find(metric)
    good = s.good_change(before, after) if s and finite(before) and finite(after) else None
    if not finite(change) or change == 0 or good is None:
        return f"<td>{num(change, True)}</td>"
    return f'<td class="{"good" if good else "bad"}">{num(change, True)}</td>'


def latest_scores(run: dict) -> tuple[dict, str]:
    """The final scores (summary.json), or the last evaluation's while running or after a kill."""
    if run["summary"] and isinstance(run["summary"].get("final"), dict):
        return run["summary"]["final"], "after tuning"
    if run["evals"]:
        return run["evals"][-1]["eval"], f"latest (step {run['evals'][-1]['step']})"
    return {}, "after tuning"


def where(run: dict, metric: str) -> str:
    """'test, 40 rows': the split and rows the metric was scored on (collect.scored_on), '' if unknown."""
    split, n = (run.get("scored_on") or {}).get(owner(metric) or "", (None, None))
    return f"{split}, {n:,} rows" if split and isinstance(n, int) else (split or "")


def before_after(run: dict) -> str:
    """metric | scored on | base model | after | change: every numeric score (a classifier's: no
    perplexity); retention measures are changes already."""
    after, label = latest_scores(run)
    base = run["base"] or {}
    d, one = deltas(after, base), collapsed(after)
    hide = HIDDEN | (NOT_FOR_CLASSIFICATION if run.get("classification") else set())
    keys = [k for k in dict.fromkeys(list(base) + list(after))
            if k not in hide and (finite(base.get(k)) or finite(after.get(k)))]
    if not keys:
        return '<p class="note">No evaluation yet.</p>'
    rows = []
    for k in keys:
        is_change = k in FORGETTING and k != "ref_nll"     # a change from the base already (base: 0)
        change = after.get(k) if is_change else d.get(k)
        s = find(k)
        arrow = f' <span class="dir" title="{s.label}">{s.arrow}</span>' if s and s.arrow else ""
        cell = _change_cell(k, 0.0 if is_change else base.get(k), after.get(k), change, one)
        rows.append(f'<tr><td class="name">{escape(k)}{arrow}</td><td class="name note">{escape(where(run, k))}</td>'
                    f"<td>{num(base.get(k))}</td><td>{num(after.get(k))}</td>{cell}</tr>")
    head = (f"<tr><th>metric</th><th class=\"name\">scored on</th><th>base model</th><th>{escape(label)}</th>"
            "<th>change</th></tr>")
    warn = after.get("accuracy_warning") if not one else None   # (a collapse: the banner at the top says it)
    return (f'<table class="ba">{head}{"".join(rows)}</table>' + budget_note(run, after)
            + (f'<div class="warn">&#9888; {escape(str(warn))}</div>' if warn else ""))


def budget_note(run: dict, after: dict) -> str:
    """With a forgetting budget (retention.budget): the budget, the forgetting reached, and the
    distillation weight's path (summary.json's "budget", or the step records while running)."""
    b = (run.get("summary") or {}).get("budget") or {}
    budget = b.get("budget", ((run.get("config") or {}).get("retention") or {}).get("budget"))
    if not finite(budget):
        return ""
    reached = b.get("forgetting", after.get("ref_nll_change"))
    path = [w for _, w in b.get("weight") or []] or [r["distill_weight"] for r in run.get("steps") or []
                                                     if "distill_weight" in r]
    over = finite(reached) and reached > budget
    said = (f'reached <span class="{"bad" if over else ""}">{num(reached, True)}</span>' if finite(reached)
            else "not measured yet")
    weight = (f"; distillation weight {num(path[0])} &rarr; {num(path[-1])} (highest {num(max(path))}, "
              f"{len(path)} points)" if path else "")
    return f'<p>Forgetting budget {num(budget)} nats/token (ref_nll_change): {said}{weight}</p>'


def _ci(row: dict) -> str:
    lo, hi = row.get("lo"), row.get("hi")
    return f"[{num(lo, True)}, {num(hi, True)}]" if finite(lo) and finite(hi) else ""


def _verdict_class(row: dict) -> str:
    """Red only on a change for the worse (probes/verdict.py's `verdict`): a significant drop in stereotype
    preference is no harm. A row from before verdicts: uncoloured."""
    from ..probes.verdict import VERDICT_CLASS
    return VERDICT_CLASS.get(str(row.get("verdict")), "")


def probe_section(probe: dict) -> str:
    """One RUN/probes/NAME.json (probes/store.py): its rows with the paired-bootstrap CI, its warnings
    in red, and its own HTML fragment (explanations with highlighted tokens) inline."""
    parts = [f'<h3>{escape(str(probe.get("title") or probe.get("name")))}</h3>']
    parts += [f'<div class="warn">&#9888; {escape(str(w))}</div>' for w in probe.get("warnings") or []]
    rows = probe.get("rows") or []
    if rows:
        head = ("<tr><th>metric</th><th>group</th><th>base</th><th>tuned</th><th>change</th><th>95% CI</th>"
                "<th>verdict</th></tr>")
        body = "".join(
            f'<tr><td class="name">{escape(str(r.get("metric", "")))}</td><td class="name">{escape(str(r.get("group", "")))}'
            f'</td><td>{num(r.get("base"))}</td><td>{num(r.get("tuned"))}</td><td>{num(r.get("change"), True)}</td>'
            f'<td>{_ci(r)}</td>'
            f'<td class="{_verdict_class(r)}">{escape(str(r.get("verdict") or ("yes" if r.get("significant") else "no")))}'
            '</td></tr>'
            for r in rows)
        parts.append(f"<table>{head}{body}</table>")
    if probe.get("html"):
        parts.append(f'<div class="fragment">{probe["html"]}</div>')   # (written by tailorlm's own probes)
    return "".join(parts)


def _kv(pairs) -> str:
    return "<table>" + "".join(f'<tr><td class="name">{escape(str(k))}</td><td class="name">{num(v)}</td></tr>'
                               for k, v in pairs if v not in (None, "", [], {})) + "</table>"


def scored_here(run: dict, data: dict) -> dict[str, str]:
    """{split: 'accuracy, macro_f1 (first 40 of 50 rows)'}: the before/after scores each split gave."""
    after, _ = latest_scores(run)
    hide = HIDDEN | (NOT_FOR_CLASSIFICATION if run.get("classification") else set())
    groups: dict[tuple, list[str]] = {}
    for k, v in after.items():
        split, n = (run.get("scored_on") or {}).get(owner(k) or "", (None, None))
        if split and finite(v) and k not in hide:
            groups.setdefault((split, n), []).append(k)
    out = {}
    for (split, n), ks in groups.items():
        total = (data.get(split) or {}).get("rows")
        part = f"first {n:,} of {total:,}" if isinstance(total, int) and isinstance(n, int) and n < total else "all"
        out[split] = ", ".join(ks) + (f" ({part} rows)" if isinstance(n, int) else "")
    return out


def data_section(run: dict) -> str:
    """The data as training read it (summary.json) and the audit's findings (audit.json)."""
    parts, data = [], (run["summary"] or {}).get("data") or {}
    if data.get("test_rows") and not isinstance(data.get("test"), dict):   # (a run from before "test" had counts)
        data = {**data, "test": {"rows": data["test_rows"]}}
    splits = [s for s in ("train", "val", "test") if isinstance(data.get(s), dict)]
    if splits:
        cols = ["rows", "examples", "tokens", "target_tokens", "truncated", "dropped_too_long", "skipped_bad_rows"]
        here = scored_here(run, data)
        parts.append(f'<p>format <b>{escape(str(data.get("format")))}</b>'
                     + (f', labels {escape(", ".join(map(str, data["labels"])))}' if data.get("labels") else "")
                     + "</p><table><tr><th>split</th>" + "".join(f"<th>{c.replace('_', ' ')}</th>" for c in cols)
                     + '<th class="name">before/after scores from here</th></tr>'
                     + "".join(f'<tr><td class="name">{s}</td>'
                               + "".join(f"<td>{num(data[s].get(c))}</td>" for c in cols)
                               + f'<td class="name">{escape(here.get(s, ""))}</td></tr>' for s in splits) + "</table>")
    audit = run["audit"]
    if audit:
        c = audit.get("counts") or {}
        parts.append(f'<p>Data audit: <span class="{"bad" if c.get("fatal") else ""}">{c.get("fatal", 0)} fatal</span>, '
                     f'<span class="{"warntext" if c.get("warning") else ""}">{c.get("warning", 0)} warnings</span>, '
                     f'{c.get("info", 0)} notes</p>')
        rows = "".join(f'<tr class="{escape(str(f.get("severity")))}"><td class="name">{escape(str(f.get("severity")))}</td>'
                       f'<td class="name">{escape(str(f.get("check")))}</td><td class="name">{escape(str(f.get("message")))}'
                       f'</td><td>{num(f.get("count"))}</td></tr>' for f in (audit.get("findings") or [])[:40])
        if rows:
            parts.append("<table><tr><th>severity</th><th>check</th><th>finding</th><th>rows</th></tr>"
                         + rows + "</table>")
    return "".join(parts) or '<p class="note">No data summary yet (written at the end of the run).</p>'


def env_section(run: dict) -> str:
    env, s = run["env"] or {}, run["summary"] or {}
    versions = env.get("versions") or {}
    pairs = [("device", s.get("device") or env.get("device")), ("GPU", env.get("gpu")),
             ("processes", s.get("processes") or env.get("processes")), ("parallel", s.get("parallel")),
             ("precision", env.get("precision")), ("CPU threads", env.get("threads")), ("CPUs", env.get("cpus")),
             ("Python", env.get("python")), ("platform", env.get("platform"))] + list(versions.items())
    if not env:
        pairs.append(("note", "no env.json (a run from before reports were written)"))
    return _kv(pairs)


def events_section(run: dict) -> str:
    """Evaluation warnings (each message once, with the steps it came up at) and logged events."""
    seen: dict[str, list] = {}
    for e in run["evals"]:
        for w in e.get("warnings") or []:
            seen.setdefault(str(w), []).append(e["step"])
    items = [f'<li class="warntext">{escape(w)} <span class="note">(step {", ".join(map(str, s[:5]))}'
             f'{", ..." if len(s) > 5 else ""})</span></li>' for w, s in seen.items()]
    for ev in run["events"]:
        what = ", ".join(f"{k}: {v}" for k, v in ev.items() if k not in ("time", "step"))
        if what:
            items.append(f'<li>step {ev.get("step", "?")}: {escape(what)}</li>')
    return f"<ul>{''.join(items)}</ul>" if items else ""
