"""The run folder is one format owned by tailorlm.run: its file names are spelled there only, RunDir
reads what a run still going or killed left, and writes whole files only."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from tailorlm.errors import MissingError
from tailorlm.run import RunDir, run_dir_of
from tailorlm.run.continual_dir import ContinualDir
from tailorlm.run.folder import OWN, is_own, mark, state

SRC = Path(__file__).resolve().parents[2] / "src" / "tailorlm"
NAMES = {"config.yaml", "metrics.jsonl", "samples.jsonl", "summary.json", "base_eval.json", "audit.json", "env.json",
         "canaries.json", "report.html", "explain.html", ".tailorlm-run", ".tailorlm-lock", "matrix.json",
         "continual.json"}


def test_the_run_folder_names_are_spelled_only_in_the_run_package():
    """Every file of a run folder is named as a string literal in tailorlm/run/ and nowhere else."""
    found = []
    for f in sorted(SRC.rglob("*.py")):
        if f.relative_to(SRC).parts[0] == "run":
            continue
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Constant) and node.value in NAMES:
                found.append(f"{f.relative_to(SRC)}:{node.lineno} {node.value!r}")
    assert not found, "run-folder names outside tailorlm/run:\n" + "\n".join(found)


def test_a_run_dir_is_found_from_its_final_folder(tmp_path):
    (tmp_path / "r" / "final").mkdir(parents=True)
    assert run_dir_of(tmp_path / "r" / "final") == tmp_path / "r" / "final"   # no config.yaml beside it: as given
    (tmp_path / "r" / "config.yaml").write_text("model: {path: x}\n")
    assert RunDir(tmp_path / "r" / "final").path == tmp_path / "r"
    assert RunDir.at(tmp_path / "r" / "final").path == tmp_path / "r" / "final"   # train writes where it is told


def test_a_folder_that_is_no_run_says_so(tmp_path):
    with pytest.raises(MissingError, match="not a tailorlm run"):
        RunDir(tmp_path).config()
    with pytest.raises(MissingError, match="no such directory"):
        RunDir(tmp_path / "gone").config()


def test_readers_take_what_a_killed_run_left(tmp_path):
    run = RunDir.at(tmp_path)
    assert run.summary() is None and run.metrics() == [] and run.config_raw() == {}
    run.metrics_file.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "lo')   # the last line cut by a kill
    assert run.metrics() == [{"step": 1, "loss": 2.0}]
    run.config_file.write_text("train: [unclosed\n")
    assert run.config_raw() == {}
    run.write_summary({"steps": 3})
    assert run.summary() == {"steps": 3} and run.is_finished() is False
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml", "metrics.jsonl", "summary.json"]   # no debris


def test_the_marker_and_what_is_tailorlms_own(tmp_path):
    assert state(tmp_path) is None
    mark(tmp_path, "setup")
    assert RunDir.at(tmp_path).state() == "setup"
    assert json.loads(RunDir.at(tmp_path).marker_file.read_text())["tool"] == "tailorlm"
    assert all(is_own(n) for n in OWN) and not is_own("notes.txt")


def test_a_continual_plan_keeps_its_matrix_whole(tmp_path):
    order = ContinualDir(tmp_path).order(0)
    order.mkdir()
    assert ContinualDir.read_matrix(order) is None
    ContinualDir.write_matrix(order, {"R": [[0.5]]})
    assert ContinualDir.read_matrix(order) == {"R": [[0.5]]}
    assert [p.name for p in order.iterdir()] == ["matrix.json"]
    assert ContinualDir.stage(order, 2, "b").path == order / "02-b"
