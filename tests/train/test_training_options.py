"""Sharp edges past the data (issue 14 items 3, 7, 11, 13; issue 13 item 8): long held-out inputs are
scored with their label, generated samples are saved and shown, a classifier collapsed onto the
majority class is warned about and not selected by accuracy, classes can be balanced, epochs instead
of steps, and an empty validation set scores nothing. Tiny models only."""
import json
import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from tailorlm.run import build, load_run
from tailorlm.config import ConfigError, load_config
from tailorlm.data import build_data
from tailorlm.data.batching import Order, collate, collate_classes
from tailorlm.eval import tasks
from tailorlm.eval.evaluators import EvalContext, accuracy_scores
from tailorlm.eval.generate import generation_eval
from tailorlm.forward import class_logits, class_loss_sum, lm_loss_sum
from tailorlm.train import train
from tailorlm.train.select import Guard

from ..conftest import real_tweets, tiny_config, write_jsonl
from ..tiny_models import one_thread, tiny_bert  # noqa: F401  (fixtures: one thread per test, a tiny BERT)


RUN = ("data.format=auto", "data.max_length=64", "data.val_max=6", "train.log_every=10", "eval.max_examples=6",
       "eval.batch_size=4")


def evals(run_dir):
    return [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if "eval" in r]


def skewed_rows(n=40, minority_every=10):
    tweets = real_tweets(n)
    return [{"text": t["text"], "label": "pos" if i % minority_every == 0 else "neg"} for i, t in enumerate(tweets)]


# ------------------------------------------------------------------ item 3: long held-out inputs keep their label

def test_label_accuracy_prompts_fit_max_length_with_the_template_tail(tiny_llama, tmp_path, monkeypatch):
    long_text = " ".join(r["text"] for r in real_tweets(30))
    rows = [{"text": long_text if i % 2 else f"short {i}", "label": "pos" if i % 3 else "neg"} for i in range(12)]
    c = tiny_config(tmp_path / "r", tiny_llama, write_jsonl(tmp_path / "c.jsonl", rows), *RUN,
                    data={"prompt_template": "{text}\nSentiment ({labels})?"})
    model, tok, data = build(c)
    seen = []
    real = tasks.score_candidates

    def spy(model, prompts, cands, **kw):
        seen.extend(prompts)
        return real(model, prompts, cands, **kw)

    monkeypatch.setattr(tasks, "score_candidates", spy)
    out = tasks.label_accuracy(model, data.formatter, rows, device="cpu", precision="fp32")
    assert out["n"] == 12 and len(seen) == 12
    assert all(len(p) + 1 <= 64 for p in seen)                       # prompt + the one-token label fit
    assert all("\nSentiment (neg, pos)?" in tok.decode(p) for p in seen)
    assert sum(long_text[-40:] in tok.decode(p) for p in seen) == 0   # the long texts' ends were cut


# ------------------------------------------------------------------ item 7: samples are saved and shown

def test_generated_samples_are_saved_per_evaluation_and_printed(tiny_llama, tmp_path, capsys):
    rows = [{"prompt": r["text"], "response": "Thanks, we will look into it."} for r in real_tweets(24)]
    out = tmp_path / "run"
    c = tiny_config(out, tiny_llama, write_jsonl(tmp_path / "i.jsonl", rows), *RUN,
                    eval={"generate": 2, "max_new_tokens": 5, "keep_best": False})
    train(c)
    lines = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [0, 0, 2, 2]          # the base model at step 0, then step 2
    assert all(set(x) == {"step", "prompt", "reference", "generated"} for x in lines)
    cfg2, tuned, tok = load_run(out)
    data = build_data(cfg2.data, tok, cfg2.train.seed)
    _, again = generation_eval(tuned, data, data.val_rows[:2], 5, "cpu")
    assert [x["generated"] for x in lines[2:]] == [s["generated"] for s in again]   # what the final model says
    assert [x["reference"] for x in lines] == [r["response"] for r in data.val_rows[:2]] * 2
    err = capsys.readouterr().err
    assert err.count("[tailorlm]   sample: ") == 2 and repr(lines[2]["generated"][:120]) in err


