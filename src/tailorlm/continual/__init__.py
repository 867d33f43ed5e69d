"""Continual learning: a sequence of tasks learnt by one model, and what each later task did to every
earlier one (the matrix R and its metrics). Built beside the loop: each stage is an ordinary run."""
from .metrics import summary
from .plan import PlanConfig, load_plan
from .runner import run_plan

__all__ = ["PlanConfig", "load_plan", "run_plan", "summary"]
