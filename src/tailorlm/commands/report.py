"""`tailorlm report RUN [RUN ...] [--out FILE]`: a run, or several overlaid, as one HTML page (report/)."""
from __future__ import annotations

HELP = "draw a run (finished, still going, or killed), or several overlaid, as one self-contained HTML page"
EXAMPLES = """examples:
  tailorlm report runs/tickets                         writes runs/tickets/report.html
  tailorlm report runs/lora runs/full --out cmp.html   two runs on the same charts"""


def add_arguments(p) -> None:
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories (output.dir of their configs)")
    p.add_argument("--out", default=None, help="the page to write (default: RUN/report.html for one run, "
                   "./report.html for several)")


def run(a) -> int:
    from ..report.page import write_report

    print(write_report(a.runs, a.out))
    return 0
