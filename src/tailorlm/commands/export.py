"""`tailorlm export RUN --merge | --adapter --out DIR`: parity-checked exports (export/merge.py) that carry
their use: tailorlm.json (prompt template, system message, label words) and a README.md with a snippet."""
from __future__ import annotations

import json
import sys

HELP = "write a run as a merged Hugging Face folder or an adapter, parity-checked, with how to use it"


def add_arguments(p) -> None:
    p.add_argument("run", help="a run directory (exports its final/)")
    p.add_argument("overrides", nargs="*", help="dotted overrides of the run's config, e.g. model.path=/models/base")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--merge", action="store_true", help="one Hugging Face folder, method folded into the weights")
    how.add_argument("--adapter", action="store_true", help="the method's adapter (PEFT's format for PEFT methods)")
    p.add_argument("--or-adapter", action="store_true", help="with --merge: write the adapter where the method "
                   "cannot merge (bottleneck, prompt, prefix) instead of failing")
    p.add_argument("--out", required=True, help="the folder to write")
    p.add_argument("--atol", type=float, default=None, help="parity tolerance on logits (default 1e-3; 5e-2 for bf16)")
    p.add_argument("--prompts", type=int, default=4, help="held-out prompts the parity check runs")
    p.add_argument("--overwrite", action="store_true", help="replace an export tailorlm wrote there (never "
                   "anything else)")


def export_command(a) -> int:
    from ..export import ParityError, export

    try:
        rep = export(a.run, a.out, "merge" if a.merge else "adapter", atol=a.atol, n_prompts=a.prompts,
                     overwrite=a.overwrite, overrides=a.overrides, fallback=a.or_adapter)
    except ParityError as e:
        print(f"tailorlm export: parity check failed: {e}", file=sys.stderr)
        return 1
    print(json.dumps(rep, indent=1))
    return 0
