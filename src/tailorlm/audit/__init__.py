"""Data audit: find what would make a fine-tune fail quietly, before it runs.

`run_audit(train, val, test, ...)` reads the files through the training reader and runs one family
of checks per module - parse, schema, quality, dupes, labels, pii, tokens - returning an
`AuditReport` of `Finding`s (severity fatal / warning / info; see `report`) and stats. The
`tailorlm audit` subcommand lives in `tailorlm.commands.audit`.
"""
from .core import load_tokenizer, run_audit
from .report import FATAL, INFO, WARNING, AuditReport, Finding

__all__ = ["run_audit", "load_tokenizer", "AuditReport", "Finding", "FATAL", "WARNING", "INFO"]
