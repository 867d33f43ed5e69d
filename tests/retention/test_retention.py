"""Metrics and regularisers against hand-computed values; the guards on real (tiny) training runs."""
import math

import pytest
import torch
from safetensors.torch import load_file

from tailorlm.eval.tasks import macro_f1
from tailorlm.eval.text_metrics import exact_match, generation_scores, rouge_l, token_f1
from tailorlm.retention import regularizers as reg
from tailorlm.train.select import Guard
from tailorlm.retention.probe import kl_divergence
from tailorlm.train.log import read_metrics
from tailorlm.train.loop import train

from ..conftest import tiny_config


# ---------------------------------------------------------------- metrics, by hand
def test_text_metrics_by_hand():
    assert exact_match("The Paris.", "paris") == 1.0 and exact_match("Paris, France", "Paris") == 0.0
    # pred "cat sat on mat" vs gold "the cat sat": common {cat, sat} = 2; P = 2/4, R = 2/2 -> F1 = 2/3
    assert token_f1("cat sat on mat", "the cat sat") == pytest.approx(2 / 3)
    # LCS("a b c d e", "a c e f") = "a c e" = 3 (articles: 'a' is dropped by normalisation, so use x)
    assert rouge_l("x b c d e", "x c e f") == pytest.approx(2 * (3 / 5) * (3 / 4) / (3 / 5 + 3 / 4))
    s = generation_scores(["yes", "no"], ["yes", "maybe"])
    assert s == {"exact_match": 0.5, "token_f1": 0.5, "rouge_l": 0.5}


def test_macro_f1_by_hand():
    gold = ["a", "a", "b", "c"]
    pred = ["a", "b", "b", "b"]
    # a: tp1 fp0 fn1 -> 2/3; b: tp1 fp2 fn0 -> 2/4; c: tp0 -> 0
    assert macro_f1(gold, pred, ["a", "b", "c"]) == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)


def test_kl_by_hand():
    base = torch.tensor([[0.5, 0.5]]).log()
    tuned = torch.tensor([[0.25, 0.75]]).log()
    want = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert kl_divergence(base, tuned) == pytest.approx(want, rel=1e-6)
    assert kl_divergence(base, base) == pytest.approx(0.0, abs=1e-7)


# ---------------------------------------------------------------- regularisers: value and gradient
def test_l2sp_and_ewc_values_and_gradients_by_hand():
    p = {"w": torch.nn.Parameter(torch.tensor([1.0, 2.0]))}
    anchor = {"w": torch.tensor([0.0, 1.0])}
    v = reg.l2sp(p, anchor, weight=0.5)
    v.backward()
    assert float(v) == pytest.approx(0.5 * (1 + 1)) and p["w"].grad.tolist() == pytest.approx([1.0, 1.0])
    p["w"].grad = None
    fisher = {"w": torch.tensor([2.0, 0.5])}
    v = reg.ewc(p, anchor, fisher, weight=0.1)
    v.backward()
    assert float(v) == pytest.approx(0.1 * (2 * 1 + 0.5 * 1))
    assert p["w"].grad.tolist() == pytest.approx([0.1 * 2 * 2 * 1, 0.1 * 2 * 0.5 * 1])


def test_distill_value_and_gradient_match_the_formula(tiny_llama):
    from transformers import AutoModelForCausalLM

    from tailorlm.data.batching import collate
    from tailorlm.data.tokenize import Example

    base = AutoModelForCausalLM.from_pretrained(tiny_llama)
    tuned = AutoModelForCausalLM.from_pretrained(tiny_llama)
    with torch.no_grad():
        tuned.lm_head.weight.mul_(1.5) if not tuned.config.tie_word_embeddings else tuned.model.norm.weight.mul_(1.5)
    b = collate([Example([5, 6, 7, 8], [5, 6, 7, 8], "", 0, 0)], 0)
    v = reg.distill(tuned, base, b, weight=2.0, temperature=1.0)
    with torch.no_grad():
        lp_b = base(input_ids=b.input_ids).logits[0, :3].log_softmax(-1)
    lp_t = tuned(input_ids=b.input_ids).logits[0, :3].log_softmax(-1)
    want = 2.0 * (lp_b.exp() * (lp_b - lp_t)).sum(-1).mean()
    assert float(v) == pytest.approx(float(want), rel=1e-5)
    g1 = torch.autograd.grad(v, tuned.model.norm.weight)[0]
    g2 = torch.autograd.grad(want, tuned.model.norm.weight)[0]
    assert torch.allclose(g1, g2, rtol=1e-4, atol=1e-7)


