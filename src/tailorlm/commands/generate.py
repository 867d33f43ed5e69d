"""`tailorlm generate RUN --prompt TEXT [--raw] [key=value ...]`: greedy text from a run (or a model).

A run's prompt is rendered as its training rendered a row's (data.prompt_template, data.system, the
chat template: eval.predict.prompts), so a classification run answers with a label word and an
instruction run with an answer; `--raw` sends the bare prompt through the chat template alone, as a
model folder's prompt is. Overrides apply to a run's stored config before its model loads."""
from __future__ import annotations

from pathlib import Path

import torch

from ..errors import ConfigError, MissingError

HELP = "generate text from a run (its prompt template and system message applied)"
EXAMPLES = """examples:
  tailorlm generate runs/my-run --prompt "My bag is lost"
  tailorlm generate runs/my-run --prompt "What is the capital of France?" --raw   no run template
  tailorlm generate runs/my-run --prompt "Hi" model.path=/models/base   a run whose base model has moved
  tailorlm generate smollm2-135m-instruct --prompt "Hi"                 a model folder or embedded name"""


def add_arguments(p) -> None:
    p.add_argument("run", help="a run directory, or a model folder / embedded name")
    p.add_argument("overrides", nargs="*", help="dotted overrides of a run's config, e.g. model.path=/models/base")
    p.add_argument("--prompt", required=True, help="the user text: for a run, rendered as its training rendered "
                   "a row's (data.prompt_template, data.system, chat template)")
    p.add_argument("--raw", action="store_true", help="send the prompt through the chat template only (when the "
                   "tokenizer has one), without the run's prompt template and system message")
    p.add_argument("--max-new-tokens", type=int, default=64, help="stop after this many tokens (default 64; "
                   "greedy decoding)")


def generate_command(a) -> int:
    print(generate(a.run, a.prompt, a.max_new_tokens, a.overrides, raw=a.raw))
    return 0


def load_target(target: str, overrides: list[str] | None = None):
    """(model, tokenizer): a run directory's final model, or a model folder / embedded name."""
    from ..models.defaults import DEFAULT_MODELS
    from ..models.load import load_model
    from ..run import RunDir, open_run

    p = Path(target)
    if RunDir(p).is_run():   # the run's folder, or its final/
        opened = open_run(p, overrides)
        return opened.model, opened.tokenizer
    if target not in DEFAULT_MODELS and not (p / "config.json").is_file():
        what = "is not a run or a model folder" if p.exists() else "does not exist"
        raise MissingError(f"{target} {what}. Fix: name a run directory written by tailorlm train (it holds "
                           f"config.yaml), a model folder (config.json), or an embedded model "
                           f"({', '.join(DEFAULT_MODELS)})")
    if overrides:
        raise ConfigError(f"{target} is a model, not a run: key=value overrides apply to a run's config. "
                           "Fix: leave them out")
    return load_model(target)


def run_formatter(opened):
    """The Formatter the run trained with: its data format and labels (the stored config, else its
    summary), its data settings, its tokenizer."""
    from ..data.formats import Formatter
    from ..probes.explain import run_format

    fmt, labels = run_format(opened.run.path, opened.cfg)
    return Formatter(fmt, opened.tokenizer, opened.cfg.data, labels)


@torch.no_grad()
def generate(target: str, prompt: str, max_new_tokens: int = 64, overrides: list[str] | None = None,
             raw: bool = False) -> str:
    from ..eval.predict import answers
    from ..run import RunDir, open_run

    if RunDir(Path(target)).is_run() and not raw:
        opened = open_run(target, overrides)
        if opened.cfg.model.task == "sequence_classification":
            raise ConfigError(f"{target} is a classification head: it scores labels, it does not write text. "
                              f"Fix: tailorlm predict {target} --text {prompt!r}")
        opened.on_device()
        return answers(opened.model, run_formatter(opened), [prompt], device=opened.device,
                       max_new_tokens=max_new_tokens)[0]
    model, tok = load_target(target, overrides)
    model.eval()
    if getattr(tok, "chat_template", None):
        text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
    else:
        text = prompt
    enc = tok(text, return_tensors="pt", add_special_tokens=not getattr(tok, "chat_template", None))
    out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
    return tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
