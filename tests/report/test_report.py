"""report.html on real tiny runs: opened in headless Chromium with the network off (no console error,
every chart drew the run's own numbers), nothing remote in the page, a killed run and a run stopped
by SIGTERM still draw, two runs overlay, long runs downsample, and a report that cannot be drawn never
fails the run. The chart primitives (report/svg.py) by hand."""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tailorlm.probes.store import write_probe
from tailorlm.report.page import write_report
from tailorlm.report.svg import downsample, line_chart, scatter_chart
from tailorlm.train import Callback, train
from tailorlm.train.log import read_metrics

from ..conftest import tiny_config
from ..tiny_models import CLS_RUN, one_thread, tweets_cls_file  # noqa: F401  (fixtures)

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
OFFLINE = ["--headless", "--no-sandbox", "--disable-gpu", "--proxy-server=127.0.0.1:9",
           "--proxy-bypass-list=<-loopback>", "--enable-logging=stderr", "--v=0"]


RUN = ("method={name: lora, r: 4}", "data.audit=true", "data.val_max=16", "train.steps=16", "train.lr=3e-3",
       "train.warmup=1", "train.eval_every=4", "train.save_every=8", "train.threads=1", "eval.max_examples=16",
       "retention.reference=auto", "retention.samples=8", "retention.sample_tokens=24", "output.overwrite=true")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_llama, tweets_text_file, tweets_cls_file):
    """Two real runs: continued pre-training with the forgetting probe (16 steps, a probe result beside
    it), and a classification LoRA (8 steps, accuracy against its base)."""
    root = tmp_path_factory.mktemp("report-runs")
    train(tiny_config(root / "text", tiny_llama, tweets_text_file, *RUN), quiet=True)
    write_probe(root / "text", "bias", title="Bias probe", warnings=["tuning widened the gap between groups"],
                rows=[{"metric": "gap", "group": "a vs b", "base": 0.1, "tuned": 0.3, "change": 0.2, "lo": 0.05,
                       "hi": 0.35, "significant": True}], html='<p class="probe-fragment"><mark>token</mark></p>')
    write_report([root / "text"])    # again, now with the probe (train wrote it once already, without)
    train(tiny_config(root / "cls", tiny_llama, tweets_cls_file, *CLS_RUN, method={"name": "lora", "r": 4},
                      train={"steps": 8, "eval_every": 4, "log_every": 1, "threads": 1, "save_every": 8}), quiet=True)
    return root / "text", root / "cls"


class Drawn(HTMLParser):
    """The charts in a page: {chart title: {series name: attrs}}, hlines too, and the page's text."""

    def __init__(self, html: str):
        super().__init__()
        self.charts, self.chart, self.text = {}, None, []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "svg" and "data-chart" in a:
            self.chart = self.charts.setdefault(a["data-chart"], {})
        elif tag == "g" and self.chart is not None and ("data-series" in a or "data-hline" in a):
            self.chart[a.get("data-series") or "hline: " + a["data-hline"]] = a

    def handle_data(self, data):
        self.text.append(data)


def last(records: list[dict], key: str) -> float:
    return [r[key] for r in records if key in r][-1]


def chromium(page: Path, shot: Path) -> tuple[str, str]:
    """The DOM after loading, and the console, of the page opened offline; a screenshot beside it."""
    if CHROMIUM is None:
        pytest.skip("no chromium on this machine (scripts/setup.sh installs it)")
    dom = subprocess.run([CHROMIUM, *OFFLINE, "--dump-dom", page.resolve().as_uri()], capture_output=True,
                         text=True, timeout=120)
    subprocess.run([CHROMIUM, *OFFLINE, f"--screenshot={shot}", "--window-size=1280,2400", "--hide-scrollbars",
                    page.resolve().as_uri()], capture_output=True, text=True, timeout=120)
    return dom.stdout, dom.stderr


def console_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line or "Failed to load resource" in line]


