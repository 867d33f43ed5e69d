"""Every file tailorlm writes into a run folder is the run's own (issue 27): what the trackers of
train.report_to write, trackers.json, the probes' files and the pages. output.overwrite replaces a run
holding them, a resume carries on beside them, and a run without overwrite is answered with the
resume hint, not with a list of "files tailorlm did not write"."""
from __future__ import annotations

import json
import sys

import pytest

from tailorlm.commands import main
from tailorlm.run.folder import OWN, RunDir, is_own
from tailorlm.train.trackers import TRACKERS

from ..conftest import tiny_config
from ..tiny_models import one_thread  # noqa: F401  (fixture)
from .test_kills_lose_nothing import err_lines

pytest.importorskip("tensorboard")


def _events(run) -> set[str]:
    return {p.name for p in TRACKERS["tensorboard"].location(run).rglob("events.out.tfevents.*")}


def _steps_logged(run) -> set[int]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(TRACKERS["tensorboard"].location(run)))
    ea.Reload()
    return {e.step for e in ea.Scalars("train/loss")}


def test_overwrite_and_resume_treat_tracker_and_probe_files_as_the_runs_own(tmp_path, tiny_llama, tweets_text_file,
                                                                           capsys):
    run = tmp_path / "run"
    cfg = tiny_config(run, tiny_llama, tweets_text_file, "train.report_to=[tensorboard]", "eval.metrics=[val_loss]",
                      file=tmp_path / "tiny.yaml")
    assert main(["train", str(cfg), "--quiet"]) == 0
    assert main(["explain", str(run), "--text", "my bag is lost", "--attribute", "0"]) == 0
    assert main(["report", str(run)]) == 0
    folder = RunDir.at(run)
    written = {p.name for p in run.iterdir()}
    assert {TRACKERS["tensorboard"].location(run).name, folder.explain_file.name, folder.report_file.name,
            folder.probes.name} <= written and folder.probe_file("explain").is_file()
    first, page = _events(run), folder.report_file.stat().st_mtime_ns
    capsys.readouterr()

    assert main(["train", str(cfg), "--quiet"]) == 2        # no overwrite: what to do about the run
    line = err_lines(capsys)[0]
    assert f"{run} already holds a run. Fix: tailorlm train --resume {run}" in line, line

    assert main(["train", str(cfg), "--quiet", "output.overwrite=true"]) == 0, capsys.readouterr().err[-2000:]
    assert not folder.explain_file.exists() and not folder.probes.exists()
    assert folder.report_file.stat().st_mtime_ns > page      # the new run's page (train writes one)
    assert _events(run) and not _events(run) & first          # the old run's event files went with it
    assert json.loads(folder.trackers_file.read_text())["tensorboard"]["on"] is True

    assert main(["explain", str(run), "--text", "my bag is lost", "--attribute", "0"]) == 0
    assert main(["train", "--resume", str(run), "--quiet", "train.steps=4", "train.eval_every=4",
                 "train.save_every=4"]) == 0, capsys.readouterr().err[-2000:]
    assert json.loads(folder.summary_file.read_text())["steps"] == 4
    assert _steps_logged(run) == {1, 2, 3, 4}                 # the tracker logged on into the same folder
    assert folder.explain_file.is_file()                      # a resume deletes nothing of the run's

    (run / "notes.txt").write_text("mine")                    # a file of the user's: named, and kept
    capsys.readouterr()
    assert main(["train", str(cfg), "--quiet"]) == 2
    line = err_lines(capsys)[0]
    assert "already holds a run, and notes.txt" in line and "move notes.txt out and output.overwrite=true" in line
    assert (run / "notes.txt").read_text() == "mine"


def test_every_place_a_tracker_writes_in_a_run_is_named_by_the_run_folder(tmp_path):
    """Each tracker's location (trackio's where no TRACKIO_DIR is set: RUN/trackio) is a top-level
    entry the run folder owns, and so are the files SQLite keeps beside mlflow.db."""
    folder = RunDir.at(tmp_path.resolve())
    tops = set()
    for name, cls in TRACKERS.items():
        if name == "trackio" and "trackio.utils" in sys.modules:   # (trackio fixed its folder when imported)
            continue
        where = str(cls.location(folder.path)).removeprefix("sqlite:///")
        assert where.startswith(str(folder.path)), (name, where)
        tops.add(where[len(str(folder.path)) + 1:].split("/")[0])
    assert tops and all(is_own(t) for t in tops), tops
    assert all(is_own(folder.mlflow_db.name + side) for side in ("-journal", "-wal", "-shm"))
    assert is_own(folder.trackers_file.name) and is_own(folder.mlflow_artifacts.name)
    assert not is_own("notes.txt") and not is_own("mlflow.db.bak") and all(is_own(n) for n in OWN)