# ------------------------------------------------------------------ item 11: collapse, balance, selection

def test_a_classifier_answering_one_class_is_warned_about_in_scores_and_by_the_guard():
    gold = ["neg"] * 19 + ["pos"]
    rep = tasks.report(gold, ["neg"] * 20, ["neg", "pos"])
    assert rep["accuracy"] == pytest.approx(0.95) and rep["majority"] == pytest.approx(0.95)
    assert "answers 'neg' for all 20 held-out rows" in rep["accuracy_warning"]
    g = Guard("macro_f1")
    d = g.update(10, {k: rep[k] for k in ("accuracy", "macro_f1", "accuracy_warning")}, None)
    assert any("answers 'neg'" in w for w in d.warnings)
    worse = tasks.report(gold, ["neg"] * 17 + ["pos"] * 3, ["neg", "pos"])     # 0.9 accuracy, but both classes
    assert "does not beat" in worse["accuracy_warning"] and worse["macro_f1"] > rep["macro_f1"]
    assert g.update(20, worse, None).improved                        # macro-F1 prefers it; accuracy would not
    assert "accuracy_warning" not in tasks.report(gold, gold, ["neg", "pos"])


def test_the_accuracy_evaluator_passes_a_collapse_on_to_the_guard(tiny_llama, tmp_path, monkeypatch):
    rows = skewed_rows(40, minority_every=5)
    c = tiny_config(tmp_path / "r", tiny_llama, write_jsonl(tmp_path / "s.jsonl", rows), *RUN)
    model, _, data = build(c)
    neg = data.labels.index("neg")
    monkeypatch.setattr(tasks, "score_candidates",   # a model that always prefers 'neg'
                        lambda m, prompts, cands, **kw: torch.nn.functional.one_hot(
                            torch.full((len(prompts),), neg), len(cands)).float())
    scores = accuracy_scores(model, EvalContext(c, data, "cpu"))
    assert scores["predicted"]["pos"] == 0 and scores["accuracy"] == pytest.approx(scores["majority"])
    assert "answers 'neg' for all" in scores["accuracy_warning"]
    assert any("answers 'neg'" in w for w in Guard(c.eval.metric).update(2, scores, None).warnings)


def test_eval_metric_auto_picks_macro_f1_for_classification_and_val_loss_otherwise(tiny_llama, tweets_text_file,
                                                                                  tmp_path):
    c = tiny_config(tmp_path / "cls", tiny_llama, write_jsonl(tmp_path / "s.jsonl", skewed_rows()), *RUN)
    assert c.eval.metric == "auto"
    build(c)
    assert c.eval.metric == "macro_f1"
    t = tiny_config(tmp_path / "txt", tiny_llama, tweets_text_file, *RUN)
    build(t)
    assert t.eval.metric == "val_loss"
    with pytest.raises(ConfigError, match=r"eval.metric macro_f1 is scored by the accuracy evaluator.*auto chose it"):
        tiny_config(tmp_path / "x", tiny_llama, tweets_text_file, *RUN, data={"format": "classification"},
                    eval={"metrics": ["val_loss"]})


def test_balance_sample_draws_classes_equally(tiny_llama, tmp_path):
    c = tiny_config(tmp_path / "r", tiny_llama, write_jsonl(tmp_path / "s.jsonl", skewed_rows(60)), *RUN,
                    data={"balance": "sample"})
    _, _, data = build(c)
    groups = data.groups
    assert groups is not None and groups.count(data.labels.index("pos")) < len(groups) / 5
    order = Order(len(data.train), 1, seed=0, groups=groups)
    drawn = [groups[order.micro_batch(g)[0]] for g in range(len(data.train))]     # one epoch
    counts = [drawn.count(k) for k in sorted(set(groups))]
    assert max(counts) - min(counts) <= 1                   # an epoch draws each class equally
    assert order.micro_batch(70) == Order(len(data.train), 1, seed=0, groups=groups).micro_batch(70)   # resumable


