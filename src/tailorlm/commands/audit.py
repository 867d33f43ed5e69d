"""The `tailorlm audit` subcommand: argument parsing, config reading, output and exit code.

    tailorlm audit DATA [--val FILE] [--test FILE] [--config CFG] [--json OUT] [--redact OUT]
                   [--strict] [--format F] [--field ROLE=COLUMN ...] [--labels a,b]
                   [--model PATH] [--max-length N] [--near-dup-threshold T]

Exit codes: 0 clean (or warnings without --strict), 1 warnings with --strict, 2 anything fatal
(see `tailorlm.audit.report`). --config reads only the keys the audit needs from the training
YAML (see `read_config`) with plain yaml, so the audit works on a config the trainer would
reject; command-line options win over the config. Malformed lines follow the trainer's rule:
data.on_error: stop (its default, with or without --config) makes every one fatal, since training
would stop at the first, so the audit never passes a file `tailorlm train` rejects; --on-error skip
audits as data.on_error: skip trains. --redact writes a copy of DATA with PII replaced by
placeholders, in DATA's format; DATA itself is never written. A --model folder loads through the
one safe loader: its code runs only with the config's model.trust_remote_code: true.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..audit.core import run_audit
from ..config import DataConfig
from ..errors import ConfigError
from ..audit.pii import redact_file
from ..audit.report import FATAL, AuditReport, Finding
from ..audit.schema import FIELD_KEYS, FORMATS, ROLES

HELP = "check a data file before training"
EXAMPLES = """examples:
  tailorlm audit train.jsonl --val val.jsonl --test test.jsonl     duplicates, leakage, PII, labels
  tailorlm audit --config my.yaml --model smollm2-135m-instruct    as that config trains (+ token view)
  tailorlm audit tweets.csv --field text=tweet --field label=sentiment
  tailorlm audit train.jsonl --json report.json --redact train.redacted.jsonl"""

MODEL_KEYS = ("path", "name_or_path", "name", "base", "id")
PIPELINE_KEYS = ("prompt_template", "system", "chat_template", "too_long")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", nargs="?", help="training data file (.jsonl, .csv, .parquet); "
                        "defaults to data.train of --config")
    parser.add_argument("--val", help="validation file (checked for leakage from train)")
    parser.add_argument("--test", help="test file (checked for leakage from train and val)")
    parser.add_argument("--config", help="training YAML; only data.* and the model path are read")
    parser.add_argument("--json", metavar="OUT", help="write the full report as JSON")
    parser.add_argument("--redact", metavar="OUT", help="write a PII-redacted copy of DATA")
    parser.add_argument("--strict", action="store_true", help="exit 1 when there are warnings")
    parser.add_argument("--format", choices=("auto",) + FORMATS, default=None, help="as data.format (default auto)")
    parser.add_argument("--field", action="append", default=[], metavar="ROLE=COLUMN",
                        help=f"column holding a role ({', '.join(ROLES)}), e.g. label=sentiment; in a training "
                        "config: data.text_field, data.label_field, data.prompt_field, ...")
    parser.add_argument("--labels", help="comma-separated allowed labels (classification)")
    parser.add_argument("--model", help="model or tokenizer path for the tokenised view")
    parser.add_argument("--max-length", type=int, default=None, help="token limit to check truncation")
    parser.add_argument("--near-dup-threshold", type=float, default=0.8,
                        help="Jaccard similarity for near duplicates (default 0.8)")
    parser.add_argument("--shingle", choices=("word", "char"), default="word",
                        help="near duplicates over word n-grams (default) or character k-grams")
    parser.add_argument("--shingle-size", type=int, default=None,
                        help="word n-grams up to n (default 2) or char k-grams (default 5)")
    parser.add_argument("--on-error", choices=("skip", "stop"), default=None,
                        help="as data.on_error (default: the trainer's, stop): stop makes every bad line fatal")


def read_config(path: str) -> dict:
    """The settings the audit uses, from a training YAML, named as the trainer names them:
    data.train/val/test (relative to the working directory, as the trainer reads them),
    data.format, data.{text,prompt,response,label,messages}_field (or data.fields as a role map),
    data.labels, data.max_length, data.on_error (the trainer's default when absent), the
    rendering settings data.prompt_template/system/chat_template/too_long, model(.path) and
    model.trust_remote_code."""
    import yaml

    cfg = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    data = cfg.get("data") or {}
    out: dict = {k: str(data[k]) for k in ("train", "val", "test") if data.get(k)}
    if isinstance(data.get("train"), list):   # several training files (weights do not matter to the audit)
        out["train"] = [str(f["path"] if isinstance(f, dict) else f) for f in data["train"]]
    for key in ("format", "labels", "max_length", "on_error"):
        if data.get(key) is not None:
            out[key] = data[key]
    fields = dict(data.get("fields") or {})
    for role, key in FIELD_KEYS.items():
        if data.get(key) is not None and not (role == "messages" and data[key] == "messages"):
            fields[role] = data[key]
    if fields:
        out["fields"] = fields
    options = {k: data[k] for k in PIPELINE_KEYS if data.get(k) is not None}
    if options:
        out["options"] = options
    out.setdefault("on_error", _trainer_default("on_error", "skip"))
    model = cfg.get("model")
    if isinstance(model, dict):
        out["trust_remote_code"] = model.get("trust_remote_code") is True
        model = next((model[k] for k in MODEL_KEYS if model.get(k)), None)
    if model:
        out["model"] = str(model)
    return out


def _trainer_default(key: str, fallback):
    # the trainer's own default keeps audit and training in agreement when the YAML is silent
    field = DataConfig.model_fields.get(key)
    return fallback if field is None else field.default


def _parse_fields(items: list[str]) -> dict[str, str]:
    fields = {}
    for item in items:
        role, sep, column = item.partition("=")
        if not sep or role not in ROLES:
            raise ConfigError(f"--field expects ROLE=COLUMN with ROLE one of {', '.join(ROLES)}; got {item!r}. "
                              "Fix: e.g. --field text=tweet --field label=sentiment")
        fields[role] = column
    return fields


def audit_command(args: argparse.Namespace) -> int:
    conf = read_config(args.config) if args.config else {}
    train = args.data or conf.get("train")
    if not train:
        raise ConfigError("audit needs a data file. Fix: tailorlm audit DATA, or --config with data.train")
    fields = dict(conf.get("fields") or {}) | _parse_fields(args.field)
    labels = args.labels.split(",") if args.labels else conf.get("labels")
    size = args.shingle_size or (2 if args.shingle == "word" else 5)
    try:
        report = run_audit(
            train, args.val or conf.get("val"), args.test or conf.get("test"),
            fmt=args.format or conf.get("format") or "auto", fields=fields or None, labels=labels,
            tokenizer=args.model or conf.get("model"),
            max_length=args.max_length or conf.get("max_length"),
            near_dup_threshold=args.near_dup_threshold,
            on_error=args.on_error or conf.get("on_error") or _trainer_default("on_error", "stop"),
            shingle=args.shingle, shingle_size=size, pipeline_options=conf.get("options"),
            trust_remote_code=conf.get("trust_remote_code", False))
    except ValueError as e:         # bad arguments (unknown format or role): say so, no traceback
        report = AuditReport([Finding(FATAL, "arguments", str(e))])
    if args.redact:
        try:
            counts = redact_file(train, args.redact)
            report.stats["redacted"] = {"file": args.redact, "placeholders": counts}
        except (OSError, ValueError) as e:
            report.findings.append(Finding(FATAL, "redact", f"cannot write {args.redact}: {e}"))
    print(report.summary())
    if args.redact and "redacted" in report.stats:
        print(f"redacted copy: {args.redact} ({report.stats['redacted']['placeholders']})")
    if args.json:
        Path(args.json).write_text(report.to_json(), encoding="utf-8")
        print(f"report: {args.json}")
    return report.exit_code(args.strict)

