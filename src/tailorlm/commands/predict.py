"""`tailorlm predict RUN FILE | --text TEXT [--out FILE] [key=value ...]`: a run's prediction for each
input, one JSON line each (eval.predict): a classification run's label, its probability and every
label's; any other run's greedy answer. Each input is rendered exactly as the run's training rendered
its rows."""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import ConfigError

HELP = "predict with a run: a label and its probability, or the answer, per input (JSONL)"
EXAMPLES = """examples:
  tailorlm predict runs/my-run data/airline/test.jsonl                  one JSON line per row, to stdout
  tailorlm predict runs/my-run tweets.jsonl --out predictions.jsonl
  tailorlm predict runs/my-run --text "@united lost my bag" --text "thanks, lovely crew"
  tailorlm predict runs/my-run notes.txt model.path=/models/base        plain text: one input per line
Each row gives its text by the run's own field (data.text_field, data.prompt_field) or `text`; a label or
response in the row is not read, only echoed as `gold`."""


def add_arguments(p) -> None:
    p.add_argument("run", help="a run directory (its final/ model predicts)")
    p.add_argument("file", nargs="?", help="inputs: JSONL, CSV or Parquet rows with the run's text field (or "
                   "`text`), or a .txt file with one input per line")
    p.add_argument("overrides", nargs="*", help="dotted overrides of the run's config, e.g. model.path=/models/base")
    p.add_argument("--text", action="append", default=[], help="one input (repeat for more), instead of FILE")
    p.add_argument("--out", help="write the JSON lines here instead of to stdout")
    p.add_argument("--max-new-tokens", type=int, default=None, help="a generating run's answer length (default: "
                   "the run's eval.max_new_tokens); greedy decoding")


def predict_command(a) -> int:
    from ..atomic import write_text

    file, overrides = a.file, list(a.overrides or [])
    if file and "=" in file and not Path(file).exists():   # `predict RUN key=value --text ...`: an override
        file, overrides = None, [file, *overrides]
    if bool(file) == bool(a.text):
        raise ConfigError("give the inputs as FILE or as --text (not both, not neither). Fix: tailorlm predict "
                          f"{a.run} inputs.jsonl, or tailorlm predict {a.run} --text \"...\"")
    if a.max_new_tokens is not None and a.max_new_tokens < 1:
        raise ConfigError(f"--max-new-tokens {a.max_new_tokens}: must be at least 1")
    records = predict_inputs(a.run, file, a.text, overrides, a.max_new_tokens)
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    if a.out:
        write_text(a.out, lines)
        print(f"wrote {len(records)} predictions to {a.out}")
    else:
        print(lines, end="")
    return 0


def predict_inputs(run: str, file: str | None, texts: list[str], overrides: list[str] | None = None,
                   max_new_tokens: int | None = None) -> list[dict]:
    """The run's record for each row of `file`, or for each of `texts` (eval.predict.predict)."""
    from ..errors import MissingError
    from ..eval.predict import predict, read_inputs
    from ..progress import phase
    from ..run import RunDir, open_run
    from .generate import run_formatter

    if not RunDir(Path(run)).is_run():
        raise MissingError(f"{run} is not a run. Fix: name a run directory written by tailorlm train (it holds "
                           "config.yaml)")
    rows = read_inputs(file) if file else [{"text": t} for t in texts]   # a bad file fails before the model loads
    opened = open_run(run, overrides)
    fm, cfg = run_formatter(opened), opened.cfg
    if fm.fmt == "classification" and not fm.labels:
        raise ConfigError(f"{run}: the run's labels are not recorded (no data.labels, no summary.json). Fix: "
                          "data.labels=[...] as an override, in the order the run trained them")
    opened.on_device()
    with phase("prediction"):   # a bar on a terminal for a long file
        return predict(opened.model, fm, rows, task=cfg.model.task, device=opened.device,
                       precision=opened.precision, batch_size=cfg.eval.batch_size,
                       max_new_tokens=max_new_tokens or cfg.eval.max_new_tokens)
