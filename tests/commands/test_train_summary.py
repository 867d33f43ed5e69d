"""`tailorlm train` ends with its summary as a table (issue 27): each score of the base model and of
the tuned one, the change and whether it is better, then the steps, time and run folder; `--json`
prints the summary's main keys as JSON, as it did before."""
from __future__ import annotations

import json

import pytest

from tailorlm.commands import main
from tailorlm.eval.specs import OWNER, find

from ..conftest import tiny_config
from ..tiny_models import CLS_RUN, one_thread, tweets_cls_file  # noqa: F401  (fixtures)


def _table_rows(out: str) -> dict[str, list[str]]:
    """The table's rows under its header line: {metric: [base, tuned, change, verdict?]}."""
    lines = out.splitlines()
    head = next(i for i, ln in enumerate(lines) if ln.split()[:4] == ["metric", "base", "tuned", "change"])
    assert set(lines[head + 1]) == {"-"}
    rows = {}
    for ln in lines[head + 2:]:
        cells = ln.split()
        if len(cells) < 4 or ln.startswith(("warning", "  ", "stopped")) or " steps" in ln:
            break
        rows[cells[0]] = cells[1:]
    return rows


def test_train_prints_the_summary_as_a_table_and_json_only_when_asked(tmp_path, tiny_llama, tweets_cls_file, capsys):
    run = tmp_path / "run"
    cfg = tiny_config(run, tiny_llama, tweets_cls_file, *CLS_RUN, file=tmp_path / "c.yaml")
    assert main(["train", str(cfg), "--quiet"]) == 0
    out = capsys.readouterr().out
    with pytest.raises(ValueError):
        json.loads(out)                                        # not JSON any more
    summary = json.loads((run / "summary.json").read_text())
    rows = _table_rows(out)
    numbers = {k for k, v in summary["final"].items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    assert {"val_ppl", "val_tokens"} <= numbers                # scored, but a classifier's table leaves them out
    numbers -= {"val_ppl", "val_tokens"}
    assert {"accuracy", "macro_f1", "val_loss"} <= numbers and set(rows) == numbers
    for k in numbers:                                           # every figure is the summary's, rounded
        base, tuned, change = rows[k][:3]
        assert float(tuned) == pytest.approx(summary["final"][k], abs=5e-5)
        assert float(base) == pytest.approx(summary["base"][k], abs=5e-5)
        if k in summary["delta"]:
            assert float(change) == pytest.approx(summary["delta"][k], abs=5e-5)
            good = find(k).good_change(summary["base"][k], summary["final"][k])
            word = "collapsed" if summary["final"].get("collapsed") and OWNER[k] == "accuracy" else "better"
            assert rows[k][3:] == ({True: [word], False: ["worse"]}[good] if good is not None else [])
        else:
            assert change == "-"
    assert f"{summary['steps']} steps, loss {summary['first_loss']:.4f} -> {summary['last_loss']:.4f}" in out
    assert f"run folder: {run}" in out and f"tailorlm report {run}" in out
    assert all(len(ln) <= 100 for ln in out.splitlines() if str(run) not in ln)
    assert ("warning:" in out) == bool(summary["final"].get("accuracy_warning"))
    # the same run had it answered one class for every row: its classification gains are not "better"
    from tailorlm.commands.train import summary_table

    one = {**summary, "final": {**summary["final"], "collapsed": "negative"}}
    one["final"]["accuracy"] = summary["base"]["accuracy"] + 0.1
    one["delta"] = {**summary["delta"], "accuracy": 0.1}
    collapsed = _table_rows(summary_table(one, run))
    assert collapsed["accuracy"][3:] == ["collapsed"] and "better" not in collapsed["majority"]
    assert collapsed["val_loss"][3:] == rows["val_loss"][3:]   # (another evaluator's score: as it was)

    other = tmp_path / "other"
    assert main(["train", str(cfg), "--quiet", "--json", f"output.dir={other}"]) == 0
    got = json.loads(capsys.readouterr().out)                  # --json: the JSON train always printed
    assert set(got) == {"steps", "first_loss", "last_loss", "tokens_per_s", "base", "final"}
    assert got["final"] == json.loads((other / "summary.json").read_text())["final"] and got["steps"] == 4
