"""Every write survives a full disk (issue 25, item 2): one line naming the file, never a traceback nor
half a line, and a run that resumes to the numbers of an uninterrupted one.

The disk is tests/faults.py's FullDisk: while full, a write lands in part and then fails with ENOSPC,
as a real full disk cuts a write short. What the issue saw first: a checkpoint that did not fit, whose
failure was then appended to metrics.jsonl with a plain write, which raised too (exit 1, a traceback,
a cut-off line). Writes the run can do without (a log line, a sample, report.html, a probe, a
tracker's files) are said once and the run goes on; one it cannot (summary.json, final/) stops it with
exit 2, one line saying what is kept, and `--resume` finishes it once there is space.
"""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from tailorlm.commands import main
from tailorlm.config import load_config
from tailorlm.train import checkpoint
from tailorlm.train.loop import train
from tailorlm.train.rundir import MARKER

from .. import faults
from ..conftest import tiny_config
from ..train.test_resume import RESUMABLE, assert_same_run, cli, per_step, reference  # noqa: F401  (reference: fixture)

FULL = ["tests.faults:full_disk"]   # the loop's handle on the disk a test fills (faults.DISK)


@pytest.fixture
def disk(monkeypatch):
    """make(after=S, until=E, names=[...], root=RUN): a FullDisk patched in for this test only."""
    def make(**kw) -> faults.FullDisk:
        d = faults.FullDisk(**kw).install(monkeypatch.setattr)
        monkeypatch.setattr(faults, "DISK", d)
        return d
    return make


def free(d: faults.FullDisk, monkeypatch) -> None:
    d.free()
    monkeypatch.setattr(faults, "DISK", None)


def resume(run: Path) -> None:
    train(load_config(run / "config.yaml"), resume=True, quiet=True)


def assert_whole(log: Path) -> None:
    """Only whole JSON lines: nothing cut off by the full disk."""
    text = log.read_text()
    assert text.endswith("\n")
    for line in text.splitlines():
        json.loads(line)


