"""`tailorlm explain`: token attributions (Captum) and what tuning changed, on tiny models.

Integrated gradients must be complete (attributions sum to F(x) - F(baseline) within 5%), ablation
scores must be what leaving a token out does to the answer's log-probability (scored by evaluation's
own function), and the diff must see a LoRA's change where it trained (the answer) and none when the
adapter does nothing."""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tailorlm.run import load_run
from tailorlm.config import load_config
from tailorlm.data.formats import Formatter
from tailorlm.eval.tasks import score_candidates
from tailorlm.models.load import load_model
from tailorlm.probes.attribution import attribute, integrated_gradients
from tailorlm.probes.diff import diff
from tailorlm.probes.inputs import render
from tailorlm.train import train

from ..conftest import tiny_config
from ..tiny_models import CLS_RUN, mixed_tweets, one_thread, tweets_cls_file  # noqa: F401

pytest.importorskip("captum")
ROOT = Path(__file__).resolve().parents[2]
LABELS = ["negative", "neutral", "positive"]
TWEET = "@united lost my bag again and nobody could tell me where it is"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def formatter(tok, path: Path) -> Formatter:
    cfg = load_config(raw={"model": {"path": str(path)}, "data": {"train": "x.jsonl", "format": "classification",
                           "prompt_template": "Sentiment of this tweet?\n\n{text}", "system": "You classify."}})
    return Formatter("classification", tok, cfg.data, LABELS)


@pytest.fixture(scope="module")
def bert(tmp_path_factory, tiny_tokenizer_dir) -> Path:
    """A tiny BERT encoder whose weights (and new head) are drawn wide (std 0.5, not 0.02), so that its
    class probabilities depend on the text: at 0.02 a random encoder answers the same for any input."""
    from transformers import BertConfig, BertModel

    out = tmp_path_factory.mktemp("bert")
    vocab = len(json.loads((tiny_tokenizer_dir / "tokenizer.json").read_text())["model"]["vocab"])
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=256, initializer_range=0.5)).save_pretrained(out)
    for f in tiny_tokenizer_dir.iterdir():
        shutil.copy(f, out / f.name)
    return out


def test_integrated_gradients_are_complete_on_a_classification_head(bert):
    model, tok = load_model(str(bert), task="sequence_classification", labels=LABELS)
    model.eval()
    r = render(formatter(tok, bert), "classification", TWEET, encoder=True)
    assert r.ids == tok(r.prompt)["input_ids"] and "".join(r.pieces) == TWEET    # [CLS] ... [SEP], as training frames it
    x = torch.tensor([r.ids])
    with torch.no_grad():
        cls = int(model(input_ids=x).logits.argmax())
        base = x.clone()
        base[0, r.span[0]:r.span[1]] = tok.pad_token_id
        fx, fb = (model(input_ids=t).logits.log_softmax(-1)[0, cls].item() for t in (x, base))
    a = integrated_gradients(model, tok, r, cls, n_steps=256)
    assert len(a.scores) == len(r.pieces)
    assert a.target_logp == pytest.approx(fx, abs=1e-5) and a.baseline_logp == pytest.approx(fb, abs=1e-5)
    assert abs(fx - fb) > 1e-3                                   # something to attribute
    assert sum(a.scores) == pytest.approx(fx - fb, rel=0.05)     # completeness (Sundararajan et al. 2017)
    assert a.delta == pytest.approx(sum(a.scores) - (fx - fb), abs=1e-4)
    print(f"IG head: sum {sum(a.scores):.5f}, F(x)-F(x') {fx - fb:.5f}, delta {a.delta:.2e}")


def test_integrated_gradients_are_complete_on_a_language_models_answer(tiny_llama):
    model, tok = load_model(str(tiny_llama))
    model.eval()
    r = render(formatter(tok, tiny_llama), "classification", TWEET)
    target = tok("negative", add_special_tokens=False)["input_ids"]
    a = integrated_gradients(model, tok, r, target, n_steps=512)
    fx, fb = a.target_logp, a.baseline_logp
    s, e = r.span
    baseline = r.ids[:s] + [tok.pad_token_id] * (e - s) + r.ids[e:]     # the user's tokens padded, the template kept
    scored = score_candidates(model, [r.ids, baseline], [target], pad_id=tok.pad_token_id, device="cpu",
                              precision="fp32", batch_size=2)
    assert (fx, fb) == pytest.approx(scored[:, 0].tolist(), abs=1e-4)   # F is the log p evaluation scores
    assert sum(a.scores) == pytest.approx(fx - fb, rel=0.05) and abs(a.delta) < 0.05 * abs(fx - fb)