def test_balance_weight_weighs_each_class_equally_in_the_loss(tiny_llama, tiny_bert, tmp_path):
    data_file = write_jsonl(tmp_path / "s.jsonl", skewed_rows(60))
    model, tok, data = build(tiny_config(tmp_path / "r", tiny_llama, data_file, *RUN, data={"balance": "weight"}))
    sums = {}
    for e in data.train:
        sums[e.cls] = sums.get(e.cls, 0.0) + e.weight
    assert len(sums) == 2 and sums[0] == pytest.approx(sums[1]) and sum(sums.values()) == pytest.approx(len(data.train))
    exs = sorted(data.train, key=lambda e: -e.weight)[:2] + data.train[:6]       # both classes in one batch
    with torch.no_grad():
        total, _ = lm_loss_sum(model, collate(exs, tok.pad_token_id, packing=True, row_tokens=64))
        each = [float(lm_loss_sum(model, collate([replace(e, weight=1.0)], tok.pad_token_id, packing=True,
                                                 row_tokens=64))[0]) for e in exs]   # unweighted, one by one
    assert float(total) == pytest.approx(sum(e.weight * x for e, x in zip(exs, each)), rel=1e-4)
    # a classification head: the same weights on the per-example cross-entropy
    c = tiny_config(tmp_path / "b", tiny_bert, data_file, *RUN, data={"balance": "weight"},
                    model={"task": "sequence_classification"})
    model, tok, data = build(c)
    exs = sorted(data.train, key=lambda e: -e.weight)[:2] + data.train[:4]
    batch = collate_classes(exs, tok.pad_token_id)
    with torch.no_grad():
        got, _ = class_loss_sum(model, batch)
        per = F.cross_entropy(class_logits(model, batch).float(), batch.targets, reduction="none")
    assert float(got) == pytest.approx(float((per * torch.tensor([e.weight for e in exs])).sum()), rel=1e-5)
    assert len({e.weight for e in exs}) == 2


def test_balance_and_prompt_auto_follow_the_data_and_are_pinned_into_the_config(tiny_llama, tmp_path):
    """data.balance: auto weighs a skewed label set (here 1 in 10) and leaves an even one alone;
    data.prompt_template: auto names the labels in a classification prompt and is the bare text for
    instruction data. What auto chose is what the run's config records."""
    from tailorlm.data.formats import LABELS_PROMPT
    skewed = tiny_config(tmp_path / "s", tiny_llama, write_jsonl(tmp_path / "s.jsonl", skewed_rows(60)), *RUN,
                         data={"balance": "auto", "prompt_template": "auto"})
    _, _, data = build(skewed)
    assert skewed.data.balance == "weight" and skewed.data.prompt_template == LABELS_PROMPT
    assert {round(e.weight, 3) for e in data.train} == {round(len(data.train) / (2 * n), 3) for n in
                                                        (sum(e.cls == k for e in data.train) for k in (0, 1))}
    assert data.formatter.wrap("a b c") == LABELS_PROMPT.format(text="a b c", labels=", ".join(data.labels))
    even_rows = [{"text": r["text"], "label": "pos" if i % 2 else "neg"} for i, r in enumerate(skewed_rows(60))]
    even = tiny_config(tmp_path / "e", tiny_llama, write_jsonl(tmp_path / "e.jsonl", even_rows), *RUN,
                       data={"balance": "auto"})
    _, _, data = build(even)
    assert even.data.balance == "none" and {e.weight for e in data.train} == {1.0}
    qa = [{"prompt": r["text"], "response": "ok"} for r in skewed_rows(20)]
    inst = tiny_config(tmp_path / "i", tiny_llama, write_jsonl(tmp_path / "i.jsonl", qa), *RUN,
                       data={"balance": "auto", "prompt_template": "auto"})
    build(inst)
    assert inst.data.balance == "none" and inst.data.prompt_template == "{text}"


