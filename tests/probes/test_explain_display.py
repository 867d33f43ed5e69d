"""What `tailorlm explain` shows (issue 27), on a tiny Llama LoRA run: the console and the page name
the same quantities with the same values (p among the labels, log p(answer)), one input gives no
interval, a word the tokenizer cuts into pieces shows as one word, non-ASCII text comes through
without replacement characters, and the console fits 100 columns and ends with one verdict per row."""
import json
import re
from html import escape
import shutil
import subprocess
from pathlib import Path

import pytest

from tailorlm.commands import main
from tailorlm.models.load import load_tokenizer
from tailorlm.train import train

from ..conftest import tiny_config, write_jsonl
from ..tiny_models import CLS_RUN, mixed_tweets, one_thread, tweets_cls_file  # noqa: F401

pytest.importorskip("captum")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
ANSI = re.compile(r"\033\[[0-9;]*m")
VERDICTS = ("worse:", "better:", "changed:", "no significant change:")
NON_ASCII = "Très déçu: vol annulé à Zürich ✈️ 東京行き 😡"


@pytest.fixture(scope="module")
def run(tiny_llama, tweets_cls_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("explain-display") / "run"
    train(tiny_config(out, tiny_llama, tweets_cls_file, *CLS_RUN, method={"name": "lora", "r": 8, "alpha": 16},
                      train={"steps": 8, "lr": 2e-2, "eval_every": 8, "save_every": 8}), quiet=True)
    return out


def split_word(tok) -> str:
    """A word the tiny tokenizer cuts into several pieces (after a space, as in a sentence)."""
    for w in ("unbelievably", "reimbursement", "compensation", "disappointing", "overbooked", "announcement"):
        if len(tok(" " + w, add_special_tokens=False)["input_ids"]) >= 3:
            return w
    pytest.fail("no split word found")


def explain(run, capsys, monkeypatch, *args) -> tuple[list[str], str, dict]:
    monkeypatch.setenv("FORCE_COLOR", "1")
    out = run.parent / "x.html"
    assert main(["explain", str(run), *args, "--method", "ablation", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    print(text)
    probe = json.loads((run / "probes" / "explain.json").read_text())
    return text.splitlines(), out.read_bytes().decode("utf-8"), probe


def check_console(lines: list[str], probe: dict) -> None:
    """Within 100 columns; ends with one verdict line per row of the table, in order, red only on worse."""
    assert all(len(ANSI.sub("", ln)) <= 100 for ln in lines), max(lines, key=len)
    starts = [i for i, ln in enumerate(lines) if ANSI.sub("", ln).strip().startswith(VERDICTS)]
    assert len(starts) == len(probe["rows"]) and starts[-1] >= len(lines) - 2
    for i, r in zip(starts, probe["rows"]):
        assert ANSI.sub("", lines[i]).strip().startswith(r["verdict"] + ": " + r["metric"])
        assert ("\033[31m" in lines[i]) == (r["verdict"] == "worse")


def test_console_and_page_name_the_same_quantities(run, capsys, monkeypatch, tmp_path):
    rows = write_jsonl(tmp_path / "in.jsonl", mixed_tweets(4, seed=7))
    lines, page, probe = explain(run, capsys, monkeypatch, "--file", str(rows), "--attribute", "2")
    check_console(lines, probe)
    console = "\n".join(ANSI.sub("", ln) for ln in lines)
    first = probe["extra"]["inputs"][0]
    p = first["probs"]["tuned"][first["answer"]]
    answer = f"'{first['answer']}' (p among the labels {p:.2f})"
    assert f"tuned: {answer}" in console and f"tuned: <b>{escape(answer)}</b>" in page
    target = f"log p(answer) {first['attribution']['tuned']['target_logp']:.2f}"
    assert f"target {target}" in console and f"target {target}" in page
    assert "p among the labels" in page and "log p(answer)" in page   # defined in the legend too
    assert "(p 0." not in page and "log p -" not in console          # no unlabelled figure left
    for r in probe["rows"]:
        assert r["n"] == 4 and r["verdict"] in ("worse", "better", "changed", "no significant change")
        assert f"{r['metric']} (n=4)" in console and f"[{r['lo']:+.3f}, {r['hi']:+.3f}]" in console
    assert "log p(reference answer)" in console and "answer is the reference" in console


def test_one_input_gives_no_interval_and_words_stay_whole(run, capsys, monkeypatch):
    _, tok = None, load_tokenizer(run / "final") if (run / "final" / "tokenizer.json").is_file() else None
    tok = tok or load_tokenizer(Path(json.loads((run / "config.json").read_text())["model"]["path"]))
    word = split_word(tok)
    text = f"@united the {word} was a joke"
    lines, page, probe = explain(run, capsys, monkeypatch, "--text", text, "--attribute", "1")
    console = "\n".join(ANSI.sub("", ln) for ln in lines)
    pieces = probe["extra"]["inputs"][0]["pieces"]
    (i, j), = [(i, j) for i in range(len(pieces)) for j in range(i + 2, len(pieces) + 1)
               if "".join(pieces[i:j]).strip() == word and pieces[i].strip()[:1] == word[0]]
    own = {p.strip() for p in pieces[i:j] if p.strip()} - set(text.split())   # the word's pieces, no word
    assert len(own) >= 2                                                     # the tokenizer did cut it
    why = next(ln for ln in console.split("\n  shift")[0].splitlines() if ln.strip().startswith("why ("))
    why = console[console.index(why):].split("\n  shift")[0]                 # (with its wrapped line)
    assert len(re.findall(r"'[^']*'\s+[+-]\d", why)) == 5 and f"'{word}' " in why   # the top 5: the word whole
    assert not any(f"'{p}' " in why for p in own)                            # never a piece on its own
    spans = re.findall(r'<span style="[^"]*" title="attribution [^"]*">([^<]*)</span>', page)
    assert f" {word}" in spans and not any(s.strip() in own for s in spans)
    assert "n=1: no interval" in console and not re.search(r"\[([+-]\d\.\d+), \1\]", console)
    assert "n=1: no interval" in page and all(r["verdict"] == "no significant change" for r in probe["rows"])
    check_console(lines, probe)


def test_non_ascii_text_comes_through(run, capsys, monkeypatch, tmp_path):
    """The input, the scored tokens and the vocabulary entries shown carry no U+FFFD (a character cut
    between tokens lands whole on its last token); a greedy output keeps one only where the tiny random
    model wrote bytes that are no UTF-8 at all, never at its end, and no control character that a
    browser draws as an empty box."""
    lines, page, probe = explain(run, capsys, monkeypatch, "--text", NON_ASCII, "--attribute", "1")
    console = "\n".join(ln for ln in lines if "greedy" not in ln)   # (greedy output: checked below)
    assert NON_ASCII in console and "\ufffd" not in console
    d = probe["extra"]["inputs"][0]["diff"]
    greedy = [d["greedy_base"], d["greedy_tuned"]]
    assert '<meta charset="utf-8">' in page and page.count("\ufffd") == sum(g.count("\ufffd") for g in greedy)
    assert "✈️" in page and "東京行き" in page and "Zürich" in page
    assert "".join(t for t, g in zip(d["tokens"], d["region"]) if g == "text") == NON_ASCII
    assert not any("\ufffd" in t for t in d["tokens"])
    assert not any("\ufffd" in t for s in d["shifts"] for t, _, _ in s["rose"] + s["fell"])
    for g in greedy:
        assert not g.endswith("\ufffd") and not any(ord(c) < 32 and c not in "\n\t" for c in g)
    check_console(lines, probe)
    if CHROMIUM is None:
        pytest.skip("no chromium on this machine")
    html = tmp_path / "page.html"
    html.write_text(page, encoding="utf-8")
    shot = tmp_path / "page.png"
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
                    "--window-size=1200,1600", html.resolve().as_uri()], capture_output=True, timeout=120)
    shutil.copy(shot, "/tmp/tailorlm-explain-non-ascii.png")
    assert shot.stat().st_size > 10_000