def test_ablation_scores_are_what_leaving_a_token_out_does(tiny_llama):
    model, tok = load_model(str(tiny_llama))
    model.eval()
    fm = formatter(tok, tiny_llama)
    r = render(fm, "classification", TWEET)
    target = tok("negative", add_special_tokens=False)["input_ids"]
    a = attribute(model, tok, r, target, "ablation")
    n_user = r.span[1] - r.span[0]
    assert len(a.scores) == len(r.pieces) == n_user and "".join(r.pieces) == TWEET

    def logp(text: str) -> float:   # evaluation's own scoring of the label after the prompt
        ids = render(fm, "classification", text).ids
        return float(score_candidates(model, [ids], [target], pad_id=tok.pad_token_id, device="cpu",
                                      precision="fp32", batch_size=1)[0, 0])
    top = max(range(n_user), key=lambda i: abs(a.scores[i]))
    without = "".join(p for i, p in enumerate(r.pieces) if i != top)
    change = logp(TWEET) - logp(without)
    assert abs(a.scores[top]) > 1e-3 and change == pytest.approx(a.scores[top], abs=1e-3)   # same sign and size
    s = attribute(model, tok, r, target, "shapley", n_samples=3)
    assert sum(s.scores) == pytest.approx(s.target_logp - s.baseline_logp, abs=1e-3)   # Shapley efficiency


@pytest.fixture(scope="module")
def lora_run(tiny_llama, tweets_cls_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("explain") / "run"
    train(tiny_config(out, tiny_llama, tweets_cls_file, *CLS_RUN, method={"name": "lora", "r": 8, "alpha": 16},
                      train={"steps": 8, "lr": 2e-2, "eval_every": 8, "save_every": 8}),
          quiet=True)
    return out


def _rendered(cfg, tok, texts):
    fm = Formatter("classification", tok, cfg.data, LABELS)
    return [render(fm, "classification", t) for t in texts]


def test_the_diff_sees_the_lora_change_where_it_trained(lora_run):
    cfg, model, tok = load_run(lora_run)
    model.eval()
    texts = [r["text"] for r in mixed_tweets(6, seed=3)]
    rendered = _rendered(cfg, tok, texts)
    answers = [tok(lab, add_special_tokens=False)["input_ids"] for lab in ["negative", "neutral", "positive"] * 2]
    ds = diff(model, cfg, tok, rendered, answers, batch_size=4, max_new_tokens=6)
    moved = {"answer": [], "text": []}
    for d, r, a in zip(ds, rendered, answers):
        assert len(d.tokens) == len(r.ids) + len(a) - r.span[0] and d.region.count("answer") == len(a)
        assert min(d.kl) >= 0 and d.ids[-len(a):] == a and d.tokens[:len(r.pieces)] == r.pieces
        for b, t, g in zip(d.logp_base, d.logp_tuned, d.region):
            moved.setdefault(g, []).append(abs(t - b))
    mean = {g: sum(v) / len(v) for g, v in moved.items()}
    print(f"mean |change in log p|: {mean}")
    assert mean["text"] > 0.01 and mean["answer"] > 2 * mean["text"]   # trained on label words only: they moved most
    # the same model with its LoRA made the identity (B = 0): both sides agree
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.zero_()
    for d in diff(model, cfg, tok, rendered, answers, batch_size=4, max_new_tokens=6):
        assert max(d.kl) < 1e-6 and d.logp_base == pytest.approx(d.logp_tuned, abs=1e-5)
        assert not d.greedy_differs


def test_explain_command_writes_the_probe_and_a_page_a_browser_draws(lora_run, tmp_path):
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}"}
    rows = tmp_path / "in.jsonl"
    rows.write_text("".join(json.dumps(r) + "\n" for r in mixed_tweets(3, seed=5)))
    cmd = [sys.executable, "-m", "tailorlm", "explain", str(lora_run), "--file", str(rows), "--method", "ig",
           "--steps", "64", "--attribute", "2", "--out", str(tmp_path / "x.html")]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    print(p.stdout)
    assert "why (ig" in p.stdout and "KL(base || tuned) per token" in p.stdout
    probe = json.loads((lora_run / "probes" / "explain.json").read_text())
    assert [len(it["attribution"]["tuned"]["scores"]) if it["attribution"] else 0 for it in probe["extra"]["inputs"]] \
        == [len(it["pieces"]) for it in probe["extra"]["inputs"][:2]] + [0]
    html = probe["html"]
    for bad in ("<script", "http:", "https:", "src=", "url(", "<link", "@import"):
        assert bad not in html.lower()
    assert html.count("title=") > 20 and "rgba(33,102,172" in html
    bad = subprocess.run([*cmd[:5], "--file", str(tmp_path / "none.jsonl")], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "none.jsonl: no such file" in bad.stderr and len(bad.stderr.splitlines()) == 1
    if CHROMIUM is None:
        pytest.skip("no chromium on this machine (scripts/setup.sh installs it)")
    shot = tmp_path / "explain.png"
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
                    "--window-size=1280,1600", (tmp_path / "x.html").resolve().as_uri()], capture_output=True, timeout=120)
    from PIL import Image

    img = Image.open(shot).convert("RGB").resize((320, 400))
    tinted = sum(1 for r, g, b in img.getdata() if b > r + 40 or r > b + 40)   # the highlighted tokens
    assert tinted > 200
    shutil.copy(shot, "/tmp/tailorlm-explain-screenshot.png")