def test_prompt_auto_leaves_a_classifier_heads_input_the_bare_text(tiny_bert, tmp_path):
    """A classifier head's labels are its outputs, not words it reads: `auto` renders the bare text
    for it (what its config then records), where a language model gets the label-naming prompt."""
    rows = skewed_rows(40)
    head = tiny_config(tmp_path / "h", tiny_bert, write_jsonl(tmp_path / "h.jsonl", rows), *RUN,
                       data={"prompt_template": "auto"}, model={"task": "sequence_classification"})
    _, tok, data = build(head)
    assert head.data.prompt_template == "{text}" and data.formatter.wrap("a b c") == "a b c"
    by_text = [tok(r["text"])["input_ids"] for r in rows]      # (data.max_length may cut one short)
    assert all(any(ids[:len(e.input_ids)] == list(e.input_ids) for ids in by_text) for e in data.train)


# ------------------------------------------------------------------ item 13: epochs instead of steps

def test_epochs_resolve_to_steps_once_the_data_is_known(tiny_llama, tweets_text_file, tmp_path):
    out = tmp_path / "ep"
    c = tiny_config(out, tiny_llama, tweets_text_file, *RUN, data={"limit": 40, "max_length": 32},
                    train={"steps": None, "epochs": 0.5, "batch_size": 4, "grad_accum": 2, "eval_every": 100})
    s = train(c, quiet=True)
    _, _, data = build(load_config(out / "config.yaml"))
    assert s["steps"] == math.ceil(0.5 * len(data.train) / 8)
    stored = load_config(out / "config.yaml")
    assert stored.train.steps == s["steps"] and stored.train.epochs is None
    assert s["data"]["steps_from_epochs"] == {"epochs": 0.5, "examples": len(data.train), "steps": s["steps"]}
    with pytest.raises(ConfigError, match="train.steps and train.epochs are both set"):
        tiny_config(out, tiny_llama, tweets_text_file, *RUN, train={"steps": 3, "epochs": 1})


def test_several_training_files_train_through_the_audit_and_resolve_to_absolute_paths(tiny_llama, tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [{"prompt": f"a {r['text']}", "response": "yes"} for r in real_tweets(12)])
    b = write_jsonl(tmp_path / "b.jsonl", [{"prompt": f"b {i}", "response": "no"} for i in range(6)])
    val = write_jsonl(tmp_path / "v.jsonl", [{"prompt": "v", "response": "maybe"}])
    out = tmp_path / "multi"
    c = tiny_config(out, tiny_llama, a, *RUN,
                    data={"train": [{"path": str(a), "weight": 2}, str(b)], "val": str(val), "audit": True},
                    train={"steps": None, "epochs": 1, "batch_size": 6})
    s = train(c, quiet=True)
    assert s["steps"] == math.ceil((2 * 12 + 6) / 6)          # a's rows twice, b's once: 30 examples
    assert json.loads((out / "audit.json").read_text())["stats"]["rows"]["train"]["rows"] == 18
    stored = load_config(out / "config.yaml")
    assert [t if isinstance(t, str) else t.path for t in stored.data.train] == [str(a), str(b)]


# ------------------------------------------------------------------ issue 13 item 8: no score from no data

def test_an_empty_validation_set_is_not_scored_and_never_best(tiny_llama, tmp_path):
    rows = [{"prompt": f"where is bag {i}", "response": "on its way"} for i in range(16)]
    val = write_jsonl(tmp_path / "v.jsonl", [{"prompt": "lost " * 200, "response": "sorry"}])   # dropped: too long
    out = tmp_path / "run"
    s = train(tiny_config(out, tiny_llama, write_jsonl(tmp_path / "t.jsonl", rows), *RUN,
                          data={"val": str(val), "too_long": "drop"}), quiet=True)
    ev = evals(out)
    assert ev and all("val_loss" not in r["eval"] and not r["best"] for r in ev)
    assert any("no val_loss score" in w for w in ev[0]["warnings"])
    assert s["best_step"] is None and "val_loss" not in s["final"]
