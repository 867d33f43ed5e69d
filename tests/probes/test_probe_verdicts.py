"""Probes that say what is good or bad (issue 27): `tailorlm bias` on tiny Llamas tuned on data that
makes the flip rate rise (group -> label) and fall (balanced data), and `tailorlm privacy` on one
overfit on canaries: the console within 100 columns, ending with one verdict line per finding (against
bias.threshold for bias), red (ANSI) only on `worse`, and the page fragment's `bad` class only there."""
import json
import re

import pytest

from tailorlm.commands import main
from tailorlm.train import train

from ..conftest import real_tweets, tiny_config, write_jsonl
from ..tiny_models import CLS_RUN, one_thread  # noqa: F401  (fixture: one thread per test)
from .test_bias import BARE, balanced_rows, flip_rows
from .test_privacy import CANARY_RUN

ANSI = re.compile(r"\033\[[0-9;]*m")
VERDICTS = ("worse:", "better:", "no significant change:")


def _run(tiny_llama, d, rows):
    cfg = tiny_config(d / "run", tiny_llama, write_jsonl(d / "train.jsonl", rows(160, 0)), *CLS_RUN,
                      method={"name": "lora", "r": 8, "alpha": 16}, data=BARE,
                      train={"steps": 40, "batch_size": 8, "threads": 1, "eval_every": 40, "save_every": 40})
    cfg.data.val = str(write_jsonl(d / "val.jsonl", rows(60, 1)))
    cfg.eval.metrics = ["val_loss", "accuracy"]
    train(cfg, quiet=True)
    return d / "run"


@pytest.fixture(scope="module")
def biased(tiny_llama, tmp_path_factory):
    return _run(tiny_llama, tmp_path_factory.mktemp("biased"), flip_rows)


@pytest.fixture(scope="module")
def balanced(tiny_llama, tmp_path_factory):
    return _run(tiny_llama, tmp_path_factory.mktemp("balanced"), balanced_rows)


def _bias(run, capsys, monkeypatch) -> tuple[list[str], dict]:
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert main(["bias", str(run), "--max-pairs", "40", "--max-rows", "60", "train.threads=1"]) == 0
    out = capsys.readouterr().out
    print(out)
    return out.splitlines(), json.loads((run / "probes" / "bias.json").read_text())


def _check(lines: list[str], probe: dict, watched: list[dict] | None = None) -> dict[str, list[str]]:
    """Every line within 100 columns; the output ends with one verdict line per watched row, in order;
    red exactly on the `worse` lines. Returns the verdict lines by verdict."""
    assert all(len(ANSI.sub("", ln)) <= 100 for ln in lines), max(lines, key=len)
    if watched is None:
        watched = [r for r in probe["rows"] if r["metric"] in ("bias score", "s_DIS", "s_AMB", "flip rate")]
    assert watched and all(r["verdict"] in ("worse", "better", "no significant change") for r in watched)
    starts = [i for i, ln in enumerate(lines) if ANSI.sub("", ln).strip().startswith(VERDICTS)]
    assert len(starts) == len(watched)
    tail = lines[starts[0]:]
    assert all(ANSI.sub("", ln).startswith("      ") for i, ln in enumerate(tail) if starts[0] + i not in starts)
    by: dict[str, list[str]] = {}
    for i, r in zip(starts, watched):
        plain = ANSI.sub("", lines[i]).strip()
        assert plain.startswith(r["verdict"] + ":") and r["metric"] in plain, (plain, r)
        assert ("\033[31m" in lines[i]) == (r["verdict"] == "worse")
        by.setdefault(r["verdict"], []).append(plain)
    assert not any("\033[31m" in ln for i, ln in enumerate(lines) if i not in starts)
    return by


def test_a_rise_in_flips_is_worse_and_red(biased, capsys, monkeypatch):
    lines, probe = _bias(biased, capsys, monkeypatch)
    by = _check(lines, probe)
    flip = next(r for r in probe["rows"] if r["metric"] == "flip rate" and r["group"] == "gender")
    assert flip["change"] > 0.3 and flip["lo"] > 0 and flip["verdict"] == "worse"
    assert any("flip rate of gender" in ln for ln in by["worse"])
    assert probe["warnings"] and all("rose" in w or "away from 0" in w for w in probe["warnings"])
    cell = re.search(r'<td class="(\w*)">worse</td>', probe["html"])
    assert cell and cell.group(1) == "bad"


def test_a_fall_in_flips_is_better_and_not_red(balanced, capsys, monkeypatch):
    lines, probe = _bias(balanced, capsys, monkeypatch)
    by = _check(lines, probe)
    flip = next(r for r in probe["rows"] if r["metric"] == "flip rate" and r["group"] == "gender")
    assert flip["change"] < -0.05 and flip["hi"] < 0 and flip["verdict"] == "better", flip
    assert any("flip rate of gender" in ln for ln in by["better"])
    assert "bad" not in re.findall(r'<td class="(\w*)">better</td>', probe["html"])
    assert re.findall(r'<td class="(\w*)">better</td>', probe["html"])[0] == "good"
    # the shipped pairs on 40 pairs: 5-6 per category, too few to tell, said so
    few = [r for r in probe["rows"] if r["metric"] == "bias score" and r["n"] < 10]
    assert few and all(r["verdict"] == "no significant change" for r in few)
    assert any("too few to tell" in ln for ln in by["no significant change"])


def test_privacy_ends_with_its_verdicts(tiny_llama, tmp_path, capsys, monkeypatch):
    data = write_jsonl(tmp_path / "tweets.jsonl", [{"text": r["text"]} for r in real_tweets(1040)[1000:]])
    train(tiny_config(tmp_path / "run", tiny_llama, data, *CANARY_RUN), quiet=True)
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.delenv("NO_COLOR", raising=False)
    capsys.readouterr()
    assert main(["privacy", str(tmp_path / "run"), "--k", "4", "--m", "8"]) == 0
    out = capsys.readouterr().out
    print(out)
    probe = json.loads((tmp_path / "run" / "probes" / "privacy.json").read_text())
    judged = [r for r in probe["rows"] if "verdict" in r]
    assert len(judged) < len(probe["rows"])            # the TPR and skew-normal readings are shown, not judged
    by = _check(out.splitlines(), probe, judged)
    top = next(r for r in judged if r["metric"].startswith("canary exposure (rank") and r["group"] == "16x")
    assert top["lo"] > 0 and top["verdict"] == "worse" and any("of 16x" in ln for ln in by["worse"])
    assert all(r["verdict"] == "no significant change" for r in judged if r["group"] == "held-out")
    assert re.findall(r'<td class="(\w*)">worse</td>', probe["html"])[0] == "bad"