def test_scores_are_shown_as_deltas_from_the_base():
    from tailorlm.eval.metrics import deltas, format_scores

    base = {"accuracy": 0.6, "val_loss": 3.0, "majority": 0.67, "ref_nll": 2.5}
    now = {"accuracy": 0.85, "val_loss": 0.5, "majority": 0.67, "ref_nll": 2.75, "ref_nll_change": 0.25,
           "kl_to_base": 0.1, "predicted": {"negative": 3}}
    assert deltas(now, base) == pytest.approx({"accuracy": 0.25, "val_loss": -2.5, "ref_nll": 0.25})
    assert format_scores(now, base) == ("accuracy 0.8500 (+0.2500), val_loss 0.5000 (-2.5000), majority 0.6700, "
                                        "ref_nll 2.7500 (+0.2500), ref_nll_change 0.2500, kl_to_base 0.1000")
    assert format_scores({"val_loss": float("inf")}) == "val_loss inf"


def test_a_file_reference_replays_every_block_the_probe_does_not_use(tiny_llama, tweets_text_file):
    from tailorlm.config import RetentionConfig
    from tailorlm.models.load import load_model
    from tailorlm.retention.reference import read_reference
    from tailorlm.retention.session import Retention

    model, tok = load_model(str(tiny_llama))
    rcfg = RetentionConfig(reference=str(tweets_text_file), samples=8, max_length=16, replay=0.5)
    r = Retention(rcfg, model, tok, device="cpu", precision="fp32", seed=0, batch_size=4)
    every = read_reference(str(tweets_text_file), tok, 16, 10**9)
    key = lambda e: (e.line, tuple(e.input_ids))  # noqa: E731
    probe, replay = {key(e) for e in r.probe.ref}, {key(e) for e in r.replay}
    assert len(probe) == 4 and not probe & replay and probe | replay == {key(e) for e in every}


# ---------------------------------------------------------------- the guard's decisions
def test_guard_picks_best_within_budget_and_stops():
    g = Guard("val_loss", patience=2, max_forgetting=0.5, budget_patience=2)
    assert g.update(10, {"val_loss": 2.0, "ref_nll_change": 0.1}, 3.0).improved
    d = g.update(20, {"val_loss": 1.0, "ref_nll_change": 0.9}, 2.0)   # better, but over budget
    assert not d.improved and g.best_step == 10 and d.stop is None
    d = g.update(30, {"val_loss": 2.5, "ref_nll_change": 0.9}, 1.5)
    assert d.stop.startswith("forgetting budget exceeded") and any("overfitting" in w for w in d.warnings)
    acc = Guard("accuracy", patience=1)
    assert acc.update(1, {"accuracy": 0.5}, None).improved and not acc.update(2, {"accuracy": 0.4}, None).improved


# ---------------------------------------------------------------- on real training runs (tiny model, real text)
RUN = ("method=full", "data.audit=true", "data.val_max=16", "train.steps=16", "train.lr=3e-3", "train.warmup=1",
       "train.eval_every=4", "train.save_every=4", "train.keep_last=10", "eval.max_examples=16",
       "retention.reference=auto", "retention.samples=8", "retention.sample_tokens=24")


