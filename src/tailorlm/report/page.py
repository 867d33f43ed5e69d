"""report.html: one self-contained page for one run or several overlaid.

Nothing is fetched to open it: inline CSS, inline SVG charts (report/svg.py), no script, no font, no
image; a Content-Security-Policy of `default-src 'none'` makes a browser refuse anything remote even
if a probe's fragment asked for it. Top to bottom: a banner for a classifier that collapsed to one
class, what each run is and where it stands, before/after with deltas (each score's split and rows),
a classifier's per-class scores and confusion matrices, training curves, evaluation scores over
steps (base model dashed), forgetting, probes, warnings and events, the data (which split gave which
score) and its audit, the environment, the resolved config.
"""
from __future__ import annotations

import time
from html import escape
from pathlib import Path

from ..atomic import naming, write_text
from ..html_page import STYLE, page
from .charts import eval_charts, training_charts
from .classify import BANNER_STYLE, class_section, collapse_banner
from ..run.folder import REPORT, RunDir
from .collect import read_run
from .svg import colour, fmt
from .tables import before_after, data_section, env_section, events_section, latest_scores, probe_section

PAGE_STYLE = STYLE + """
body{max-width:1240px}h1{margin-bottom:4px}h2{border-bottom:1px solid #ddd;padding-bottom:4px}
h3{font-size:14px;margin:18px 0 6px}th.name{text-align:left}.charts{display:flex;flex-wrap:wrap;gap:12px 20px}
svg.chart text{font-size:11px}th:first-child{text-align:left}.charts svg{background:#fff;border:1px solid #e4e4e4;border-radius:6px}
.runhead{border-left:5px solid #888;padding:6px 12px;margin:10px 0;background:#fafafa}
.runhead .facts{color:#444}.status{font-weight:600}.status.live{color:#a15c00}
td.good{color:#11793a;font-weight:600}td.bad,.bad{color:#b3261e;font-weight:600}.dir{color:#888;font-size:12px}
.warn{background:#fdecea;border:1px solid #f5c2c0;color:#8c1d18;padding:6px 10px;margin:6px 0;border-radius:4px}
.warntext{color:#8a5300}tr.fatal td{background:#fdecea}tr.warning td{background:#fff6e0}
pre{background:#f6f6f6;padding:10px;overflow:auto;font-size:12px;max-height:520px}
details{margin:6px 0}summary{cursor:pointer;color:#333}.fragment{margin:8px 0}
""" + BANNER_STYLE


def _facts(run: dict) -> str:
    cfg, s = run["config"], run["summary"] or {}
    model = (cfg.get("model") or {}).get("path", "?")
    method = cfg.get("method") or {}
    m = method.get("name", "?") + (f" r={method['r']}" if method.get("r") else "")
    facts = [f"model <b>{escape(str(model))}</b>", f"method <b>{escape(m)}</b>"]
    if s:
        facts += [f"{s.get('trainable_params') or 0:,} of {s.get('total_params') or 0:,} parameters trained",
                  f"{s.get('train_tokens') or 0:,} tokens in {fmt(s.get('train_time_s') or 0)} s "
                  f"({fmt(s.get('tokens_per_s') or 0)} tokens/s)"]
        keep_best = (cfg.get("eval") or {}).get("keep_best", True)
        held = s.get("best_step") if keep_best and s.get("best_step") is not None else s.get("steps")
        if held is not None:
            facts.append(f"final/ holds step {held}")
    return " &middot; ".join(facts)


def run_header(run: dict, i: int) -> str:
    live = "" if run["summary"] else " live"
    return (f'<div class="runhead" style="border-left-color:{colour(i)}"><b>{escape(run["name"])}</b> '
            f'<span class="status{live}">{escape(run["status"])}</span><br><span class="facts">{_facts(run)}</span>'
            f'<br><span class="note">{escape(run["dir"])}</span></div>')


def _section(title: str, body: str, anchor: str) -> str:
    return f'<h2 id="{anchor}">{title}</h2>{body}' if body else ""


def _per_run(runs: list[dict], fn) -> str:
    """fn(run) for each run, under the run's name (in its colour) when there are several."""
    if len(runs) == 1:
        return fn(runs[0])
    parts = [(i, r, fn(r)) for i, r in enumerate(runs)]
    return "".join(f'<h3 style="color:{colour(i)}">{escape(r["name"])}</h3>{html}' for i, r, html in parts if html)


def _charts(charts: list[str]) -> str:
    return f'<div class="charts">{"".join(charts)}</div>' if charts else ""


def _probes(run: dict) -> str:
    return "".join(probe_section(p) for p in run["probes"])


def _config(run: dict) -> str:
    text = run["config_text"] or "(no config.yaml)"
    return f"<details><summary>config.yaml (resolved)</summary><pre>{escape(text)}</pre></details>"


def render(runs: list[dict]) -> str:
    """The whole page for runs (collect.read_run dicts), as one HTML string."""
    scores, forgetting = eval_charts(runs)
    title = runs[0]["name"] if len(runs) == 1 else f"{len(runs)} runs"
    after_label = latest_scores(runs[0])[1]
    body = [f"<h1>tailorlm report: {escape(title)}</h1>",
            "".join(collapse_banner(r, len(runs) > 1) for r in runs),
            f'<p class="note">written {time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}; charts: '
            "the base model's value is the dotted line; hover a line for its last value</p>",
            "".join(run_header(r, i) for i, r in enumerate(runs)),
            _section(f"Before and after ({escape(after_label)})" if len(runs) == 1 else "Before and after",
                     _per_run(runs, before_after), "before-after"),
            _section("Per class", _per_run(runs, class_section), "per-class"),
            _section("Training", _charts(training_charts(runs)), "training"),
            _section("Evaluation scores over steps", _charts(scores), "evaluation"),
            _section("Forgetting (against the base model, on text it wrote at step 0)", _charts(forgetting),
                     "forgetting"),
            _section("Probes", _per_run(runs, _probes), "probes"),
            _section("Warnings and events", _per_run(runs, events_section), "events"),
            _section("Data", _per_run(runs, data_section), "data"),
            _section("Environment", _per_run(runs, env_section), "environment"),
            _section("Config", _per_run(runs, _config), "config")]
    return page(f"tailorlm report: {title}", "".join(body), PAGE_STYLE)


def write_report(run_dirs: list, out: str | Path | None = None) -> Path:
    """Draw the runs into one page: `out`, or RUN/report.html for one run, ./report.html for several."""
    runs = [read_run(d) for d in run_dirs]
    path = Path(out) if out else (RunDir.at(run_dirs[0]).report_file if len(run_dirs) == 1 else Path(REPORT))
    with naming(path):   # (a full disk: one line naming the page, as write_text says it)
        path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, render(runs))
    return path
