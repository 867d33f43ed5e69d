"""ReportWriter: RUN/report.html at the end of every run (rank 0), and RUN/env.json at its start.

The page (tailorlm.report) is written after summary.json (on_end) and, when a signal stops the run,
right after the interruption is logged, so a run stopped with Ctrl-C has its page too. Drawing the
page must never cost the run: any failure is a warning and training's result stands (a full disk:
one line naming the file, which keeps its previous version or is not there at all).
`tailorlm report RUN` draws the same page at any time, from a run still going or one killed.
"""
from __future__ import annotations

import json

from ..atomic import DiskFull, write_text
from ..report.collect import env_info
from ..report.page import write_report
from ..run.folder import ENV, REPORT, RunDir
from .callbacks import Callback


class ReportWriter(Callback):
    def on_start(self, run) -> None:
        self._guard(run, ENV, lambda: write_text(RunDir.at(run.run_dir).env_file, json.dumps(env_info(
            device=str(run.device), processes=run.dist.world, precision=run.cfg.train.precision), indent=1)))

    def on_message(self, run, text, record=None, always=False) -> None:
        if record is not None and "interrupted" in record:   # (logged by phases.interrupt: no on_end follows)
            self._write(run)

    def on_end(self, run, summary: dict) -> None:
        self._write(run)

    def _write(self, run) -> None:
        self._guard(run, REPORT, lambda: write_report([run.run_dir]))

    @staticmethod
    def _guard(run, what: str, fn) -> None:
        try:
            fn()
        except Exception as e:  # noqa: BLE001  (a report that cannot be drawn never fails the run)
            why = e.brief if isinstance(e, DiskFull) else f"could not write {what} ({type(e).__name__}: {e})"
            run.say(f"[tailorlm] warning: {why}; the run is unaffected; `tailorlm report {run.run_dir}` draws it "
                    "later", always=True)
