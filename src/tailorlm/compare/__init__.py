"""`tailorlm compare`: several configurations (methods) on the same data, data order and token budget,
each run an ordinary run in its own process, over seeds and training-set sizes; compare.json and
compare.html (grid.py, runner.py, measure.py, table.py, page.py)."""
from .grid import RunSpec, expand
from .runner import RunFailed, run_compare

__all__ = ["RunFailed", "RunSpec", "expand", "run_compare"]