def no_debris(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*") if p.name != MARKER]


def about(err: str, name: str) -> list[str]:
    return [line for line in err.splitlines() if name in line]


# ------------------------------------------------------------------ the metrics log


def test_a_checkpoint_failure_logged_on_a_full_disk_stops_with_one_line_and_resumes_exactly(
        tmp_path, tiny_llama, tweets_text_file, reference):
    """The issue's report, as a user runs it: the disk fills after step 8 is logged, so checkpoint 8
    fails and so does the line saying so; then every later line, checkpoint 12 and final/."""
    cfg = tiny_config(tmp_path / "run", tiny_llama, tweets_text_file, *RESUMABLE, file=tmp_path / "run.yaml",
                      train={"callbacks": ["tests.faults:Faults"]})
    run = tmp_path / "run"
    p = cli("train", str(cfg), "--quiet", env={faults.FULL_DISK: "8"})
    _, err = p.communicate(timeout=300)
    assert p.returncode == 2 and "Traceback" not in err, err[-3000:]
    assert "checkpoint at step 8 failed" in err
    stop = [line for line in err.splitlines() if line.startswith("tailorlm train:")]
    assert len(stop) == 1 and "the disk is full" in stop[0] and "step-000004" in stop[0], err[-3000:]
    assert f"tailorlm train --resume {run}" in stop[0]
    warned = about(err, str(run / "metrics.jsonl"))
    assert len(warned) == 1 and "the disk is full" in warned[0], err[-3000:]   # said once, for every lost line
    assert_whole(run / "metrics.jsonl")
    assert max(per_step(run)) == 8
    assert not (run / "final").exists() and no_debris(run) == []
    assert sorted(d.name for d in (run / "checkpoints").iterdir()) == ["step-000004"]
    assert checkpoint.verify(run / "checkpoints" / "step-000004") is None
    resume(run)
    assert_same_run(run, reference)


def test_a_step_record_the_disk_cannot_take_is_held_and_written_when_it_can(tmp_path, tiny_llama, tweets_text_file,
                                                                           reference, disk, monkeypatch, capsys):
    d = disk(after=4, until=5, names=["metrics.jsonl"])   # only step 5's line meets the full disk
    run = tmp_path / "run"
    assert main(["train", str(tiny_config(tmp_path / "run", tiny_llama, tweets_text_file, *RESUMABLE,
                                          file=tmp_path / "run.yaml", train={"callbacks": FULL})),
                 "--quiet"]) == 0
    err = capsys.readouterr().err
    assert d.failed
    warned = about(err, "metrics.jsonl")
    assert len(warned) == 1 and "the disk is full" in warned[0] and str(run / "metrics.jsonl") in warned[0], err
    assert_whole(run / "metrics.jsonl")
    assert per_step(run) == per_step(reference)   # step 5's line went in with step 6's
    free(d, monkeypatch)
    resume(run)
    assert_same_run(run, reference)


def test_an_append_the_disk_cuts_short_leaves_the_log_as_it_was(tmp_path, disk):
    from tailorlm.atomic import DiskFull, append_whole
    from tailorlm.errors import TailorError

    log = tmp_path / "m.jsonl"
    log.write_text('{"step": 1}\n{"step": 2}\n')
    d = disk(root=tmp_path, names=["m.jsonl"])
    with pytest.raises(DiskFull) as e:
        append_whole(log, b'{"step": 3, "loss": 1.25}\n')
    assert d.failed and log.read_text() == '{"step": 1}\n{"step": 2}\n'   # the half that landed was cut back
    assert isinstance(e.value, TailorError) and isinstance(e.value, OSError)
    assert str(e.value).startswith(f"could not append to {log}: the disk is full (No space left on device)")
    d.free()
    log.write_text('{"step": 1}\n{"st')        # a line a kill cut: the next one still starts on its own line
    append_whole(log, b'{"step": 2}\n')
    assert log.read_text().splitlines()[-1] == '{"step": 2}'


def test_a_rewrite_on_a_full_disk_keeps_the_old_file_and_names_it(tmp_path, disk):
    from tailorlm.atomic import DiskFull, write_text

    f = tmp_path / "config.yaml"
    f.write_text("old: 1\n")
    disk(root=tmp_path)
    with pytest.raises(DiskFull) as e:
        write_text(f, "new: 2\n")
    assert f.read_text() == "old: 1\n" and no_debris(tmp_path) == []
    assert str(e.value) == (f"could not write {f}: the disk is full (No space left on device); its previous version "
                            "is intact. Fix: free space, then run the command again")


def test_a_sample_the_disk_cannot_take_is_one_line(tmp_path, disk, monkeypatch, capsys):
    from tailorlm.eval import evaluators

    monkeypatch.setattr(evaluators, "generation_eval", lambda *a: ({"exact_match": 0.5}, [
        {"prompt": "2+2?", "reference": "4", "generated": "4"}]))
    ctx = SimpleNamespace(cfg=SimpleNamespace(eval=SimpleNamespace(generate=1, max_new_tokens=4)), device="cpu",
                          data=SimpleNamespace(fmt="instruction"), held_out=lambda n: [{"prompt": "2+2?"}],
                          base=False, step=3, run_dir=tmp_path, samples=[])
    (tmp_path / "samples.jsonl").write_text('{"step": 0, "generated": "5"}\n')
    disk(root=tmp_path, names=["samples.jsonl"])
    for _ in range(2):   # every evaluation goes on; the file is said once
        assert evaluators.generation_scores(None, ctx) == {"exact_match": 0.5}
    warned = about(capsys.readouterr().err, str(tmp_path / "samples.jsonl"))
    assert len(warned) == 1 and "the disk is full" in warned[0]
    assert (tmp_path / "samples.jsonl").read_text() == '{"step": 0, "generated": "5"}\n'


# ------------------------------------------------------------------ what the run can do without


def test_a_report_the_disk_cannot_take_is_one_line_and_the_run_finishes(tmp_path, tiny_llama, tweets_text_file,
                                                                        reference, disk, monkeypatch, capsys):
    run = tmp_path / "run"
    d = disk(root=run, names=["report.html"])
    assert main(["train", str(tiny_config(tmp_path / "run", tiny_llama, tweets_text_file, *RESUMABLE,
                                          file=tmp_path / "run.yaml", train={"callbacks": FULL})),
                 "--quiet"]) == 0
    warned = about(capsys.readouterr().err, "report.html")
    assert len(warned) == 1 and str(run / "report.html") in warned[0] and "the disk is full" in warned[0], warned
    assert d.failed and not (run / "report.html").exists() and no_debris(run) == []
    assert_whole(run / "metrics.jsonl")
    assert main(["report", str(run)]) == 2                 # the command, whose output the page is: one line
    said = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(said) == 1 and said[0].startswith(f"tailorlm report: error: could not write {run / 'report.html'}: "
                                                 "the disk is full"), said
    free(d, monkeypatch)
    resume(run)
    assert (run / "report.html").is_file()
    assert_same_run(run, reference)


def test_a_probe_the_disk_cannot_take_is_one_line_and_the_run_finishes(tmp_path, tiny_llama, tweets_text_file,
                                                                       reference, disk, monkeypatch, capsys):
    pairs = tmp_path / "pairs.yaml"
    pairs.write_text(yaml.safe_dump({"gender": [{"pairs": [["she", "he"], ["woman", "man"], ["mother", "father"]],
                                                 "templates": ["the {group} was late.", "the {group} was rude."]}]}))
    p = tiny_config(tmp_path / "run", tiny_llama, tweets_text_file, *RESUMABLE, file=tmp_path / "run.yaml",
                    train={"callbacks": FULL}, eval={"metrics": ["val_loss", "bias"]},
                    bias={"probes": str(pairs), "max_pairs": 6})
    run = tmp_path / "run"
    d = disk(root=run, names=["probes"])
    assert main(["train", str(p), "--quiet"]) == 0
    warned = about(capsys.readouterr().err, "probes")
    assert len(warned) == 1 and str(run / "probes" / "bias.json") in warned[0] and "the disk is full" in warned[0]
    assert d.failed and not list((run / "probes").iterdir()) and no_debris(run) == []
    assert_whole(run / "metrics.jsonl")
    evals = [r["eval"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "eval" in r]
    assert "bias_score" in evals[-1]   # the probe's numbers are in the log all the same
    free(d, monkeypatch)
    resume(run)
    assert json.loads((run / "probes" / "bias.json").read_text())["rows"]
    assert_same_run(run, reference)


def test_a_tracker_on_a_full_disk_is_switched_off_with_one_line(tmp_path, tiny_llama, tweets_text_file, reference,
                                                                disk, monkeypatch, capsys):
    pytest.importorskip("tensorboard")
    run = tmp_path / "run"
    d = disk(root=run, names=["tensorboard", "trackers.json"])
    cfg = tiny_config(tmp_path / "run", tiny_llama, tweets_text_file, *RESUMABLE, file=tmp_path / "run.yaml",
                      train={"callbacks": FULL, "report_to": ["tensorboard"]})
    assert main(["train", str(cfg), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    off = about(err, "warning: tracker tensorboard")
    assert len(off) == 1 and "the disk is full" in off[0] and "switched off" in off[0], err
    status = about(err, "trackers.json")
    assert len(status) == 1 and str(run / "trackers.json") in status[0] and "the disk is full" in status[0], err
    assert d.failed and not (run / "trackers.json").exists()
    assert_whole(run / "metrics.jsonl")
    free(d, monkeypatch)
    resume(run)
    assert_same_run(run, reference)


# ------------------------------------------------------------------ what it cannot


def test_a_summary_the_disk_cannot_take_stops_with_one_line_and_resume_finishes(tmp_path, tiny_llama,
                                                                                tweets_text_file, reference, disk,
                                                                                monkeypatch, capsys):
    run = tmp_path / "run"
    d = disk(root=run, names=["summary.json"])
    assert main(["train", str(tiny_config(tmp_path / "run", tiny_llama, tweets_text_file, *RESUMABLE,
                                          file=tmp_path / "run.yaml", train={"callbacks": FULL})),
                 "--quiet"]) == 2
    stop = [line for line in capsys.readouterr().err.splitlines() if line.startswith("tailorlm ")]
    assert len(stop) == 1 and str(run / "summary.json") in stop[0] and "the disk is full" in stop[0], stop
    assert "step-000012" in stop[0] and f"tailorlm train --resume {run}" in stop[0]
    assert d.failed and not (run / "summary.json").exists() and no_debris(run) == []
    assert checkpoint.verify(run / "checkpoints" / "step-000012") is None
    free(d, monkeypatch)
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    assert json.loads((run / "summary.json").read_text())["steps"] == 12
    assert_same_run(run, reference)
