"""`tailorlm predict` (issue 27): a run's prediction per input row, rendered as its training rendered
rows. On tiny trained classifiers, a language model's and a head's, each row's label must be the one
evaluation's label scoring picks (argmax), and its probabilities the softmax computed here, apart
from tailorlm, from the model's own logits on the prompt written out by hand."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tailorlm.commands import main
from tailorlm.data.formats import Formatter
from tailorlm.data.tokenize import bos_prefix
from tailorlm.eval.tasks import label_scores
from tailorlm.run import load_run
from tailorlm.train import train

from ..conftest import tiny_config, write_jsonl
from ..tiny_models import CLS_RUN, mixed_tweets, one_thread, tiny_bert, tweets_cls_file  # noqa: F401

TEMPLATE = "Sentiment of this tweet?\n\n{text}"
SYSTEM = "You classify airline tweets."
LABELS = {"negative", "neutral", "positive"}


def cli(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def lm_run(tiny_llama, tweets_cls_file, tmp_path_factory) -> Path:
    """A LoRA classifier (label words scored by the language model) with its own template and system."""
    out = tmp_path_factory.mktemp("predict") / "run"
    train(tiny_config(out, tiny_llama, tweets_cls_file, *CLS_RUN, method={"name": "lora", "r": 8, "alpha": 16},
                      train={"lr": 2e-2}, data={"prompt_template": TEMPLATE, "system": SYSTEM, "max_length": 192}),
          quiet=True)
    return out


def by_hand(text: str) -> str:
    """The prompt as training renders a classification row for the tiny model's ChatML template."""
    return (f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{TEMPLATE.format(text=text)}<|im_end|>\n"
            "<|im_start|>assistant\n")


@torch.no_grad()
def softmax_by_hand(model, tok, text: str, labels: list[str]) -> list[float]:
    """softmax over labels of sum_t log p(label token t | prompt, earlier label tokens), one full forward
    of prompt + label per label, no batching and no tailorlm code."""
    ids = bos_prefix(tok) + tok(by_hand(text), add_special_tokens=False)["input_ids"]
    totals = []
    for lab in labels:
        lab_ids = tok(lab, add_special_tokens=False)["input_ids"]
        lp = model(input_ids=torch.tensor([ids + lab_ids])).logits[0].float().log_softmax(-1)
        totals.append(sum(lp[len(ids) - 1 + k, t].item() for k, t in enumerate(lab_ids)))
    return torch.tensor(totals).softmax(-1).tolist()


def test_predict_gives_evals_label_and_the_softmax_of_the_models_label_scores(lm_run, tmp_path, capsys):
    rows = mixed_tweets(16, seed=11)
    rows[3] = {"text": rows[3]["text"]}                 # no label: predicted all the same
    rows[5] = {**rows[5], "text": rows[5]["text"] * 6}   # over-long: cut as eval cuts it
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    rc, out, err = cli(capsys, "predict", lm_run, src, "--out", tmp_path / "p.jsonl")
    assert rc == 0, err
    recs = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert len(recs) == len(rows) and [r["line"] for r in recs] == list(range(1, len(rows) + 1))
    labels = list(recs[0]["probabilities"])
    assert set(labels) == LABELS and all(list(r["probabilities"]) == labels for r in recs)

    cfg, model, tok = load_run(lm_run)
    model.eval()
    fm = Formatter("classification", tok, cfg.data, labels)
    scored = [{**r, "label": r.get("label", labels[0])} for r in rows]
    _, scores = label_scores(model, fm, scored, device="cpu", precision="fp32")
    assert [r["label"] for r in recs] == [labels[i] for i in scores.argmax(1).tolist()]   # eval's argmax
    assert "gold" not in recs[3] and recs[0]["gold"] == rows[0]["label"]   # a row's label echoed, never read
    budget = cfg.data.max_length - max(len(tok(lab, add_special_tokens=False)["input_ids"]) for lab in labels)
    checked = 0
    for row, rec in zip(rows, recs):
        p = rec["probabilities"]
        assert sum(p.values()) == pytest.approx(1.0, abs=1e-6) and rec["probability"] == max(p.values())
        assert rec["probability"] == p[rec["label"]] and rec["text"] == row["text"]
        if len(tok(by_hand(row["text"]), add_special_tokens=False)["input_ids"]) <= budget:   # not cut
            assert list(p.values()) == pytest.approx(softmax_by_hand(model, tok, row["text"], labels), abs=1e-4)
            checked += 1
    assert checked == len(rows) - 1   # all but the over-long row
    spread = [max(r["probabilities"].values()) - min(r["probabilities"].values()) for r in recs]
    assert max(spread) > 1e-3   # the scores differ between labels: the check above compares something


