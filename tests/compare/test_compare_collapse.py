"""A collapse is never green in `tailorlm compare`: two tiny classifiers trained for real, one on mixed
tweets (it answers several classes) and one on negative tweets only (it answers `negative` for every
held-out row, and its macro-F1 still rises over the base model's). The console and compare.html flag
the collapsed run, its gain is not coloured as a success, and per-class F1 is shown for both."""
from __future__ import annotations

import json
import re

import pytest

from tailorlm.commands import main

from ..conftest import tiny_config, write_jsonl
from ..tiny_models import mixed_tweets, one_thread  # noqa: F401  (autouse: one thread per test)

LABELS = ["negative", "neutral", "positive"]


@pytest.fixture
def two_configs(tiny_llama, tmp_path):
    rows = mixed_tweets(260)
    val = write_jsonl(tmp_path / "val.jsonl", rows[200:])
    mixed = write_jsonl(tmp_path / "mixed.jsonl", rows[:200])
    negative = write_jsonl(tmp_path / "negative.jsonl", [r for r in rows[:200] if r["label"] == "negative"])
    common = ("data.format=classification", "data.max_length=96", f"data.val={val}", f"data.labels={LABELS}",
              "train.steps=12", "train.lr=3e-2", "train.eval_every=12", "train.save_every=12", "train.threads=1",
              "eval.max_examples=24", "eval.batch_size=8")
    healthy = tiny_config(None, tiny_llama, mixed, *common, "data.balance=weight", file=tmp_path / "healthy.yaml")
    collapsing = tiny_config(None, tiny_llama, negative, *common, file=tmp_path / "onesided.yaml")
    return healthy, collapsing


def test_a_collapsed_run_is_flagged_in_console_and_page_and_its_gain_is_not_green(two_configs, tmp_path, capsys):
    healthy, collapsing = two_configs
    out = tmp_path / "cmp"
    assert main(["compare", str(healthy), str(collapsing), "--out", str(out), "--fewshot", "0"]) == 0
    console = capsys.readouterr()
    got = json.loads((out / "compare.json").read_text())
    runs = {r["label"]: r for r in got["runs"]}
    # what the runs themselves recorded (summary.json's final scores), not what the compare assumed
    finals = {k: json.loads((out / runs[k]["dir"] / "summary.json").read_text())["final"] for k in runs}
    assert finals["onesided"].get("collapsed") == "negative"                   # one class for all 24 rows
    assert finals["onesided"]["predicted"] == {"negative": 24, "neutral": 0, "positive": 0}
    assert not finals["healthy"].get("collapsed") and sum(v > 0 for v in finals["healthy"]["predicted"].values()) > 1
    assert runs["onesided"]["gain"] > 0 and runs["healthy"]["gain"] > 0      # both "gain" on macro-F1
    assert runs["onesided"]["collapsed"] == "negative" and runs["healthy"]["collapsed"] is None

    # console: the table row and a warning line name the collapse; the healthy run is not flagged
    table_rows = [x for x in console.out.splitlines() if x.startswith("| ")]
    assert any(x.startswith("| onesided (COLLAPSED: always negative)") for x in table_rows), console.out
    assert any(x.startswith("| healthy |") for x in table_rows)
    warn = [x for x in console.out.splitlines() if x.startswith("warning:")]
    assert len(warn) == 1 and "onesided-s0 answers 'negative' for every held-out row" in warn[0]
    assert "COLLAPSED" in next(x for x in console.err.splitlines() if "onesided-s0:" in x and "gain" in x)
    # per-class F1 in the console, tuned (base): the run's own per_class; the collapsed run scores 0 on the
    # classes it never answers
    lines = console.out.splitlines()
    head = lines.index("| configuration | size | " + " | ".join(LABELS) + " |")
    summaries = {k: json.loads((out / runs[k]["dir"] / "summary.json").read_text()) for k in runs}
    for k, row in zip(("healthy", "onesided"), lines[head + 2: head + 4]):
        f1 = lambda part, lab: f"{summaries[k][part]['per_class'][lab]['f1']:.3f}"  # noqa: E731
        assert row == f"| {k} | all | " + " | ".join(f"{f1('final', lab)} ({f1('base', lab)})" for lab in LABELS) + " |"
    assert [finals["onesided"]["per_class"][lab]["f1"] for lab in ("neutral", "positive")] == [0.0, 0.0]

    # the page: the collapsed gain cell is marked and not green; the healthy one is green
    page = (out / "compare.html").read_text()
    gains = page[page.index("gain over base"):].split("</table>")[0]     # the gain table: name, tuned, gain
    cells = dict(re.findall(r'<td class="name">(\w+) <small>\(lora\)</small></td><td>[^<]*</td><td( class="\w+")?>',
                            gains))
    assert cells["healthy"] == ' class="good"' and cells["onesided"] == ' class="collapsed"'
    assert "collapsed: always negative" in page and "onesided-s0 answers &#x27;negative&#x27;" in page
    assert "<h2>Per-class F1</h2>" in page and f"{finals['healthy']['per_class']['negative']['f1']:.3f}" in page
    # a collapse is never "best" while another configuration learnt something
    assert {g["label"]: g.get("vs_best", {}).get("best") for g in got["groups"]} == {"healthy": "healthy",
                                                                                     "onesided": "healthy"}



def test_an_older_run_with_predicted_counts_only_reads_as_collapsed():
    """Runs scored before `collapsed` existed carry `predicted` counts: one non-zero class is a collapse."""
    from tailorlm.compare import table

    old = {"base": {"macro_f1": 0.11, "majority": 0.625, "predicted": {"negative": 0, "neutral": 24, "positive": 0}},
           "final": {"macro_f1": 0.26, "majority": 0.625, "predicted": {"negative": 24, "neutral": 0, "positive": 0}}}
    row = table.run_row(old, "macro_f1")
    assert (row["collapsed"], row["base_collapsed"]) == ("negative", "neutral") and row["gain"] == pytest.approx(0.15)
    mixed = {"final": {"macro_f1": 0.3, "predicted": {"negative": 20, "neutral": 4, "positive": 0}}, "base": {}}
    assert table.run_row(mixed, "macro_f1")["collapsed"] is None
    group = table.aggregate([{**row, "name": "a-s0", "label": "a", "size": None, "method": "lora"}])[0]
    assert table.tone(group) == "collapsed" and group["collapsed"] == {"a-s0": "negative"}
