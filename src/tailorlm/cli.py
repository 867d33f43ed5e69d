"""The `tailorlm` command: subcommands in one dict, each a (add_arguments, run) pair."""
from __future__ import annotations

import argparse
import json
import os
import sys


def _train_args(p):
    p.add_argument("config", nargs="?", help="YAML config (see configs/); not needed with --resume")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=1e-4 method.r=8")
    p.add_argument("--resume", metavar="RUN", help="continue the run in this directory from its last good checkpoint")
    p.add_argument("--quiet", action="store_true")


def _train(a) -> int:
    from .config import ConfigError, load_config
    from .train.loop import train

    if a.config and "=" in a.config:  # `train --resume RUN key=value`: no config file given
        a.overrides, a.config = [a.config, *a.overrides], None
    if a.resume:
        from pathlib import Path
        cfg = load_config(Path(a.resume) / "config.yaml", a.overrides + [f"output.dir={a.resume}"])
    elif a.config is None:
        raise ConfigError("train needs a config file (or --resume RUN)")
    else:
        cfg = load_config(a.config, a.overrides)
    summary = train(cfg, resume=bool(a.resume), quiet=a.quiet)
    if os.environ.get("RANK", "0") != "0":   # under torchrun, rank 0 speaks for the job
        return 0
    print(json.dumps({k: summary[k] for k in ("steps", "first_loss", "last_loss", "tokens_per_s", "base", "final")},
                     indent=1))
    return 0


def _eval_args(p):
    p.add_argument("target", help="a run directory (evaluates its final/) or a config (evaluates the base model)")
    p.add_argument("overrides", nargs="*")


def _eval(a) -> int:
    from .cmd_eval import evaluate_target

    print(json.dumps(evaluate_target(a.target, a.overrides), indent=1))
    return 0


def _generate_args(p):
    p.add_argument("run", help="a run directory, or a model folder / embedded name")
    p.add_argument("--prompt", required=True)
    p.add_argument("--max-new-tokens", type=int, default=64)


def _generate(a) -> int:
    from .cmd_eval import generate

    print(generate(a.run, a.prompt, a.max_new_tokens))
    return 0


def _models_args(p):
    p.add_argument("action", choices=["list", "prepare"])
    p.add_argument("name", nargs="?", default="smollm2-135m-instruct")


def _models(a) -> int:
    from .models.defaults import DEFAULT_MODELS, cache_dir, prepare

    if a.action == "list":
        for n in DEFAULT_MODELS:
            print(f"{n}\t{cache_dir() / 'models' / n}")
        return 0
    print(prepare(a.name))
    return 0


def _methods_args(p):
    p.add_argument("--model", default=None, help="count trainable parameters on this model (folder or short name)")
    p.add_argument("--task", default="auto", choices=["auto", "causal_lm", "sequence_classification"],
                   help="auto: a classifier for encoders, a language model otherwise")


def _methods(a) -> int:
    from .cmd_methods import summary, table
    from .methods import METHODS

    if a.model is None:
        for name, m in METHODS.items():
            print(f"{name:11s} {summary(m)}")
        return 0
    rows, title = table(a.model, a.task)
    print(f"methods on {title}, default settings:")
    for r in rows:
        n = f"{r['trainable']:>13,} {100 * r['share']:8.3f}%" if r["trainable"] is not None else f"{'-':>13} {'-':>9}"
        print(f"{r['method']:11s}{n}  {r['note']}")
    return 0


def _export_args(p):
    p.add_argument("run", help="a run directory (exports its final/)")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--merge", action="store_true", help="one Hugging Face folder, method folded into the weights")
    how.add_argument("--adapter", action="store_true", help="the method's adapter (PEFT's format for PEFT methods)")
    p.add_argument("--out", required=True, help="the folder to write")
    p.add_argument("--atol", type=float, default=None, help="parity tolerance on logits (default 1e-3; 5e-2 for bf16)")
    p.add_argument("--prompts", type=int, default=4, help="held-out prompts the parity check runs")
    p.add_argument("--overwrite", action="store_true")


def _export(a) -> int:
    from .export import ParityError, export

    try:
        rep = export(a.run, a.out, "merge" if a.merge else "adapter", atol=a.atol, n_prompts=a.prompts,
                     overwrite=a.overwrite)
    except ParityError as e:
        print(f"tailorlm export: parity check failed: {e}", file=sys.stderr)
        return 1
    print(json.dumps(rep, indent=1))
    return 0


def _demo_args(p):
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--out", default="runs/demo", help="run directory")
    p.add_argument("--data-dir", default="data/airline", help="where the tweets are written as JSONL")
    p.add_argument("--data-only", action="store_true", help="only write the data (for the presets in configs/)")
    p.add_argument("--mitigation", default="distill", choices=["replay", "distill", "l2sp", "ewc", "none"],
                   help="the second run's forgetting mitigation (default distill; none: one run only)")


def _demo(a) -> int:
    from .demo import main

    return main(steps=a.steps, out=a.out, data_dir=a.data_dir, data_only=a.data_only,
                mitigation=None if a.mitigation == "none" else a.mitigation)


def _audit_args(p):
    from .audit.command import add_arguments

    add_arguments(p)


def _audit(a) -> int:
    from .audit.command import run

    return run(a)


COMMANDS = {
    "train": (_train_args, _train, "fine-tune a model from a config"),
    "eval": (_eval_args, _eval, "evaluate a run or a base model on the config's held-out data"),
    "generate": (_generate_args, _generate, "generate text from a run (chat template applied)"),
    "demo": (_demo_args, _demo, "fine-tune the embedded SmolLM2 on airline tweets; before/after table"),
    "audit": (_audit_args, _audit, "check a data file before training"),
    "models": (_models_args, _models, "list or prepare embedded default models"),
    "methods": (_methods_args, _methods, "list the tuning methods (with --model: what each trains on it)"),
    "export": (_export_args, _export, "write a run as a merged Hugging Face folder or an adapter, parity-checked"),
}


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")       # tailorlm never downloads
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = argparse.ArgumentParser(prog="tailorlm", description="fine-tune pre-trained language models")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (add, _, help_) in COMMANDS.items():
        add(sub.add_parser(name, help=help_, description=help_))
    args = parser.parse_args(argv)
    from .config import ConfigError
    from .data.read import DataError
    from .models.load import ModelError

    from .train.signals import Interrupted

    run = COMMANDS[args.command][1]
    if "TORCHELASTIC_ERROR_FILE" in os.environ:   # a rank under torchrun: its error reaches torchrun's summary
        from .train.distributed import torchrun_entry

        run = torchrun_entry(run)
    try:
        return run(args)
    except Interrupted as e:
        if os.environ.get("RANK", "0") == "0":   # every rank stopped at the same step; one says so
            print(f"tailorlm {args.command}: {e}", file=sys.stderr)
        return e.exit_code
    except (ConfigError, DataError, ModelError, FileExistsError, FileNotFoundError, FloatingPointError,
            MemoryError) as e:
        print(f"tailorlm {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
