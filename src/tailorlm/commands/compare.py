"""`tailorlm compare CFG... [--methods ...] [--seeds N] [--train-sizes ...]`: the same data, data order
and token budget for every configuration, each an ordinary run; compare.json and compare.html."""
from __future__ import annotations

import sys
from pathlib import Path

HELP = "compare methods (or configs) on the same data and budget, over seeds and training-set sizes"
EXAMPLES = """examples:
  tailorlm compare configs/airline-{full,lora,bottleneck,prompt}.yaml --seeds 2 --steps 40
  tailorlm compare my.yaml --methods lora,bottleneck,prompt full:train.lr=2e-5 prompt:train.lr=3e-2
  tailorlm compare my.yaml --methods lora,full --train-sizes 16,64,256,1024 --dry-run
Run the same command again to resume: finished runs are kept, a stopped one continues."""


def add_arguments(p) -> None:
    p.add_argument("configs", nargs="+", metavar="CFG", help="config files (each a configuration compared), then "
                   "dotted overrides for every run (key=value) or one method's runs (METHOD:key=value)")
    p.add_argument("--methods", help="comma-separated methods each config runs with (its method section "
                   "replaced by the method's defaults where it differs)")
    p.add_argument("--seeds", type=int, default=1, help="seed indices per configuration (train.seed + 0..N-1): "
                   "mean and spread")
    p.add_argument("--train-sizes", help="comma-separated training-set sizes: the first N rows of one shuffle")
    p.add_argument("--steps", type=int, help="train.steps for every run (the same token budget)")
    p.add_argument("--out", help="the comparison folder (default runs/compare-<first config's name>)")
    p.add_argument("--fewshot", type=int, default=4, metavar="K", help="score the base model with K training "
                   "examples in context, the baseline (eval.fewshot where a config leaves it at 0; 0: off)")
    p.add_argument("--metric", default="auto", help="the domain metric (auto: macro_f1 for classification "
                   "data, else val_loss; or any metric with a spec: accuracy, mia_auc, ...)")
    p.add_argument("--dry-run", action="store_true", help="list the runs and their overrides; train nothing "
                   "(the --train-sizes subsets are written)")
    p.set_defaults(overrides=[])   # key=value words after an option land here (commands.parse)


def _ints(text: str | None, flag: str) -> list[int] | None:
    from ..errors import ConfigError

    if not text:
        return None
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"{flag} {text!r}: comma-separated integers, e.g. 16,64,256") from None


def compare_command(a) -> int:
    from ..errors import ConfigError
    from ..methods import METHODS
    from ..run.lock import hold

    if a.metric != "auto":   # refused before anything trains: a metric with no spec has no direction
        from ..eval.specs import spec
        spec(a.metric, "--metric")
    files = [c for c in a.configs if "=" not in c]
    overrides = [c for c in a.configs if "=" in c] + list(a.overrides)
    if a.steps:
        overrides += [f"train.steps={a.steps}", "train.epochs=null"]
    methods = [m.strip() for m in a.methods.split(",") if m.strip()] if a.methods else None
    for m in methods or []:
        if m not in METHODS:
            raise ConfigError(f"--methods: unknown method {m!r}; choose from {', '.join(METHODS)}")
    root = Path(a.out or f"runs/compare-{Path(files[0]).stem if files else 'run'}")
    if a.dry_run and not a.train_sizes:   # a listing writes nothing: no lock needed
        return _run(a, files, root, methods, overrides)
    with hold(root, fix=", or another --out"):   # the subsets expand writes, then every run (run_compare)
        return _run(a, files, root, methods, overrides)


def _run(a, files: list[str], root: Path, methods, overrides: list[str]) -> int:
    from ..compare import expand, run_compare

    runs = expand(files, root, methods=methods, seeds=a.seeds, sizes=_ints(a.train_sizes, "--train-sizes"),
                  overrides=overrides, fewshot=a.fewshot)
    if a.dry_run:
        for r in runs:
            print(f"{r.name}\t{r.config} {' '.join(r.overrides)} output.dir={root / 'runs' / r.name}")
        return 0
    from ..compare.table import collapse_warnings

    out = run_compare(runs, root, metric=a.metric, say=lambda s: print(s, file=sys.stderr, flush=True))
    print(summary_table(out))
    per_class = per_class_table(out)
    if per_class:
        print("\nper-class F1 of the tuned model (base in brackets), mean over seeds:\n" + per_class)
    for line in collapse_warnings(out):
        print(line)
    print(f"compare.json and compare.html in {root}")
    return 0


def summary_table(out: dict) -> str:
    """The groups as a markdown table (mean ± sd over seeds)."""
    def cell(s, f="{:.4f}"):
        return "-" if not s else f.format(s["mean"]) + (f" ± {f.format(s['sd'])}" if s["sd"] is not None else "")

    lines = [f"| configuration | size | {out['metric']} | gain | gain over few-shot | NLL change | KL | trainable | "
             "on disk MB | peak RSS GiB | wall s | tokens/s | latency ms | merged ms | vs best |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for g in out["groups"]:
        vb = g.get("vs_best") or {}
        flag = "best" if vb.get("best") == g["label"] else ("within seed spread" if vb.get("within_spread") else "")
        mb = lambda s, u: "-" if not s else f"{s['mean'] / u:.2f}"  # noqa: E731
        name = g["label"] + (f" (COLLAPSED: {_collapsed_text(g)})" if g.get("collapsed") else "")
        lines.append(f"| {name} | {g['size'] or 'all'} | {cell(g['tuned'])} | {cell(g['gain'])} | "
                     f"{cell(g['gain_fewshot'])} | {cell(g['ref_nll_change'])} | {cell(g['kl_to_base'])} | "
                     f"{int(g['trainable_params']['mean']):,} | {mb(g['artifact_bytes'], 1e6)} | "
                     f"{mb(g['peak_rss_bytes'], 2**30)} | {cell(g['wall_time_s'], '{:.0f}')} | "
                     f"{cell(g['tokens_per_s'], '{:.0f}')} | {cell(g['latency_ms'], '{:.1f}')} | "
                     f"{cell(g['latency_merged_ms'], '{:.1f}')} | {flag} |")
    return "\n".join(lines)


def _collapsed_text(g: dict) -> str:
    """'always negative' (one seed), 'always negative in 1 of 2 seeds'."""
    labels = sorted(set(g["collapsed"].values()))
    seeds = "" if len(g["collapsed"]) == g["seeds"] == 1 else f" in {len(g['collapsed'])} of {g['seeds']} seeds"
    return "always " + "/".join(labels) + seeds


def per_class_table(out: dict) -> str:
    """Per-class F1 per configuration (classification runs: the scores carry per_class); '' otherwise."""
    groups = [g for g in out["groups"] if g.get("per_class_f1")]
    labels = list(dict.fromkeys(lab for g in groups for lab in g["per_class_f1"]))
    if not labels:
        return ""
    f = lambda s: "-" if not s else f"{s['mean']:.3f}"  # noqa: E731
    lines = ["| configuration | size | " + " | ".join(labels) + " |", "|---|---:|" + "---:|" * len(labels)]
    for g in groups:
        base = g.get("base_per_class_f1") or {}
        lines.append(f"| {g['label']} | {g['size'] or 'all'} | "
                     + " | ".join(f"{f(g['per_class_f1'].get(lab))} ({f(base.get(lab))})" for lab in labels) + " |")
    return "\n".join(lines)
