"""The `tailorlm` command: one module per subcommand, each with HELP, add_arguments(parser) and
NAME_command(args) -> exit code, registered in COMMANDS (and optionally EXAMPLES, shown by --help).
User errors (errors.TailorError) are caught once, here: one line, exit 2.

The libraries' own chatter (transformers' deprecation warnings, "Loading weights" bars, PEFT's
notices) is switched off unless --verbose: on every command it buried the lines tailorlm prints."""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings

from ..errors import TailorError

# subcommand -> "module:function" in this package: its module (HELP, add_arguments, optional EXAMPLES) and the
# function that runs it, named after the subcommand (each name its own, so none hides another `run`)
COMMANDS = {
    "train": "train:train_command",
    "eval": "evaluate:eval_command",
    "generate": "generate:generate_command",
    "predict": "predict:predict_command",
    "demo": "demo:demo_command",
    "audit": "audit:audit_command",
    "models": "models:models_command",
    "methods": "methods:methods_command",
    "export": "export:export_command",
    "presets": "presets:presets_command",
    "continual": "continual:continual_command",
    "plan": "plan:plan_command",
    "explain": "explain:explain_command",
    "privacy": "privacy:privacy_command",
    "bias": "bias:bias_command",
    "compare": "compare:compare_command",
    "report": "report:report_command",
}

EXAMPLES = """examples:
  tailorlm presets                                       the shipped configs
  tailorlm demo --data-only && tailorlm train --preset airline-lora
  tailorlm train my.yaml train.lr=1e-4 method.r=8        a config, with dotted overrides
  tailorlm audit tickets.jsonl --val val.jsonl           check data before training
  tailorlm eval runs/my-run                              held-out scores of a run
  tailorlm generate runs/my-run --prompt "My bag is lost"
  tailorlm predict runs/my-run test.jsonl --out preds.jsonl   a label and its probability per row
  tailorlm export runs/my-run --merge --out exported/my-run
  tailorlm report runs/my-run                            the run as one HTML page (report.html)

`tailorlm COMMAND --help` for each command's options."""

# environment switches read when the libraries are imported (after this, quiet_libraries calls their API)
QUIET_ENV = {"TRANSFORMERS_VERBOSITY": "error", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
             "HF_DATASETS_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1"}


def _module(name: str):
    """The subcommand's module."""
    return importlib.import_module(f"{__name__}.{COMMANDS[name].partition(':')[0]}")


def entry(name: str):
    """The function that runs the subcommand: args -> exit code."""
    return getattr(_module(name), COMMANDS[name].partition(":")[2])


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tailorlm")
    except PackageNotFoundError:
        return "unknown (not installed)"


def quiet_libraries(verbose: bool) -> None:
    """Library warnings and progress bars only with --verbose (tailorlm's own lines and its training
    bar always show). Environment switches cover libraries imported later; the API those already in."""
    if not verbose:
        for key, value in QUIET_ENV.items():
            os.environ.setdefault(key, value)
        for category in (FutureWarning, DeprecationWarning):
            warnings.filterwarnings("ignore", category=category)
        warnings.filterwarnings("ignore", category=UserWarning,
                                module=r"(transformers|peft|accelerate|torch|datasets)\b")
    if "transformers" in sys.modules:
        from transformers.utils import logging as tlog

        (tlog.set_verbosity_warning if verbose else tlog.set_verbosity_error)()
        (tlog.enable_progress_bar if verbose else tlog.disable_progress_bar)()
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

        (enable_progress_bars if verbose else disable_progress_bars)()


def build_parser() -> argparse.ArgumentParser:
    """The parser: --verbose is accepted before or after the subcommand."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="show the libraries' warnings and progress bars (transformers, PEFT, datasets)")
    parser = argparse.ArgumentParser(prog="tailorlm", description="Fine-tune pre-trained language models, and see "
                                     "what the tuning gained and what it cost.", epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"tailorlm {_version()}")
    parser.add_argument("-v", "--verbose", action="store_true", default=False,
                        help="show the libraries' warnings and progress bars (transformers, PEFT, datasets)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        mod = _module(name)
        mod.add_arguments(sub.add_parser(name, help=mod.HELP, description=mod.HELP, parents=[common],
                                         epilog=getattr(mod, "EXAMPLES", None),
                                         formatter_class=argparse.RawDescriptionHelpFormatter))
    return parser


def parse(argv: list[str] | None):
    """Arguments; key=value words after an option (`generate RUN --prompt X model.path=...`) join the
    command's overrides, which argparse alone would reject once an option has split the positionals."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and hasattr(args, "overrides") and all("=" in x and not x.startswith("-") for x in extra):
        args.overrides = [*(args.overrides or []), *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")       # tailorlm never downloads
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = parse(argv)
    quiet_libraries(args.verbose)
    from ..train.signals import Interrupted

    run = entry(args.command)
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
    except BrokenPipeError:   # `tailorlm ... | head` stopped reading: no traceback (Python's recipe)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