def test_the_report_opens_offline_and_draws_the_runs_numbers(runs, tmp_path):
    run = runs[0]
    dom, console = chromium(run / "report.html", tmp_path / "report.png")
    shutil.copy(tmp_path / "report.png", "/tmp/tailorlm-report-screenshot.png")
    assert console_errors(console) == [] and (tmp_path / "report.png").stat().st_size > 20_000
    page, m = Drawn(dom), read_metrics(run / "metrics.jsonl")
    steps, evals = [r for r in m if "loss" in r], [r["eval"] for r in m if "eval" in r]
    loss = page.charts["loss"]
    assert float(loss["train loss"]["data-last"]) == last(steps, "loss")          # the run's own numbers
    assert int(loss["train loss"]["data-n"]) == len(steps) == 16
    assert float(loss["val loss"]["data-last"]) == evals[-1]["val_loss"]
    base = json.loads((run / "base_eval.json").read_text())
    assert float(loss["hline: base val loss"]["data-y"]) == base["val_loss"]
    assert float(page.charts["learning rate"]["learning rate"]["data-last"]) == last(steps, "lr")
    assert float(page.charts["gradient norm"]["gradient norm"]["data-last"]) == last(steps, "grad_norm")
    assert float(page.charts["tokens/s"]["tokens/s"]["data-last"]) == last(steps, "useful_tokens_per_s")
    memory = page.charts["memory"]                            # each step's resident set, and its peak
    assert float(memory["rss mb"]["data-last"]) == last(steps, "rss_mb") > 10
    assert float(memory["peak rss mb"]["data-last"]) == last(steps, "peak_rss_mb") >= last(steps, "rss_mb")
    for key in ("ref_nll_change", "kl_to_base", "val_ppl"):    # forgetting and scores over steps, from step 0
        assert float(page.charts[key][key]["data-last"]) == evals[-1][key]
        assert int(page.charts[key][key]["data-n"]) == len(evals) + 1
    assert float(page.charts["val_ppl"]["hline: base model"]["data-y"]) == base["val_ppl"]
    text = " ".join(page.text)
    for seen in ("Before and after", "finished, 16 steps", "Bias probe", "tuning widened the gap", "Data audit",
                 "torch", "config.yaml (resolved)", "Environment"):
        assert seen in text, seen
    assert '<p class="probe-fragment"><mark>token</mark></p>' in dom


def test_the_console_check_sees_a_remote_resource(runs, tmp_path):
    """The check above can fail: the same page with a remote image is blocked, and the console says so."""
    bad = tmp_path / "bad.html"
    bad.write_text((runs[0] / "report.html").read_text().replace("<body>", '<body><img src="http://example.com/x.png">'))
    _, console = chromium(bad, tmp_path / "bad.png")
    assert any("example.com" in line for line in console_errors(console))