def test_more_l2sp_strictly_reduces_forgetting(tiny_llama, tweets_text_file, tmp_path):
    drift, kl = [], []
    for w in (0.0, 30.0):
        s = train(tiny_config(tmp_path / f"l2sp{w}", tiny_llama, tweets_text_file, *RUN, retention={"l2sp": w},
                              eval={"keep_best": False}), quiet=True)
        drift.append(s["final"]["ref_nll_change"])
        kl.append(s["final"]["kl_to_base"])
        assert s["base"]["ref_nll"] > 0 and "kl_to_base" in s["final"]
    assert drift[0] > 0 and drift[1] < drift[0]
    assert kl[0] > 0.1 and kl[1] < kl[0] / 10   # the output distribution stays near the base's too


def test_early_stopping_restores_the_best_checkpoints_weights_exactly(tiny_llama, tweets_text_file, tmp_path):
    from tailorlm.run import load_run

    # min_delta is unreachable, so the first evaluation (step 4) stays best and patience 2 stops at step 12
    s = train(tiny_config(tmp_path / "r", tiny_llama, tweets_text_file, *RUN, eval={"patience": 2, "min_delta": 100.0}),
              quiet=True)
    assert s["best_step"] == 4 and s["steps"] == 12 and s["stopped_early"].startswith("early stopping")
    _, final, _ = load_run(tmp_path / "r")
    at4 = load_file(str(tmp_path / "r" / "checkpoints" / "step-000004" / "trainable.safetensors"))
    at12 = load_file(str(tmp_path / "r" / "checkpoints" / "step-000012" / "trainable.safetensors"))
    got = dict(final.named_parameters())
    assert all(torch.equal(got[k], v) for k, v in at4.items())
    assert not all(torch.equal(got[k], v) for k, v in at12.items())


def test_a_checkpoint_over_the_forgetting_budget_is_never_final(tiny_llama, tweets_text_file, tmp_path):
    from transformers import AutoModelForCausalLM

    from tailorlm.run import load_run

    s = train(tiny_config(tmp_path / "r", tiny_llama, tweets_text_file, *RUN, retention={"max_forgetting": 1e-9},
                          train={"lr": 1e-2}), quiet=True)
    evals = [r for r in read_metrics(tmp_path / "r" / "metrics.jsonl") if "eval" in r]
    assert evals and all(r["eval"]["ref_nll_change"] > 1e-9 and not r["best"] for r in evals)
    assert s["steps"] == 4 and s["stopped_early"].startswith("forgetting budget exceeded")
    _, final, _ = load_run(tmp_path / "r")          # nothing qualified: final/ is the untouched start
    base = AutoModelForCausalLM.from_pretrained(tiny_llama)
    ids = torch.randint(5, 300, (1, 12))
    with torch.no_grad():
        assert torch.equal(final(input_ids=ids).logits, base(input_ids=ids).logits)


