"""Nothing foreign touched (issue 13 item 1, issue 14's retry and export edges): tailorlm deletes
only what it wrote, checks everything before it deletes anything, and says so in one line."""
from __future__ import annotations

import json
import shutil

import pytest

from tailorlm.commands import main
from tailorlm.config import load_config
from tailorlm.train.loop import train

from ..conftest import tiny_config
from ..run.test_kills_lose_nothing import WRITES_ALL, err_lines, snapshot
from ..tiny_models import one_thread  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------ 1. overwrite deletes only runs


def test_overwrite_never_deletes_a_folder_tailorlm_did_not_write(tmp_path, tiny_llama, tweets_text_file, monkeypatch,
                                                                 capsys):
    home = tmp_path / "project"
    home.mkdir()
    shutil.copy(tweets_text_file, home / "data.jsonl")
    (home / "precious.txt").write_text("mine")
    before = snapshot(home)
    cfg = tiny_config(tmp_path / "unused", tiny_llama, home / "data.jsonl", *WRITES_ALL, file=tmp_path / "tiny.yaml")
    monkeypatch.chdir(home)
    assert main(["train", str(cfg), "output.dir=.", "output.overwrite=true"]) == 2
    assert "nothing was deleted" in err_lines(capsys)[0]
    monkeypatch.chdir(tmp_path)
    assert main(["train", str(cfg), f"output.dir={home}", "output.overwrite=true"]) == 2
    assert "not a tailorlm run" in err_lines(capsys)[0]
    assert snapshot(home) == before


def test_no_command_touches_a_file_tailorlm_did_not_write(tmp_path, tiny_llama, tweets_text_file, monkeypatch, capsys):
    """Sentinels beside the run survive train (fresh, overwrite, resume), eval, generate, export
    --merge/--adapter --overwrite and audit, and the deletions issue 13 saw are refused."""
    parent = tmp_path / "parent"
    (parent / "sub").mkdir(parents=True)
    shutil.copy(tweets_text_file, parent / "data.jsonl")
    for name, text in {"precious.txt": "mine", "sub/nested.txt": "deep", ".hidden": "h", "run.txt": "r"}.items():
        (parent / name).write_text(text)
    before = snapshot(parent)
    run, exp = parent / "run", parent / "exported"
    cfg = tiny_config(run, tiny_llama, parent / "data.jsonl", *WRITES_ALL, file=tmp_path / "tiny.yaml")
    commands = [
        (["train", cfg, "--quiet"], 0),
        (["train", cfg, "--quiet", "output.overwrite=true"], 0),
        (["train", "--resume", run, "--quiet"], 0),
        (["eval", run], 0),
        (["generate", run, "--prompt", "My bag is lost", "--max-new-tokens", "3"], 0),
        (["export", run, "--merge", "--out", exp], 0),
        (["export", run, "--merge", "--out", exp, "--overwrite"], 0),
        (["export", run, "--adapter", "--out", exp, "--overwrite"], 0),
        (["audit", parent / "data.jsonl", "--json", parent / "audit-report.json"], None),
        # what issue 13 saw deleted: each refused before anything is touched
        (["train", cfg, "--quiet", f"output.dir={parent}", "output.overwrite=true"], 2),
        (["export", run, "--adapter", "--out", run, "--overwrite"], 2),
        (["export", run, "--merge", "--out", parent, "--overwrite"], 2),
        (["export", parent / "typo_run", "--merge", "--out", exp, "--overwrite"], 2),
        (["export", run, "--merge", "--out", parent / "sub", "--overwrite"], 2),
    ]
    for argv, want in commands:
        got = main([str(a) for a in argv])
        err = capsys.readouterr().err
        assert want is None or got == want, (argv, err[-2000:])
        assert {k: v for k, v in snapshot(parent).items() if k in before} == before, argv
    assert {p.name for p in parent.iterdir()} == {p.parts[0] for p in before} | {"run", "exported", "audit-report.json"}
    assert (exp / "adapter_config.json").is_file() and (run / "final" / "adapter_config.json").is_file()

    (run / "notes.txt").write_text("my notes")       # a run holding a file of the user's is not deleted
    assert main(["train", str(cfg), "--quiet", "output.overwrite=true"]) == 2
    assert "notes.txt" in err_lines(capsys)[0] and (run / "notes.txt").read_text() == "my notes"
    (run / "notes.txt").unlink()
    monkeypatch.chdir(run)                           # nor the current directory, even a run
    assert main(["train", str(cfg), "--quiet", "output.dir=.", "output.overwrite=true"]) == 2
    assert "current directory" in err_lines(capsys)[0] and (run / "final").is_dir()


# ------------------------------------------------------------------ user errors without tracebacks


def test_output_dir_that_is_a_file_is_one_line(tmp_path, tiny_llama, tweets_text_file, capsys):
    taken = tmp_path / "taken"
    taken.write_text("mine")
    cfg = tiny_config(taken, tiny_llama, tweets_text_file, *WRITES_ALL, file=tmp_path / "tiny.yaml")
    assert main(["train", str(cfg)]) == 2
    assert "is a file" in err_lines(capsys)[0] and taken.read_text() == "mine"


def test_overrides_may_follow_flags(tmp_path, tiny_llama, tweets_text_file, capsys):
    cfg = tiny_config(tmp_path / "run", tiny_llama, tweets_text_file, *WRITES_ALL, file=tmp_path / "tiny.yaml",
                      train={"steps": 3})
    assert main(["train", str(cfg), "--quiet", "train.steps=1", "train.eval_every=1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["steps"] == 1


# ------------------------------------------------------------------ issue 14: retry, export fallback


def test_a_failed_start_does_not_block_its_own_retry(tmp_path, tiny_llama, tweets_text_file, capsys):
    cfg = tiny_config(tmp_path / "run", tiny_llama, tweets_text_file, *WRITES_ALL, file=tmp_path / "tiny.yaml")
    (tmp_path / "empty.jsonl").write_text("")                   # (a missing file is refused before the run starts)
    assert main(["train", str(cfg), "--quiet", f"data.train={tmp_path / 'empty.jsonl'}"]) == 2
    assert (tmp_path / "run" / "config.yaml").is_file()        # the failed start wrote into the run
    capsys.readouterr()
    assert main(["train", str(cfg), "--quiet"]) == 0, capsys.readouterr().err[-2000:]


def test_merge_of_a_method_that_cannot_merge_fails_unless_the_fallback_is_asked_for(tmp_path, tiny_llama,
                                                                                   tweets_text_file, capsys):
    run, out = tmp_path / "run", tmp_path / "out"
    train(load_config(tiny_config(run, tiny_llama, tweets_text_file, *WRITES_ALL, file=tmp_path / "tiny.yaml",
                                  method={"name": "bottleneck"})),
          quiet=True)
    assert main(["export", str(run), "--merge", "--out", str(out)]) == 2
    line = err_lines(capsys)[0]
    assert "bottleneck cannot be merged" in line and "--or-adapter" in line and not out.exists()
    assert main(["export", str(run), "--merge", "--or-adapter", "--out", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["mode"] == "adapter" and (out / "bottleneck.json").is_file()