def test_text_inputs_give_the_same_records_as_a_file(lm_run, tmp_path, capsys):
    texts = [r["text"] for r in mixed_tweets(3, seed=4)]
    rc, out, err = cli(capsys, "predict", lm_run, "--text", texts[0], "--text", texts[1], "--text", texts[2])
    assert rc == 0, err
    recs = [json.loads(x) for x in out.splitlines()]
    rc, out2, err = cli(capsys, "predict", lm_run, write_jsonl(tmp_path / "t.jsonl", [{"text": t} for t in texts]))
    assert rc == 0, err
    from_file = [json.loads(x) for x in out2.splitlines()]
    assert [r["text"] for r in recs] == texts and all("line" not in r for r in recs)
    for a, b in zip(recs, from_file):
        assert a["label"] == b["label"] and a["probabilities"] == pytest.approx(b["probabilities"], abs=1e-5)
    cfg, model, tok = load_run(lm_run)
    model.eval()
    assert list(recs[1]["probabilities"].values()) == pytest.approx(
        softmax_by_hand(model, tok, texts[1], list(recs[1]["probabilities"])), abs=1e-4)


def test_a_bad_input_line_is_named_by_file_and_line(lm_run, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n\n{"text": "unclosed\n')
    rc, _, err = cli(capsys, "predict", lm_run, bad)
    line = err.strip().splitlines()[-1]
    assert rc == 2 and "Traceback" not in err and line.startswith("tailorlm predict: error: ")
    assert f"{bad}:3: bad JSON" in line and "Fix" in line
    nolabel = write_jsonl(tmp_path / "notext.jsonl", [{"text": "fine"}, {"label": "negative", "tweet": "x"}])
    rc, _, err = cli(capsys, "predict", lm_run, nolabel)
    assert rc == 2 and f"{nolabel}:2: no input text" in err and "'text'" in err
    rc, _, err = cli(capsys, "predict", lm_run)
    assert rc == 2 and "--text" in err


def test_a_classification_heads_probabilities_are_its_softmax(tiny_bert, tweets_cls_file,  # noqa: F811
                                                             tmp_path, capsys):
    run = tmp_path / "head"
    train(tiny_config(run, tiny_bert, tweets_cls_file, *CLS_RUN, method={"name": "lora", "r": 4, "alpha": 8},
                      model={"task": "sequence_classification"}, data={"prompt_template": TEMPLATE, "max_length": 200}),
          quiet=True)
    rows = mixed_tweets(6, seed=2)
    rc, out, err = cli(capsys, "predict", run, write_jsonl(tmp_path / "in.jsonl", rows))
    assert rc == 0, err
    recs = [json.loads(x) for x in out.splitlines()]
    cfg, model, tok = load_run(run)
    model.eval()
    assert len(recs) == 6 and list(recs[0]["probabilities"]) == cfg.data.labels
    for row, rec in zip(rows, recs):
        enc = tok(TEMPLATE.format(text=row["text"]), return_tensors="pt")   # [CLS] ... [SEP], as the head trained
        with torch.no_grad():
            p = model(**enc).logits[0].float().softmax(-1).tolist()
        assert list(rec["probabilities"].values()) == pytest.approx(p, abs=1e-5)
        assert rec["label"] == cfg.data.labels[max(range(len(p)), key=p.__getitem__)] and rec["gold"] == row["label"]
