"""`tailorlm models list | prepare NAME`: the embedded default models."""
from __future__ import annotations

HELP = "list or prepare embedded default models"


EXAMPLES = """examples:
  tailorlm models list                              short names and their cache folders
  tailorlm models prepare smollm2-135m-instruct     convert it now (otherwise on first use)"""


def add_arguments(p) -> None:
    p.add_argument("action", choices=["list", "prepare"], help="list the embedded models, or prepare one")
    p.add_argument("name", nargs="?", default="smollm2-135m-instruct", help="the model to prepare "
                   "(default smollm2-135m-instruct)")


def models_command(a) -> int:
    from ..models.defaults import DEFAULT_MODELS, cache_dir, prepare

    if a.action == "list":
        for n in DEFAULT_MODELS:
            print(f"{n}\t{cache_dir() / 'models' / n}")
        return 0
    print(prepare(a.name))
    return 0
