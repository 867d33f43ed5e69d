"""`tailorlm report RUN [RUN ...] [--out FILE]`: a run, or several overlaid, as one HTML page (report/)."""
from __future__ import annotations

from contextlib import nullcontext

HELP = "draw a run (finished, still going, or killed), or several overlaid, as one self-contained HTML page"
EXAMPLES = """examples:
  tailorlm report runs/tickets                         writes runs/tickets/report.html
  tailorlm report runs/lora runs/full --out cmp.html   two runs on the same charts"""


def add_arguments(p) -> None:
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories (output.dir of their configs)")
    p.add_argument("--out", default=None, help="the page to write (default: RUN/report.html for one run, "
                   "./report.html for several)")


def report_command(a) -> int:
    """Where the page lands in a run folder (RUN/report.html by default), that run's lock is taken: a
    run another process is training writes its own page, and --out puts this one elsewhere."""
    from pathlib import Path

    from ..report.page import write_report
    from ..run.folder import RunDir
    from ..run.lock import hold_run

    page = Path(a.out) if a.out else (RunDir.at(a.runs[0]).report_file if len(a.runs) == 1 else None)
    with hold_run(page.parent, fix=", or --out FILE to write the page elsewhere") if page else nullcontext():
        print(write_report(a.runs, a.out))
    return 0
