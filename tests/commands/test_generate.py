"""`tailorlm generate` and `predict` on an instruction run (issue 27): the prompt is rendered as the
run's training rendered rows (data.prompt_template inside data.system's conversation), `--raw` sends
the bare prompt through the chat template alone, and the answers are the greedy decoding of exactly
those tokens, written out by hand here and decoded without tailorlm."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tailorlm.commands import main
from tailorlm.commands.generate import generate, run_formatter
from tailorlm.eval.predict import prompts
from tailorlm.run import load_run, open_run
from tailorlm.train import train

from ..conftest import real_tweets, tiny_config, write_jsonl
from ..tiny_models import one_thread  # noqa: F401

TEMPLATE = "Reply to this customer as the airline.\n\nCustomer: {text}"
SYSTEM = "You are the airline's support agent."
PROMPT = "@JetBlue thanks, the crew was lovely"


@pytest.fixture(scope="module")
def run(tiny_llama, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("gen")
    rows = [{"prompt": r["text"], "response": f"Thanks, we read your {r['label']} note."} for r in real_tweets(64)]
    out = d / "run"
    train(tiny_config(out, tiny_llama, write_jsonl(d / "i.jsonl", rows), "data.format=instruction",
                      "data.max_length=160", "train.steps=4", "train.eval_every=4", "train.save_every=4",
                      method={"name": "lora", "r": 8, "alpha": 16}, train={"lr": 2e-2},
                      data={"prompt_template": TEMPLATE, "system": SYSTEM}), quiet=True)
    return out


def templated(text: str) -> str:
    """The run's training render of a row's prompt, for the tiny model's ChatML template."""
    return (f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{TEMPLATE.format(text=text)}<|im_end|>\n"
            "<|im_start|>assistant\n")


def bare(text: str) -> str:
    return f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n"


@torch.no_grad()
def greedy(model, tok, text: str, n: int) -> str:
    """n greedy tokens after `text` (tokenized without special tokens: the tiny tokenizer adds no BOS)."""
    ids = tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                         pad_token_id=tok.pad_token_id)
    return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def test_generate_renders_the_runs_template_and_system_and_raw_does_not(run, capsys):
    fm = run_formatter(open_run(run))
    assert prompts(fm, [PROMPT]) == [templated(PROMPT)]   # the rendered text it tokenizes
    _, model, tok = load_run(run)
    model.eval()
    want, want_raw = greedy(model, tok, templated(PROMPT), 8), greedy(model, tok, bare(PROMPT), 8)
    assert want.strip() != want_raw.strip()   # the two prompts lead somewhere different: the test can tell them apart
    assert generate(str(run), PROMPT, 8) == want.strip()
    assert generate(str(run), PROMPT, 8, raw=True) == want_raw
    assert main(["generate", str(run), "--prompt", PROMPT, "--max-new-tokens", "8"]) == 0
    assert capsys.readouterr().out == want.strip() + "\n"
    assert main(["generate", str(run), "--prompt", PROMPT, "--max-new-tokens", "8", "--raw"]) == 0
    assert capsys.readouterr().out == want_raw + "\n"


def test_predict_answers_each_input_after_the_runs_prompt(run, tmp_path, capsys):
    texts = [PROMPT, "What is the capital of France?", "@united my bag never arrived in Denver and nobody calls back"]
    rows = [{"prompt": texts[0], "response": "Glad to hear it!"}, {"text": texts[1]}, {"prompt": texts[2]}]
    rc = main(["predict", str(run), str(write_jsonl(tmp_path / "q.jsonl", rows)), "--max-new-tokens", "6"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    recs = [json.loads(x) for x in out.splitlines()]
    _, model, tok = load_run(run)
    model.eval()
    assert [r["text"] for r in recs] == texts and [r["line"] for r in recs] == [1, 2, 3]
    assert [r["answer"] for r in recs] == [greedy(model, tok, templated(t), 6).strip() for t in texts]
    assert recs[0]["gold"] == "Glad to hear it!" and "gold" not in recs[1] and "label" not in recs[0]
