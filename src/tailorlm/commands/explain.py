"""`tailorlm explain RUN --text TEXT | --file F [--method ablation|shapley|ig] [--out FILE]`: why a
tuned model answers as it does (token attributions, Captum) and what tuning changed on the same text
(log-probabilities and KL, base vs tuned, and greedy outputs). Writes RUN/probes/explain.json (which
`tailorlm report` shows) and an HTML page of highlighted text. The console ends with one verdict
line per figure over the inputs (better / worse / changed / no significant change)."""
from __future__ import annotations

import sys
from pathlib import Path

from ..errors import ConfigError

HELP = "explain a run's predictions: token attributions and what tuning changed"
EXAMPLES = """examples:
  tailorlm explain runs/airline-lora --text "@united lost my bag again"
  tailorlm explain runs/airline-lora --file data/airline/test.jsonl --limit 50 --method shapley
  tailorlm explain runs/my-run --text "The refund policy" --target " is" --method ig
Needs Captum: pip install 'tailorlm[explain]'."""


def add_arguments(p) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", help="one input: the user text, rendered with the run's prompt template")
    src.add_argument("--file", help="inputs: JSONL rows with the run's text (or prompt) field, their label or "
                     "response used as the answer scored; or plain text, one input per line")
    p.add_argument("run", help="a run directory (its final/ model is explained)")
    p.add_argument("overrides", nargs="*", help="dotted overrides of the run's config, e.g. model.path=/models/base")
    p.add_argument("--method", choices=("ablation", "shapley", "ig"), default="ablation",
                   help="ablation: each token left out; shapley: Shapley value sampling; ig: integrated "
                   "gradients on the embeddings (convergence delta reported). Default ablation")
    p.add_argument("--target", help="the answer to explain (default: the tuned model's own answer)")
    p.add_argument("--limit", type=int, default=200, help="at most this many inputs of --file (default 200)")
    p.add_argument("--attribute", type=int, default=5, help="attribute the first N inputs (each costs about "
                   "one forward per token, twice: tuned and base); the diff covers all (default 5)")
    p.add_argument("--steps", type=int, default=128, help="integrated-gradients steps (default 128)")
    p.add_argument("--samples", type=int, default=8, help="Shapley sampling: token orders drawn (default 8)")
    p.add_argument("--out", help="the HTML page (default RUN/explain.html)")


def explain_command(a) -> int:
    from ..probes.attribution import captum_attr
    from ..run.folder import run_dir_of
    from ..run.lock import hold_run

    if a.limit < 1 or a.attribute < 0 or a.steps < 2 or a.samples < 1:
        raise ConfigError("--limit and --samples must be at least 1, --attribute at least 0, --steps at least 2")
    if a.attribute:
        captum_attr()   # a missing extra says so before any model loads
    run_dir = run_dir_of(a.run)
    with hold_run(run_dir):   # it writes RUN/probes/explain.json: not while another process writes the run
        return _explain(a, run_dir)


def _explain(a, run_dir: Path) -> int:
    from ..atomic import write_text
    from ..data.formats import Formatter
    from ..models.load import load_tokenizer, resolve
    from ..probes.explain import explain, run_format
    from ..probes.explain_html import page
    from ..probes.inputs import read_inputs
    from ..probes.verdict import use_color
    from ..run.folder import RunDir

    if a.file:
        cfg = RunDir(run_dir).config(a.overrides)
        fmt, labels = run_format(run_dir, cfg)
        fm = Formatter(fmt, load_tokenizer(resolve(cfg.model.path), cfg.model.trust_remote_code), cfg.data, labels)
        inputs = read_inputs(a.file, fm, fmt, a.limit)
    else:
        inputs = [(a.text, None)]
    rec = explain(run_dir, inputs, method=a.method, target=a.target, overrides=a.overrides, attribute_first=a.attribute,
                  n_steps=a.steps, n_samples=a.samples)
    out = Path(a.out) if a.out else RunDir(run_dir).explain_file
    write_text(out, page(rec))
    print(f"wrote:\n  {rec['path']}\n  {out}\n")
    print(summary_text(rec, color=use_color(sys.stdout)))
    return 0


def summary_text(rec: dict, top: int = 5, color: bool = False) -> str:
    """A few lines per input (the answers, the most attributed words, the biggest shifts), the table
    over the inputs, then one verdict line per row: all within 100 columns, named as the page names
    them (probes/explain_text.py), only `worse` in red."""
    from ..probes.explain_text import LOGP, P_LABELS, answer_text, at_word, interval, merged, shown, target_text
    from ..probes.verdict import finding_line, verdict_block, wrap

    lines = [f"{P_LABELS}: p(label | prompt) renormalised over the labels; {LOGP}: the natural-log "
             "probability of the answer's tokens after the prompt, summed"]
    for n, it in enumerate(rec["inputs"][:10], 1):
        ref = f" (reference {shown(str(it['reference']))!r})" if it.get("reference") is not None else ""
        lines += ["", f"input {n}: {_cut(shown(it['text']), 80)!r}{ref}",
                  f"  tuned: {answer_text(it, 'tuned')}; base: {answer_text(it, 'base')}"]
        a = it.get("attribution")
        if a:
            s = a["tuned"]
            words, scores = merged(it["pieces"], s["scores"])
            order = sorted(range(len(words)), key=lambda i: -abs(scores[i]))[:top]
            delta = f"; IG delta {s['delta']:+.3g}" if s.get("delta") is not None else ""
            lines.append(f"  why ({s['method']}, tuned model; target {target_text(s, rec['task'])}{delta}): "
                         + ", ".join(f"{_cut(words[i].strip(), 20)!r} {scores[i]:+.2f}" for i in order))
        d = it.get("diff")
        if d:
            for sh in d["shifts"][:2]:
                rose, fell = sh["rose"][0], sh["fell"][0]
                lines.append(f"  shift at {at_word(d['tokens'], d['region'], sh['pos'])} (KL {sh['kl']:.2f}): "
                             f"{rose[0]!r} {rose[1]:.2f}->{rose[2]:.2f}, {fell[0]!r} {fell[1]:.2f}->{fell[2]:.2f}")
            if d["greedy_differs"]:
                lines += [f"  greedy, base:  {_cut(shown(d['greedy_base']), 80)!r}",
                          f"  greedy, tuned: {_cut(shown(d['greedy_tuned']), 80)!r}"]
    if len(rec["inputs"]) > 10:
        lines.append(f"... {len(rec['inputs']) - 10} more inputs in the page")
    lines.append("\nover the inputs: base, tuned, change [paired 95% interval of the change]")
    for r in rec["rows"]:
        lines.append(f"  {r['metric']} (n={r['n']}): base {r['base']:.3f}, tuned {r['tuned']:.3f}, "
                     f"change {r['change']:+.3f} {interval(r)}")
    lines += [f"warning: {w}" for w in rec["warnings"]]
    head = "verdicts (better / worse, or changed where no way is better: the 95% interval excludes 0):"
    return wrap("\n".join(lines)) + "\n\n" + verdict_block([finding_line(r, r["up"]) for r in rec["rows"]],
                                                           head, color)


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 3] + "..."