def test_nothing_remote_in_the_page(runs):
    page = (runs[0] / "report.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert not re.search(r"@import|url\(|@font-face|<script|<link|<iframe|<img", page, re.I)
    assert "default-src 'none'" in page       # the browser refuses anything remote a fragment might add
    assert re.findall(r"https?://[^\s\"'<>]+", page) == ["http://www.w3.org/2000/svg"] * page.count("<svg")


def test_a_killed_run_still_draws(runs, tmp_path):
    """metrics.jsonl cut in the middle of a line, no summary.json: the command draws what was logged."""
    run = tmp_path / "killed"
    shutil.copytree(runs[0], run, ignore=shutil.ignore_patterns("checkpoints", "final", "report.html"))
    (run / "summary.json").unlink()
    lines = (run / "metrics.jsonl").read_text().splitlines(keepends=True)
    kept = [json.loads(x) for x in lines[:9]]
    (run / "metrics.jsonl").write_text("".join(lines[:9]) + lines[9][: len(lines[9]) // 2])
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}"}
    p = subprocess.run([sys.executable, "-m", "tailorlm", "report", str(run)], capture_output=True, text=True,
                       env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.strip() == str(run / "report.html")
    page = Drawn((run / "report.html").read_text())
    assert float(page.charts["loss"]["train loss"]["data-last"]) == last([r for r in kept if "loss" in r], "loss")
    assert float(page.charts["loss"]["val loss"]["data-last"]) == [r for r in kept if "eval" in r][-1]["eval"]["val_loss"]
    assert "still running, or killed; last logged step" in " ".join(page.text)
    assert "latest (step" in " ".join(page.text)         # before/after from the last evaluation
    missing = subprocess.run([sys.executable, "-m", "tailorlm", "report", str(tmp_path / "nothing")],
                             capture_output=True, text=True, env=env, timeout=300)
    assert missing.returncode == 2 and "no run here" in missing.stderr


class Terminate(Callback):
    def on_step_end(self, run, rec):
        if run.step == 5:
            os.kill(os.getpid(), signal.SIGTERM)


def test_a_run_stopped_by_sigterm_writes_its_report(tiny_llama, tweets_text_file, tmp_path):
    from tailorlm.train.signals import Interrupted

    with pytest.raises(Interrupted):
        train(tiny_config(tmp_path / "run", tiny_llama, tweets_text_file, *RUN, train={"steps": 12}), quiet=True, callbacks=[Terminate()])
    page = Drawn((tmp_path / "run" / "report.html").read_text())
    assert "interrupted by SIGTERM at step 6 of 12" in " ".join(page.text)
    assert int(page.charts["loss"]["train loss"]["data-n"]) == 6
    assert json.loads((tmp_path / "run" / "env.json").read_text())["processes"] == 1


def test_two_runs_overlay(runs, tmp_path):
    own = Drawn((runs[1] / "report.html").read_text())        # written by `train` itself, at the end
    assert float(own.charts["loss"]["train loss"]["data-last"]) == last(read_metrics(runs[1] / "metrics.jsonl"), "loss")
    out = write_report(list(runs), tmp_path / "both.html")
    page = Drawn(out.read_text())
    for run in runs:
        m = read_metrics(run / "metrics.jsonl")
        name = run.name
        assert float(page.charts["loss"][f"{name}: train loss"]["data-last"]) == last(m, "loss")
        assert float(page.charts["learning rate"][f"{name}: learning rate"]["data-last"]) == last(m, "lr")
    assert page.charts["loss"]["text: train loss"]["data-last"] != page.charts["loss"]["cls: train loss"]["data-last"]
    acc = page.charts["accuracy"]         # only the classification run has accuracy, against its base
    assert set(acc) == {"cls: accuracy", "hline: cls: base model", "hline: cls: majority class"}


def test_a_report_that_fails_never_fails_the_run(tiny_llama, tweets_text_file, tmp_path, monkeypatch, capsys):
    from tailorlm.train import report_cb

    def broken(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(report_cb, "write_report", broken)
    s = train(tiny_config(tmp_path / "run", tiny_llama, tweets_text_file, *RUN, train={"steps": 2, "eval_every": 2}), quiet=True)
    assert s["steps"] == 2 and (tmp_path / "run" / "summary.json").is_file()
    assert not (tmp_path / "run" / "report.html").exists()
    assert "could not write report.html (OSError: disk full)" in capsys.readouterr().err


def test_a_long_run_is_downsampled_and_stays_small(runs, tmp_path):
    """20,000 logged steps: at most ~400 points a line, the first, last, lowest and highest kept."""
    run = tmp_path / "long"
    shutil.copytree(runs[0], run, ignore=shutil.ignore_patterns("checkpoints", "final", "report.html"))
    steps = [{"step": i, "loss": 3 + math.sin(i / 300), "lr": 1e-4, "grad_norm": 1.0, "tokens_per_s": 1e3}
             for i in range(1, 20_001)]
    steps[12_345]["loss"] = 9.0                          # one spike
    evals = [r for r in read_metrics(runs[0] / "metrics.jsonl") if "eval" in r]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in steps + evals))
    page = write_report([run]).read_text()
    loss = Drawn(page).charts["loss"]
    assert int(loss["train loss"]["data-n"]) <= 402 and float(loss["train loss"]["data-last"]) == steps[-1]["loss"]
    assert len(page) < 200_000
    drawn = downsample([(r["step"], r["loss"]) for r in steps])
    assert drawn[0] == (1, steps[0]["loss"]) and drawn[-1] == (20_000, steps[-1]["loss"])
    assert max(y for _, y in drawn) == 9.0 and min(y for _, y in drawn) == min(r["loss"] for r in steps)


def test_charts_by_hand():
    svg = line_chart([{"name": "a", "points": [(0, 1.0), (1, None), (2, float("nan")), (3, 0.5)]},
                      {"name": "empty", "points": [(0, None)]}], title="t", hlines=[{"name": "base", "y": 2.0}])
    g = Drawn(svg).charts["t"]
    assert g["a"]["data-n"] == "2" and g["a"]["data-last"] == "0.5" and "empty" not in g
    assert g["hline: base"]["data-y"] == "2.0"
    pts = [{"name": "p", "x": 1.0, "y": 0.8, "xerr": 0.1, "yerr": 0.05, "pareto": True},
           {"name": "q", "x": 3.0, "y": 0.9, "pareto": True}, {"name": "r", "x": 2.0, "y": 0.5, "pareto": False},
           {"name": "nan", "x": float("nan"), "y": 1.0}]
    sc = scatter_chart(pts, title="s", x_label="forgetting", y_label="accuracy")
    assert set(Drawn(sc).charts["s"]) == {"p", "q", "r"}
    front = re.search(r'data-pareto="1"[^>]*points="([^"]+)"', sc).group(1).split()
    assert len(front) == 2 and float(front[0].split(",")[0]) < float(front[1].split(",")[0])   # in x order
    group = lambda name: re.search(rf'<g data-series="{name}".*?</g>', sc).group(0)  # noqa: E731
    assert group("p").count("<line") == 2 and group("q").count("<line") == 0   # p's error bars, q has none
