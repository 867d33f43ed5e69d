"""`tailorlm models list | prepare NAME`: the embedded default models."""
from __future__ import annotations

HELP = "list or prepare embedded default models"


def add_arguments(p) -> None:
    p.add_argument("action", choices=["list", "prepare"])
    p.add_argument("name", nargs="?", default="smollm2-135m-instruct")


def run(a) -> int:
    from ..models.defaults import DEFAULT_MODELS, cache_dir, prepare

    if a.action == "list":
        for n in DEFAULT_MODELS:
            print(f"{n}\t{cache_dir() / 'models' / n}")
        return 0
    print(prepare(a.name))
    return 0
