"""`tailorlm eval` on real tiny runs (issue 27): a table, not JSON, where every metric names the split
and the rows it was scored on, beside the base model scored now on the same rows and the change; a
classifier's table has no perplexity, and shows its per-class scores and confusion matrix, with a
collapse said before the numbers; `--json` keeps the keys it always printed and adds the base
model's scores, the changes, where each was scored, per-class scores and the confusion matrix."""
from __future__ import annotations

import json

import pytest

from ..report.collapsed_run import collapsed_run, summary  # noqa: F401  (fixtures)
from ..tiny_models import one_thread  # noqa: F401  (fixtures)
from .test_cli import cli


def columns(line: str) -> list[str]:
    """A table line's cells (columns are two or more spaces apart)."""
    import re

    return re.split(r"\s{2,}", line.strip())


def test_eval_prints_a_table_with_splits_rows_and_changes(collapsed_run, capsys):
    rc, out, err = cli(capsys, "eval", collapsed_run, "train.threads=1")
    assert rc == 0, err
    with pytest.raises(json.JSONDecodeError):
        json.loads(out)
    s, lines = summary(collapsed_run), out.splitlines()
    assert lines[0].endswith("as training scored it (base_eval.json)")   # the rows are the run's own
    head = next(i for i, line in enumerate(lines) if line.startswith("metric"))
    assert columns(lines[head]) == ["metric", "better", "scored on", "base", "tuned", "change", "note"]
    end = lines.index("", head)
    rows = {columns(line)[0]: columns(line) for line in lines[head + 1:end]}
    val_n = min(s["data"]["val"]["examples"], 40)
    for metric, where in (("accuracy", "test, 40 rows"), ("macro_f1", "test, 40 rows"),
                          ("val_loss", f"val, {val_n} rows")):
        base, final = s["base"][metric], s["final"][metric]   # the base model, scored again now: the same
        assert rows[metric][2:6] == [where, f"{base:.4f}", f"{final:.4f}", f"{final - base:+.4f}"], rows[metric]
    assert "val_ppl" not in out and "val_tokens" not in out     # a classifier: no perplexity
    # the collapse is said before the table, and its gain is marked as none
    collapse = next(i for i, line in enumerate(lines) if line.startswith("COLLAPSED"))
    assert collapse < head and "'negative'" in lines[collapse] and "test split, 40 rows" in lines[collapse]
    assert rows["accuracy"][-1] == "not a gain: 'negative' for every row"


def test_eval_shows_per_class_scores_and_the_confusion_matrix(collapsed_run, capsys):
    rc, out, err = cli(capsys, "eval", collapsed_run, "train.threads=1")
    assert rc == 0, err
    final, base = summary(collapsed_run)["final"], summary(collapsed_run)["base"]
    lines = out.splitlines()
    top = lines.index("per class, tuned model (test split, 40 rows)")
    assert columns(lines[top + 1]) == ["label", "rows", "predicted", "precision", "recall", "F1", "base F1", "change"]
    for lab, line in zip(final["confusion"]["labels"], lines[top + 2:top + 5]):
        c = final["per_class"][lab]
        assert columns(line) == [lab, str(c["support"]), str(final["predicted"][lab]), f"{c['precision']:.4f}",
                                 f"{c['recall']:.4f}", f"{c['f1']:.4f}", f"{base['per_class'][lab]['f1']:.4f}",
                                 f"{c['f1'] - base['per_class'][lab]['f1']:+.4f}"]
    top = lines.index("confusion matrix (test split, 40 rows): rows = true label, columns = predicted")
    assert columns(lines[top + 1]) == ["true \\ predicted", *final["confusion"]["labels"]]
    matrix = [[int(x) for x in columns(line)[1:]] for line in lines[top + 2:top + 5]]
    assert matrix == final["confusion"]["matrix"] and matrix[0] == [31, 0, 0]


def test_eval_json_keeps_its_keys_and_adds_base_changes_splits_and_classes(collapsed_run, capsys):
    rc, out, err = cli(capsys, "eval", collapsed_run, "train.threads=1", "--json")
    assert rc == 0, err
    got, s = json.loads(out), summary(collapsed_run)
    for key in ("val_loss", "val_ppl", "val_tokens", "accuracy", "macro_f1", "majority", "predicted",
                "accuracy_warning", "collapsed"):   # what `tailorlm eval` printed before: scripts read these
        want = s["final"][key]
        assert got[key] == (pytest.approx(want) if isinstance(want, float) else want), key
    assert got["per_class"].keys() == s["final"]["per_class"].keys()
    for lab, c in s["final"]["per_class"].items():
        assert got["per_class"][lab] == pytest.approx(c), lab
    assert got["confusion"] == s["final"]["confusion"]
    assert got["base"]["accuracy"] == pytest.approx(s["base"]["accuracy"])
    assert got["base"]["confusion"] == s["base"]["confusion"]
    assert got["delta"]["accuracy"] == pytest.approx(s["final"]["accuracy"] - s["base"]["accuracy"])
    assert got["scored_on"]["accuracy"] == {"split": "test", "rows": 40}
    assert got["scored_on"]["val_loss"] == {"split": "val", "rows": min(s["data"]["val"]["examples"], 40)}


def test_eval_on_other_rows_scores_the_base_model_again(collapsed_run, capsys):
    """Naming the held-out file again (an override of data.*): the base model is scored now, the
    adapter switched off, and on the same rows gives exactly what training kept at step 0."""
    test_file = collapsed_run.parent / "test.jsonl"
    rc, out, err = cli(capsys, "eval", collapsed_run, "train.threads=1", f"data.test={test_file}")
    assert rc == 0, err
    assert out.splitlines()[0].endswith("scored now on the same rows")
    rc, out, err = cli(capsys, "eval", collapsed_run, "train.threads=1", f"data.test={test_file}", "--json")
    got, kept = json.loads(out)["base"], summary(collapsed_run)["base"]
    assert got["confusion"] == kept["confusion"] and got["predicted"] == kept["predicted"]
    for key in ("accuracy", "macro_f1", "val_loss"):
        assert got[key] == pytest.approx(kept[key], rel=1e-5), key


def test_eval_of_a_config_scores_the_base_model_alone(collapsed_run, capsys):
    """A config names a base model: one score column, no change, the splits still named."""
    rc, out, err = cli(capsys, "eval", collapsed_run / "config.yaml", "train.threads=1")
    assert rc == 0, err
    lines = out.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("metric"))
    assert columns(lines[head]) == ["metric", "better", "scored on", "score", "note"]
    acc = next(columns(line) for line in lines[head + 1:] if line.startswith("accuracy"))
    assert acc[2:4] == ["test, 40 rows", f"{summary(collapsed_run)['base']['accuracy']:.4f}"]
    assert "COLLAPSED" not in out and "per class, this model (test split, 40 rows)" in out
