"""One writer per run folder (issue 25 item 1): a second `train` into a folder another process is
setting up, a `--resume` of a run still training, a `bias` / `report` writing into a run being trained,
a `compare` into a folder another holds: each refused in one line naming the holder's PID (exit 2),
nothing of the holder's touched. A lock left by a process that died is taken over, and said so.

The live holder is a real `tailorlm` process held at an exact point by the Gate callback below
(`train.callbacks=["tests.run.test_lock:Gate"]`, armed by an environment variable, so the same
config runs straight through without it).
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tailorlm.commands import main
from tailorlm.train import Callback
from tailorlm.train.log import read_metrics

from ..conftest import tiny_config
from ..run.test_kills_lose_nothing import WRITES_ALL, snapshot
from ..train.test_resume import cli
from ..tiny_models import one_thread  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")

LOCK = ".tailorlm-lock"              # (spelled out: these tests must fail, not error, on code without it)
GATE = "TAILORLM_TEST_GATE"          # FOLDER:POINT, POINT `setup` or a step number
GATED = ['train.callbacks=["tests.run.test_lock:Gate"]']
ONE = {"OMP_NUM_THREADS": "1"}


class Gate(Callback):
    """Holds the run at POINT (start-up, after the run folder is prepared; or the end of a step):
    writes FOLDER/ready, then waits for FOLDER/go. Why: a live writer at a known moment, without sleeps."""

    def __init__(self):
        folder, _, self.point = os.environ.get(GATE, "").rpartition(":")
        self.folder = Path(folder) if folder else None
        if self.folder and self.point == "setup":
            self._wait()

    def on_step_end(self, run, rec) -> None:
        if self.folder and self.point == str(rec["step"]):
            self._wait()

    def _wait(self) -> None:
        (self.folder / "ready").write_text(str(os.getpid()))
        t = time.time()
        while not (self.folder / "go").exists():
            if time.time() - t > 300:
                raise RuntimeError("gate never opened")
            time.sleep(0.05)


def gated(tmp_path: Path, point: str) -> dict:
    (tmp_path / "gate").mkdir(exist_ok=True)
    return {**ONE, GATE: f"{tmp_path / 'gate'}:{point}"}


def wait_ready(tmp_path: Path, proc, timeout: float = 300) -> None:
    t = time.time()
    while not (tmp_path / "gate" / "ready").exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() - t < timeout, "the holder never reached its gate"
        time.sleep(0.05)


def tailor_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("tailorlm ")]


def assert_refused(rc: int, err: str, pid: int) -> None:
    """Exit 2, one line naming the holder's PID, no traceback."""
    lines = tailor_lines(err)
    assert rc == 2, err[-3000:]
    assert len(lines) == 1 and f"pid {pid}" in lines[0], err[-3000:]
    assert "Traceback" not in err


def assert_intact(run: Path, steps: int, lr: float) -> None:
    """The holder's run whole: its own config, each step logged once, final/ and a summary that agree."""
    import yaml

    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["train"]["steps"] == steps and cfg["train"]["lr"] == lr
    logged = [r["step"] for r in read_metrics(run / "metrics.jsonl") if "loss" in r]
    assert logged == list(range(1, steps + 1))
    assert (run / "final" / "adapter_config.json").is_file()
    assert json.loads((run / "summary.json").read_text())["steps"] == steps
    assert not (run / LOCK).exists()      # released when the holder ended


def test_a_second_train_into_a_folder_being_set_up_is_refused(tmp_path, tiny_llama, tweets_text_file):
    """The issue's race: the second start emptied the folder while the first was setting up."""
    run = tmp_path / "d"
    cfg = tiny_config(run, tiny_llama, tweets_text_file, *WRITES_ALL, file=tmp_path / "tiny.yaml",
                      train={"steps": 4, "eval_every": 2, "save_every": 2, "threads": 1})
    first = cli("train", str(cfg), "--quiet", *GATED, env=gated(tmp_path, "setup"))
    try:
        wait_ready(tmp_path, first)
        before = {p.name for p in run.iterdir()}
        second = cli("train", str(cfg), "--quiet", "train.lr=1e-4", "train.steps=3", env=ONE)
        _, err = second.communicate(timeout=300)
        assert_refused(second.returncode, err, first.pid)
        assert before <= {p.name for p in run.iterdir()}        # nothing of the first deleted
        again = cli("train", "--resume", str(run), "--quiet", env=ONE)
        _, err = again.communicate(timeout=300)
        assert_refused(again.returncode, err, first.pid)
    finally:
        (tmp_path / "gate" / "go").touch()
        out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-3000:]
    assert_intact(run, 4, 1e-2)