def test_fewshot_prompts_put_training_examples_before_the_question(tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    from tailorlm.config import DataConfig
    from tailorlm.data import Formatter

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    fm = Formatter("classification", tok, DataConfig(train="x"), ["neg", "pos"])
    text = fm.prompt_text("is it good?", [("great", "pos"), ("awful", "neg")])
    assert text == ("<|im_start|>user\ngreat<|im_end|>\n<|im_start|>assistant\npos<|im_end|>\n"
                    "<|im_start|>user\nawful<|im_end|>\n<|im_start|>assistant\nneg<|im_end|>\n"
                    "<|im_start|>user\nis it good?<|im_end|>\n<|im_start|>assistant\n")


def test_generation_and_fewshot_baselines_are_reported(tiny_llama, tmp_path):
    from ..conftest import real_tweets, write_jsonl

    rows = real_tweets(120)
    f = write_jsonl(tmp_path / "d.jsonl", [{"prompt": r["text"], "response": r["label"]} for r in rows])
    s = train(tiny_config(tmp_path / "gen", tiny_llama, f, *RUN, data={"format": "instruction"},
                          train={"steps": 2, "eval_every": 2}, eval={"generate": 4, "max_new_tokens": 3},
                          retention={"reference": None}), quiet=True)
    assert {"exact_match", "token_f1", "rouge_l"} <= set(s["final"]) and 0 <= s["final"]["rouge_l"] <= 1
    # (real_tweets(120) are all 'negative': the file is ordered. Shuffled rows have all three labels.)
    from ..tiny_models import mixed_tweets

    cls = [{"text": r["text"], "label": r["label"]} for r in mixed_tweets(200)]
    train_rows, held_rows = cls[:100], cls[100:120]
    c, v = write_jsonl(tmp_path / "c.jsonl", train_rows), write_jsonl(tmp_path / "v.jsonl", held_rows)
    # the random tiny model predicts one label whatever the prompt, so the shots could not change its
    # accuracy; a base briefly tuned on other rows of the task (full fine-tuning: final/ is a plain model
    # folder) answers according to its context
    pre = write_jsonl(tmp_path / "pre.jsonl", cls[120:])
    # (max_length 512: no prompt is cut, so the recomputation below renders the whole tweet as the run does)
    train(tiny_config(tmp_path / "pre", tiny_llama, pre, *RUN, data={"format": "classification", "max_length": 512},
                      train={"steps": 10, "eval_every": 10}, eval={"keep_best": False, "before": False},
                      retention={"reference": None}), quiet=True)
    base_dir = tmp_path / "pre" / "final"
    s = train(tiny_config(tmp_path / "fs", base_dir, c, *RUN,
                          data={"format": "classification", "val": str(v), "max_length": 512,
                                "prompt_template": "{text}"},   # (the bare text: what turn() below renders)
                          train={"steps": 2, "eval_every": 2}, eval={"fewshot": 2}, retention={"reference": None}),
              quiet=True)
    # the base model's zero- and 2-shot accuracy, recomputed: the shots are random.Random(train.seed)
    # .sample(train rows, k), placed before the question as earlier chat turns; each label word is scored
    # by its summed log-probability after the prompt under the base model; the most likely one wins
    import random

    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base_dir)
    base = AutoModelForCausalLM.from_pretrained(base_dir).eval()
    assert tok("a")["input_ids"][:1] != [tok.bos_token_id]        # this tokenizer adds no BOS
    labels = sorted({r["label"] for r in train_rows})
    held = held_rows[:16]                                          # eval.max_examples

    def turn(user, assistant=None):
        t = f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
        return t + f"{assistant}<|im_end|>\n" if assistant is not None else t

    def scores(shots):
        pred = []
        for r in held:
            prompt = tok("".join(turn(x["text"], x["label"]) for x in shots) + turn(r["text"]),
                         add_special_tokens=False)["input_ids"]
            best = None
            for lab in labels:
                cand = tok(lab, add_special_tokens=False)["input_ids"]
                with torch.no_grad():
                    lp = base(input_ids=torch.tensor([prompt + cand])).logits[0].log_softmax(-1)
                score = sum(float(lp[len(prompt) - 1 + i, t]) for i, t in enumerate(cand))
                if best is None or score > best[0]:
                    best = (score, lab)
            pred.append(best[1])
        gold = [r["label"] for r in held]
        acc = sum(p == g for p, g in zip(pred, gold)) / len(gold)
        f1 = []
        for lab in labels:
            tp = sum(p == g == lab for p, g in zip(pred, gold))
            fp = sum(p == lab != g for p, g in zip(pred, gold))
            fn = sum(g == lab != p for p, g in zip(pred, gold))
            f1.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
        return acc, sum(f1) / len(f1), pred

    acc0, f10, pred0 = scores([])
    acc2, f12, pred2 = scores(random.Random(0).sample(train_rows, 2))
    assert len(set(pred0)) > 1 and pred2 != pred0       # the prompt matters, so these numbers pin the shots
    assert s["base"]["accuracy"] == pytest.approx(acc0) and s["base"]["macro_f1"] == pytest.approx(f10)
    assert s["base"]["fewshot2_accuracy"] == pytest.approx(acc2)
    assert s["base"]["fewshot2_macro_f1"] == pytest.approx(f12)
