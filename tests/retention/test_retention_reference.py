"""What the retention probe scores and where EWC's Fisher comes from, against hand computations.

- The `auto` reference: only the base model's sampled answer is scored (NLL and KL positions), never
  the chat template or the "Write a short paragraph about ..." instruction, which are given text.
- EWC's diagonal Fisher (Kirkpatrick et al. 2017): F_i = mean over examples n of
  (d log p(y_n | x_n) / d theta_i)^2, one gradient per example, checked against a plain loop here;
  in a single run it is computed on the training data, never on the probe's texts.
"""
from __future__ import annotations

import pytest
import torch

from tailorlm.data.tokenize import IGNORE, Example
from tailorlm.retention import regularizers as reg

from ..tiny_models import one_thread  # noqa: F401  (autouse: one thread per test)


def header_end(tok, ids: list[int]) -> int:
    """Index just past '<|im_start|>assistant\\n' in ids: where the sampled answer starts."""
    head = tok("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
    for i in range(len(ids) - len(head) + 1):
        if ids[i:i + len(head)] == head:
            return i + len(head)
    raise AssertionError("no assistant header")


# ---------------------------------------------------------------- the auto reference
def test_the_auto_reference_scores_only_the_sampled_answer(tiny_llama, tiny_tokenizer_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tailorlm.retention.probe import kl_positions
    from tailorlm.retention.reference import generate_reference

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    ref = generate_reference(model, tok, n=4, new_tokens=12, seed=0, device="cpu")
    assert len(ref) == 4
    for e in ref:
        cut = header_end(tok, e.input_ids)
        text = tok.decode(e.input_ids[:cut])
        # the whole rendered prompt is kept as context (its <|im_end|> too, though it is the pad token)
        assert text.startswith("<|im_start|>user\nWrite a short paragraph about ") and "<|im_end|>" in text
        assert e.labels[:cut] == [IGNORE] * cut                     # template + instruction: never targets
        assert e.labels[cut:] == e.input_ids[cut:] and len(e.input_ids) > cut   # the sampled answer: all targets
        # KL is read at every 8th *answer* token, none in the prompt
        kl = kl_positions([e])[0]
        at = [i for i, t in enumerate(kl.labels) if t != IGNORE]
        assert at == [cut + k for k in range(len(e.input_ids) - cut) if k % 8 == 7]


def test_a_base_model_without_a_chat_template_answers_in_a_new_paragraph(tiny_llama, tiny_tokenizer_dir):
    """No chat template (a base model such as Gemma-3-270M): the instruction ends with a blank line, so the
    sample is a paragraph of its own; run on from the sentence, Gemma wrote loops at 0.1 nats/token."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tailorlm.retention.reference import generate_reference

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    tok.chat_template = None
    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    for e in generate_reference(model, tok, n=2, new_tokens=8, seed=0, device="cpu"):
        cut = next(i for i, t in enumerate(e.labels) if t != IGNORE)
        assert tok.decode(e.input_ids[:cut]).startswith("Write a short paragraph about ")
        assert tok.decode(e.input_ids[:cut]).endswith(".\n\n")


def test_kl_positions_of_a_fully_scored_text_are_every_8th_token():
    from tailorlm.retention.probe import kl_positions

    e = Example(list(range(10, 30)), list(range(10, 30)), "f", 1)
    assert [i for i, t in enumerate(kl_positions([e])[0].labels) if t != IGNORE] == [7, 15]


def test_probe_nll_and_kl_skip_the_prompt(tiny_llama):
    """ref_nll and kl_to_base by hand over the answer positions only; a change confined to the
    prompt's predictions moves neither."""
    from transformers import AutoModelForCausalLM

    from tailorlm.retention.probe import Probe

    base = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    tuned = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    with torch.no_grad():
        tuned.model.norm.weight.mul_(1.7)
    ids = [int(x) for x in torch.randint(5, 300, (30,), generator=torch.Generator().manual_seed(0))]
    cut = 13
    ex = Example(ids, [IGNORE] * cut + ids[cut:], "<base-model samples>", 1)
    probe = Probe([ex], pad_id=0, device="cpu", precision="fp32")
    probe.measure(base)
    got = probe.measure(tuned)
    with torch.no_grad():
        lb = base(input_ids=torch.tensor([ids])).logits[0].log_softmax(-1)     # (T, vocab)
        lt = tuned(input_ids=torch.tensor([ids])).logits[0].log_softmax(-1)
    pos = torch.arange(cut - 1, len(ids) - 1)                                   # positions predicting answers
    tgt = torch.tensor(ids[cut:])
    nll_t = float(-lt[pos].gather(-1, tgt[:, None]).mean())
    nll_b = float(-lb[pos].gather(-1, tgt[:, None]).mean())
    at = [cut - 1 + k for k in range(len(ids) - cut) if k % 8 == 7]             # every 8th answer token
    kl = float((lb[at].exp() * (lb[at] - lt[at])).sum(-1).mean())
    assert got["ref_nll"] == pytest.approx(nll_t, rel=1e-5)
    assert got["ref_nll_change"] == pytest.approx(nll_t - nll_b, rel=1e-4, abs=1e-6)
    assert got["kl_to_base"] == pytest.approx(kl, rel=1e-4)


# ---------------------------------------------------------------- EWC's Fisher
def fisher_loop(model, examples: list[Example]) -> dict[str, torch.Tensor]:
    """mean over examples of (d log p(y|x) / d theta)^2, log p(y|x) = the summed log-probability of the
    example's target tokens: one autograd call per example."""
    params = dict(model.named_parameters())
    acc = {n: torch.zeros_like(p) for n, p in params.items()}
    for e in examples:
        lp = model(input_ids=torch.tensor([e.input_ids])).logits[0, :-1].log_softmax(-1)   # (T-1, vocab)
        tgt = torch.tensor(e.labels[1:])
        keep = tgt != IGNORE
        logp = lp[keep].gather(-1, tgt[keep][:, None]).sum()
        for n, g in zip(params, torch.autograd.grad(logp, list(params.values()), allow_unused=True)):
            if g is not None:
                acc[n] += g ** 2
    return {n: a / len(examples) for n, a in acc.items()}


def test_fisher_is_the_mean_of_per_example_squared_gradients(tiny_llama):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    g = torch.Generator().manual_seed(1)
    exs = []
    for i, n in enumerate((9, 14, 6, 11, 17)):          # uneven lengths; the first 3 tokens are a prompt
        ids = [int(x) for x in torch.randint(5, 300, (n,), generator=g)]
        exs.append(Example(ids, [IGNORE] * 3 + ids[3:], "f", i + 1, i))
    params = dict(model.named_parameters())
    got = reg.fisher_diagonal(model, params, exs, pad_id=0, normalise=False)
    want = fisher_loop(model, exs)
    assert got.keys() == want.keys()
    for n in want:
        assert torch.allclose(got[n], want[n], rtol=1e-4, atol=1e-10), n
    # normalised: the same shape, mean 1 over every entry
    normed = reg.fisher_diagonal(model, params, exs, pad_id=0)
    flat = torch.cat([f.flatten() for f in normed.values()])
    assert float(flat.mean()) == pytest.approx(1.0, rel=1e-5)
    scale = float(torch.cat([f.flatten() for f in want.values()]).mean())
    w = "model.layers.0.mlp.down_proj.weight"
    assert torch.allclose(normed[w], want[w] / scale, rtol=1e-4, atol=1e-8)


def test_fisher_uses_a_bounded_spread_of_examples(tiny_llama):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    exs = [Example([5 + i, 9, 12, 40 + i], [IGNORE, 9, 12, 40 + i], "f", i + 1, i) for i in range(10)]
    w = "model.layers.0.mlp.down_proj.weight"
    got = reg.fisher_diagonal(model, {w: dict(model.named_parameters())[w]}, exs, pad_id=0, normalise=False, limit=4)
    want = fisher_loop(model, [exs[i] for i in (0, 2, 5, 7)])          # reference.spread(10, 4)
    assert torch.allclose(got[w], want[w], rtol=1e-4, atol=1e-10)


def test_a_single_runs_fisher_is_computed_on_the_replay_half_not_the_probe(tiny_llama, tweets_text_file,
                                                                            tmp_path, monkeypatch):
    from tailorlm.config import load_config
    from tailorlm.retention.session import Retention
    from tailorlm.train.loop import train

    seen, sessions = [], []
    orig_fisher, orig_attach = reg.fisher_diagonal, Retention.attach

    def fisher(model, params, examples, **kw):
        seen.append(list(examples))
        return orig_fisher(model, params, examples, **kw)

    def attach(self, *a, **kw):
        sessions.append(self)
        return orig_attach(self, *a, **kw)

    monkeypatch.setattr(reg, "fisher_diagonal", fisher)
    monkeypatch.setattr(Retention, "attach", attach)
    cfg = load_config(raw={
        "model": str(tiny_llama), "method": {"name": "full"}, "output": {"dir": str(tmp_path / "r")},
        "data": {"train": str(tweets_text_file), "format": "text", "max_length": 32, "val_max": 8, "audit": False},
        "train": {"steps": 2, "batch_size": 4, "lr": 1e-3, "warmup": 0, "eval_every": 2, "save_every": 2,
                  "precision": "fp32"},
        "eval": {"max_examples": 8, "before": False}, "retention": {"samples": 8, "sample_tokens": 12, "ewc": 1.0}})
    train(cfg, quiet=True)
    assert len(seen) == 1 and len(sessions) == 1
    used, probe = seen[0], sessions[0].probe.ref
    assert used and used is not probe and used == sessions[0].replay   # the reference's replay half
    probe_ids = {tuple(e.input_ids) for e in probe}
    assert not any(tuple(e.input_ids) in probe_ids for e in used)   # never what forgetting is scored on