def test_resume_and_writing_commands_on_a_run_being_trained_are_refused(tmp_path, tiny_llama, tweets_text_file,
                                                                        capsys):
    """A finished run continued to more steps: while it trains, `--resume`, `bias` and `report` (which
    would write into it, its final/ being there) are refused; `report --out` elsewhere is not."""
    run = tmp_path / "run"
    cfg = tiny_config(run, tiny_llama, tweets_text_file, *WRITES_ALL, file=tmp_path / "tiny.yaml",
                      train={"steps": 2, "eval_every": 2, "save_every": 2, "threads": 1})
    assert main(["train", str(cfg), "--quiet"]) == 0
    capsys.readouterr()
    live = cli("train", "--resume", str(run), "--quiet", "train.steps=6", *GATED, env=gated(tmp_path, "4"))
    try:
        wait_ready(tmp_path, live)
        again = cli("train", "--resume", str(run), "--quiet", env=ONE)
        _, err = again.communicate(timeout=300)
        assert_refused(again.returncode, err, live.pid)
        page = snapshot(run).get(Path("report.html"))      # the live run's own page
        for argv in (["report", str(run)], ["bias", str(run), "--max-pairs", "4"]):
            rc = main(argv)
            assert_refused(rc, capsys.readouterr().err, live.pid)
        assert snapshot(run).get(Path("report.html")) == page and not (run / "probes" / "bias.json").exists()
        assert main(["report", str(run), "--out", str(tmp_path / "elsewhere.html")]) == 0
    finally:
        (tmp_path / "gate" / "go").touch()
        out, err = live.communicate(timeout=300)
    assert live.returncode == 0, err[-3000:]
    assert_intact(run, 6, 1e-2)


def test_a_stale_lock_is_taken_over_with_a_note(tmp_path, tiny_llama, tweets_text_file, capsys):
    """A lock file whose process died (SIGKILL leaves it; the kernel dropped its flock) blocks nothing."""
    run = tmp_path / "run"
    cfg = tiny_config(run, tiny_llama, tweets_text_file, *WRITES_ALL, file=tmp_path / "tiny.yaml", train={"threads": 1})
    assert main(["train", str(cfg), "--quiet"]) == 0
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    (run / LOCK).write_text(json.dumps({"tool": "tailorlm", "pid": pid, "command": "tailorlm train old.yaml",
                                        "host": socket.gethostname(), "started": "2025-01-01T00:00:00"}))
    capsys.readouterr()
    assert main(["train", str(cfg), "--quiet", "output.overwrite=true"]) == 0
    got = capsys.readouterr()
    notes = [line for line in (got.out + got.err).splitlines() if "took over a stale lock" in line]
    assert len(notes) == 1 and str(pid) in notes[0], got.err[-2000:]
    assert not (run / LOCK).exists() and (run / "final").is_dir()


HOLD = """
import sys, time
from pathlib import Path
from tailorlm.run.lock import hold
with hold(Path(sys.argv[1])):
    print("held", flush=True)
    while not Path(sys.argv[2]).exists():
        time.sleep(0.05)
"""


def test_compare_into_a_folder_another_process_holds_is_refused(tmp_path, tiny_llama, tweets_text_file, capsys):
    """Any holder (here a bare process holding the lock) keeps a compare out of its folder."""
    root = tmp_path / "cmp"
    cfg = tiny_config(tmp_path / "unused", tiny_llama, tweets_text_file, *WRITES_ALL, file=tmp_path / "tiny.yaml",
                      train={"threads": 1})
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(root), str(tmp_path / "go")], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env={**os.environ, **ONE})
    try:
        assert holder.stdout.readline().strip() == "held", holder.communicate()
        rc = main(["compare", str(cfg), "--out", str(root), "--train-sizes", "8", "--dry-run"])
        assert_refused(rc, capsys.readouterr().err, holder.pid)
        assert not (root / "data").exists()
    finally:
        (tmp_path / "go").touch()
        holder.communicate(timeout=60)
    assert holder.returncode == 0 and not (root / LOCK).exists()
