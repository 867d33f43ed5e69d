"""The `tailorlm` command: one module per subcommand, each with HELP, add_arguments(parser) and
run(args) -> exit code. User errors (errors.TailorError) are caught once, here: one line, exit 2."""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from ..errors import TailorError

# subcommand -> its module in this package
COMMANDS = {"train": "train", "eval": "evaluate", "generate": "generate", "demo": "demo", "audit": "audit",
            "models": "models", "methods": "methods", "export": "export"}


def _module(name: str):
    return importlib.import_module(f"{__name__}.{COMMANDS[name]}")


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")       # tailorlm never downloads
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = argparse.ArgumentParser(prog="tailorlm", description="fine-tune pre-trained language models")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        mod = _module(name)
        mod.add_arguments(sub.add_parser(name, help=mod.HELP, description=mod.HELP))
    args = parser.parse_args(argv)
    from ..train.signals import Interrupted

    run = _module(args.command).run
    if "TORCHELASTIC_ERROR_FILE" in os.environ:   # a rank under torchrun: its error reaches torchrun's summary
        from ..train.distributed import torchrun_entry

        run = torchrun_entry(run)
    try:
        return run(args)
    except Interrupted as e:
        if os.environ.get("RANK", "0") == "0":   # every rank stopped at the same step; one says so
            print(f"tailorlm {args.command}: {e}", file=sys.stderr)
        return e.exit_code
    except TailorError as e:
        print(f"tailorlm {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