def test_a_missing_captum_names_the_extra(monkeypatch):
    from tailorlm.errors import MissingError
    from tailorlm.probes.attribution import captum_attr

    monkeypatch.setitem(sys.modules, "captum.attr", None)   # import captum.attr now raises ImportError
    with pytest.raises(MissingError, match=r"pip install 'tailorlm\[explain\]'"):
        captum_attr()


def test_a_classification_head_run_is_explained(bert, tweets_cls_file, tmp_path):
    from tailorlm.probes.explain import explain

    out = tmp_path / "enc"
    train(tiny_config(out, bert, tweets_cls_file, *CLS_RUN, method={"name": "lora", "r": 4, "alpha": 8},
                      model={"task": "sequence_classification"},
                      train={"steps": 4, "eval_every": 4, "save_every": 4}), quiet=True)
    rec = explain(out, [(TWEET, None)], method="shapley", n_samples=2, write=False)
    it = rec["inputs"][0]
    assert it["answer"] in LABELS and sum(it["probs"]["tuned"].values()) == pytest.approx(1.0, abs=1e-5)
    a = it["attribution"]["tuned"]
    assert len(a["scores"]) == len(it["pieces"]) and a["target_logp"] == pytest.approx(
        math.log(it["probs"]["tuned"][it["answer"]]), abs=1e-4)
    assert sum(a["scores"]) == pytest.approx(a["target_logp"] - a["baseline_logp"], abs=1e-4)   # Shapley efficiency
    assert "diff" not in it and "<span" in rec["html"]


def test_a_text_run_explains_its_next_tokens(tiny_llama, tweets_text_file, tmp_path):
    from tailorlm.probes.explain import explain

    train(tiny_config(tmp_path / "t", tiny_llama, tweets_text_file, "data.format=auto", "data.max_length=64",
                      "train.steps=3", "train.log_every=10", "train.eval_every=3", "train.save_every=3",
                      "output.overwrite=true", method={"name": "lora", "r": 4}), quiet=True)
    rec = explain(tmp_path / "t", [("@united my flight was", None)], method="ablation", target_tokens=4)
    it = rec["inputs"][0]
    cfg, model, tok = load_run(tmp_path / "t")
    ids = tok("@united my flight was", add_special_tokens=False)["input_ids"]
    greedy = model.generate(input_ids=torch.tensor([ids]), max_new_tokens=4, do_sample=False)[0, len(ids):].tolist()
    assert it["answer_ids"] == greedy and it["diff"]["region"].count("answer") == 4   # the tuned model's next tokens
    assert it["pieces"] == ["@", "united", " my", " flight", " was"] and len(it["attribution"]["tuned"]["scores"]) == 5
    assert (tmp_path / "t" / "probes" / "explain.json").is_file()


def test_the_captum_floor_has_the_arguments_the_code_passes():
    """attribution.py passes `forward_in_tokens=` to LLMAttribution.attribute, which captum 0.7 and
    0.8 reject (checked on their wheels: the word is absent from captum/attr/_core/llm_attr.py; 0.9.0
    has it), so pyproject's floor must be 0.9 (issue 23; it allowed captum>=0.7)."""
    import inspect
    import re

    from captum.attr import LLMAttribution
    from packaging.version import Version

    text = (Path(__file__).parents[2] / "pyproject.toml").read_text()
    floors = re.findall(r'"captum>=([\d.]+)"', text)
    assert floors and all(Version(f) >= Version("0.9") for f in floors)
    passed = re.findall(r"(\w+)=", re.search(r"llm\.attribute\((.*)\)", (Path(__file__).parents[2] / "src" /
                        "tailorlm" / "probes" / "attribution.py").read_text()).group(1))
    assert set(passed) - {"target", "kw"} <= set(inspect.signature(LLMAttribution.attribute).parameters)
