"""report.html of real tiny classification runs (issue 27): a run that answers one class for every
held-out row is flagged by a banner before anything else and its accuracy and macro-F1 gain is never
green (an honest run's still is); per-class scores and the confusion matrices show the run's own
numbers; the before/after table and the data table say which split and how many rows each score
comes from; a classifier gets no perplexity."""
from __future__ import annotations

import re
from html import unescape
from html.parser import HTMLParser

from tailorlm.report.page import write_report

from ..tiny_models import one_thread  # noqa: F401  (fixtures)
from .collapsed_run import collapsed_run, honest_run, summary  # noqa: F401  (fixtures)


class Tables(HTMLParser):
    """Every table of a page as rows of (cell text, cell class), with the table's own class; and each
    div's class in page order."""

    def __init__(self, html: str):
        super().__init__()
        self.tables, self.divs, self.cell = [], [], None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self.tables.append({"class": a.get("class"), "title": a.get("data-title"), "rows": []})
        elif tag == "tr" and self.tables:
            self.tables[-1]["rows"].append([])
        elif tag in ("td", "th") and self.tables:
            self.cell = ["", a.get("class") or ""]
        elif tag == "div":
            self.divs.append(a.get("class"))

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self.cell is not None:
            self.tables[-1]["rows"][-1].append((self.cell[0].strip(), self.cell[1]))
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell[0] += data

    def table(self, cls: str) -> list[list[tuple[str, str]]]:
        return next(t["rows"] for t in self.tables if t["class"] == cls)

    def row(self, cls: str, first: str) -> list[tuple[str, str]]:
        return next(r for r in self.table(cls) if r and r[0][0].split()[0] == first)


def test_a_collapsed_run_is_flagged_at_the_top_and_its_gain_is_not_green(collapsed_run, honest_run):
    """The collapse (32 steps) gains +0.55 accuracy by answering 'negative' throughout; the same data
    stopped at 16 steps gains honestly, and that gain stays green."""
    html = write_report([collapsed_run]).read_text()
    s = summary(collapsed_run)
    banner = re.search(r'<div class="banner"[^>]*>(.*?)</div>', html, re.S)
    assert banner, "no collapse banner"
    text = unescape(re.sub(r"<[^>]+>", "", banner.group(1)))
    assert "'negative'" in text and "all 40 held-out rows (test split)" in text
    assert f"{s['final']['accuracy']:.4f}" in text and f"{s['final']['majority']:.4f}" in text
    # before the run's header and before the headline numbers
    assert banner.start() < html.index('class="runhead"') < html.index('id="before-after"')
    page = Tables(html)
    assert page.divs[0] == "banner"
    for metric in ("accuracy", "macro_f1"):
        row = page.row("ba", metric)
        change = row[-1]
        assert change[0].startswith(f"{s['final'][metric] - s['base'][metric]:+.4f}")   # the run's own gain
        assert "good" not in change[1] and change[1] == "collapsed" and "one class" in change[0]
    html = write_report([honest_run]).read_text()
    s = summary(honest_run)
    assert 'class="banner"' not in html
    gain = s["final"]["macro_f1"] - s["base"]["macro_f1"]
    assert Tables(html).row("ba", "macro_f1")[-1] == (f"{gain:+.4f}", "good")


def test_per_class_scores_and_confusion_matrices_are_the_runs_own(collapsed_run):
    page = Tables(write_report([collapsed_run]).read_text())
    s = summary(collapsed_run)
    final, base = s["final"], s["base"]
    labels = final["confusion"]["labels"]
    assert labels == ["negative", "neutral", "positive"]
    per_class = page.table("per-class")
    assert [c[0] for c in per_class[0]] == ["label", "rows", "predicted", "precision", "recall", "F1", "base F1",
                                            "change"]
    for lab, row in zip(labels, per_class[1:]):
        c, cells = final["per_class"][lab], [x[0] for x in row]
        assert cells[:2] == [lab, str(c["support"])] and int(cells[2]) == final["predicted"][lab]
        assert cells[3:7] == [f"{c['precision']:.4f}", f"{c['recall']:.4f}", f"{c['f1']:.4f}",
                              f"{base['per_class'][lab]['f1']:.4f}"]
        assert "good" not in row[7][1]       # a collapsed run's per-class gain is not green either
    mats = {t["title"]: t["rows"] for t in page.tables if t["class"] == "confusion"}
    assert set(mats) == {"confusion matrix, after tuning", "confusion matrix, base model"}
    for title, scores in (("confusion matrix, after tuning", final), ("confusion matrix, base model", base)):
        rows = mats[title]
        assert [c[0] for c in rows[0][1:]] == labels
        assert [[int(c[0]) for c in r[1:]] for r in rows[1:]] == scores["confusion"]["matrix"]
    assert [int(c[0]) for c in mats["confusion matrix, after tuning"][1][1:]] == [31, 0, 0]   # all 'negative'


def test_each_score_says_its_split_and_the_data_table_lists_the_test_split(collapsed_run):
    html = write_report([collapsed_run]).read_text()
    page, s = Tables(html), summary(collapsed_run)
    val_n = min(s["data"]["val"]["examples"], 40)
    assert page.row("ba", "accuracy")[1][0] == "test, 40 rows"
    assert page.row("ba", "macro_f1")[1][0] == "test, 40 rows"
    assert page.row("ba", "val_loss")[1][0] == f"val, {val_n} rows"
    data = next(t["rows"] for t in page.tables if t["rows"] and t["rows"][0][0][0] == "split")
    by_split = {r[0][0]: [c[0] for c in r] for r in data[1:]}
    assert set(by_split) == {"train", "val", "test"}
    assert by_split["test"][1] == str(s["data"]["test"]["rows"]) == "50"
    assert data[0][-1][0] == "before/after scores from here"
    assert by_split["test"][-1] == "accuracy, macro_f1 (first 40 of 50 rows)"
    assert by_split["val"][-1].startswith("val_loss") and by_split["train"][-1] == ""


def test_a_classifier_gets_no_perplexity(collapsed_run):
    html = write_report([collapsed_run]).read_text()
    assert "val_ppl" in (collapsed_run / "metrics.jsonl").read_text()   # scored all the same
    assert 'data-chart="val_ppl"' not in html
    assert [r for r in Tables(html).table("ba") if r[0][0].startswith("val_ppl")] == []


def test_a_probe_row_is_red_only_when_its_verdict_is_worse():
    """A significant drop in stereotype preference is no harm: the report's probe table colours the
    verdict (probes/verdict.py), not significance."""
    from tailorlm.report.tables import probe_section
    rows = [{"metric": "stereotype share", "group": "gender", "base": 0.6, "tuned": 0.5, "change": -0.1,
             "significant": True, "verdict": "better"},
            {"metric": "flip rate", "group": "all", "base": 0.1, "tuned": 0.3, "change": 0.2,
             "significant": True, "verdict": "worse"},
            {"metric": "flip rate", "group": "age", "base": 0.1, "tuned": 0.1, "change": 0.0,
             "significant": False, "verdict": "no significant change"}]
    html = probe_section({"name": "bias", "rows": rows})
    cells = [c.split("</td>")[0] for c in html.split("<td class=")[1:] if c.startswith(('"bad"', '"good"', '""'))]
    assert '"good">better' in cells and '"bad">worse' in cells and '"">no significant change' in cells
    assert sum(c.startswith('"bad"') for c in cells if not c.startswith('"bad">worse')) == 0
