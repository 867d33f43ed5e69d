"""Every method in METHODS, on a tiny random decoder (causal LM) and a tiny random encoder with a new
classification head, through one table (tests/method_cases.py, shared with the plan and export tests):
what trains, what one optimizer step changes, save/reload, merge, and the trainable count against a
formula worked out by hand for each method."""
from __future__ import annotations

import re

import pytest
import torch

from tailorlm.data.tokenize import IGNORE, Example
from tailorlm.methods import METHOD_CONFIGS, METHODS, NotMergeable, count
from tailorlm.models.load import load_model
from tailorlm.forward import LOSSES, batcher, class_logits, lm_logits

from ..method_cases import CASES, N_VIRTUAL
from ..tiny_models import mixed_tweets, one_thread, tiny_bert  # noqa: F401  (fixtures)

LABELS = ["negative", "neutral", "positive"]


def head(c, kind: str) -> int:
    """The new classification head's parameters: Linear(h, 3) with bias on the encoder, none on the decoder."""
    return 0 if kind == "decoder" else c.hidden_size * len(LABELS) + len(LABELS)


# PEFT's prefix path for classification heads asks for a `past_key_values` argument that transformers 5
# calls `cache`; the method says so instead of failing inside PEFT
UNSUPPORTED = {("prefix", "encoder"): "prefix tuning of a classification head"}
HEAD = r"(^|\.)(classifier|score)\."


def test_every_method_has_a_case():
    assert {c.split("+")[0] for c in CASES} == set(METHODS)


# ---------------------------------------------------------------- the tiny models and a batch

def load(kind, tiny_llama, tiny_bert):  # noqa: F811
    if kind == "decoder":
        return load_model(str(tiny_llama))
    return load_model(str(tiny_bert), task="sequence_classification", labels=LABELS)


def task_of(kind: str) -> str:
    return "causal_lm" if kind == "decoder" else "sequence_classification"


def examples(tok, kind: str, n: int = 6) -> list[Example]:
    rows = mixed_tweets(n)
    ids = [x[:32] for x in tok([r["text"] for r in rows], add_special_tokens=False)["input_ids"]]
    if kind == "decoder":
        return [Example(x, [IGNORE] * 4 + x[4:], "t", i, i) for i, x in enumerate(ids)]
    return [Example(x, [LABELS.index(r["label"])], "t", i, i) for i, (x, r) in enumerate(zip(ids, rows))]


def make_batch(model, tok, kind: str):
    return batcher(model, task=task_of(kind), pad_id=tok.pad_token_id, packing=True,
                   row_tokens=64)(examples(tok, kind))


@torch.no_grad()
def logits(model, batch, kind: str) -> torch.Tensor:
    model.eval()
    if kind == "decoder":
        return lm_logits(model, batch, torch.arange(batch.input_ids.shape[1]))
    return class_logits(model, batch)


# ---------------------------------------------------------------- the table

@pytest.mark.parametrize("kind", ["decoder", "encoder"])
@pytest.mark.parametrize("case", list(CASES))
def test_method(case, kind, tiny_llama, tiny_bert, tmp_path):  # noqa: F811
    raw, own, formula = CASES[case].config, CASES[case].own, CASES[case].formula
    name = raw["name"]
    m, cfg = METHODS[name], METHOD_CONFIGS[name].model_validate(raw)
    base, tok = load(kind, tiny_llama, tiny_bert)
    if (name, kind) in UNSUPPORTED:
        with pytest.raises(ValueError, match=UNSUPPORTED[name, kind]):
            m.apply(base, cfg)
        return
    n_total = count(base)[1]
    model = m.apply(base, cfg)

    # only the method's own parameters, and a classification head, train; as many as the formula says
    train_names = [n for n, p in model.named_parameters() if p.requires_grad]
    strays = [n for n in train_names if not (re.search(own, n) or (kind == "encoder" and re.search(HEAD, n)))]
    assert train_names and not strays, strays[:5]
    c = base.config
    want = n_total if formula is None else formula(c, kind) + head(c, kind)
    assert count(model)[0] == want

    # two optimizer steps (a zero-initialised factor gives its partner no gradient on the first) change
    # every trainable tensor and nothing else
    batch = make_batch(model, tok, kind)
    if case in ("prompt", "prefix"):
        assert batch.attention_mask is not None and batch.input_ids.shape[0] == len(batch.ids)  # a row each
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):
        s, n = LOSSES[task_of(kind)](model, batch)
        (s / n).backward()
        opt.step()
        opt.zero_grad()
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]) != p.requires_grad, f"{n} (trainable={p.requires_grad})"

    # switched off (the retention probe's and distillation's base): the base model's function again
    fresh, _ = load(kind, tiny_llama, tiny_bert)
    off = METHODS[name].disabled(model)
    assert (off is None) == (name == "full")
    if off is not None and kind == "decoder":                     # (an encoder's new head has no base)
        with off:
            got = logits(model, batch, kind)
        real = batch.attention_mask.bool() if batch.attention_mask is not None else slice(None)
        torch.testing.assert_close(got[real], logits(fresh, batch, kind)[real], rtol=0, atol=1e-5)

    # save, then reload onto a fresh base model: the same logits
    ref = logits(model, batch, kind)
    m.save(model, tok, tmp_path / "art")
    torch.testing.assert_close(logits(m.load(fresh, tmp_path / "art"), batch, kind), ref, rtol=0, atol=1e-6)

    # merge where the method allows: a plain model with the same logits
    if not CASES[case].mergeable:   # (prompt, prefix, bottleneck)
        with pytest.raises(NotMergeable):
            m.merge(model)
        return
    merged = m.merge(model)
    assert not any("lora" in n or "hada" in n or "ia3" in n or "modules_to_save" in n
                   for n, _ in merged.named_parameters())
    assert type(merged).__name__ == type(fresh).__name__.replace("Peft", "")
    torch.testing.assert_close(logits(merged, batch, kind), ref, rtol=0, atol=1e-4)


@pytest.mark.parametrize("kind", ["decoder", "encoder"])
def test_bottleneck_starts_as_the_exact_identity(kind, tiny_llama, tiny_bert):  # noqa: F811
    base, tok = load(kind, tiny_llama, tiny_bert)
    batch = make_batch(base, tok, kind)
    want = logits(base, batch, kind)
    for placement in ("houlsby", "pfeiffer"):
        cfg = METHOD_CONFIGS["bottleneck"](placement=placement, reduction_factor=4)
        fresh, _ = load(kind, tiny_llama, tiny_bert)
        if kind == "encoder":
            fresh.load_state_dict(base.state_dict())   # the same random head
        model = METHODS["bottleneck"].apply(fresh, cfg)
        assert torch.equal(logits(model, batch, kind), want)


def test_bottleneck_placement_layers_and_size(tiny_llama):
    model, _ = load_model(str(tiny_llama))
    cfg = METHOD_CONFIGS["bottleneck"](placement="pfeiffer", bottleneck_dim=5, layers=1, activation="gelu")
    METHODS["bottleneck"].apply(model, cfg)
    names = {n.rsplit(".adapter.", 1)[0] for n, p in model.named_parameters() if p.requires_grad}
    assert names == {"model.layers.1.mlp.down_proj"}                  # after the MLP, top layer only
    assert model.model.layers[1].mlp.down_proj.adapter.down.out_features == 5


# ---------------------------------------------------------------- virtual tokens: rows, logits, scores

def _peft_nll_sum(model, ids: list[int], labels: list[int]) -> float:
    """PEFT's own loss (it pads the labels of the virtual tokens itself), as a sum over targets."""
    out = model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels]))
    return float(out.loss) * sum(x != IGNORE for x in labels[1:])


@pytest.mark.parametrize("name", ["prompt", "prefix"])
def test_virtual_tokens_loss_matches_peft(name, tiny_llama):
    model, tok = load_model(str(tiny_llama))
    model = METHODS[name].apply(model, METHOD_CONFIGS[name](virtual_tokens=N_VIRTUAL))
    model.eval()
    exs = examples(tok, "decoder", 5)
    batch = make_batch(model, tok, "decoder")
    assert batch.attention_mask is not None                         # padded, one example per row
    with torch.no_grad():
        ours, n = LOSSES["causal_lm"](model, batch)
        theirs = sum(_peft_nll_sum(model, e.input_ids, e.labels) for e in examples(tok, "decoder"))
    assert n == sum(sum(x != IGNORE for x in e.labels[1:]) for e in examples(tok, "decoder"))
    assert abs(float(ours) - theirs) < 1e-3 * max(1.0, theirs), (float(ours), theirs)
    assert len(exs) == 5


@pytest.mark.parametrize("name", ["prompt", "prefix"])
def test_label_scores_with_virtual_tokens_match_peft(name, tiny_llama):
    from tailorlm.eval.tasks import score_candidates

    model, tok = load_model(str(tiny_llama))
    model = METHODS[name].apply(model, METHOD_CONFIGS[name](virtual_tokens=N_VIRTUAL))
    model.eval()
    prompts = [e.input_ids[:12 + 3 * i] for i, e in enumerate(examples(tok, "decoder", 3))]
    for cands in ([[17], [42], [99]], [[17, 18], [42], [99, 7, 3]]):   # one forward per prompt, or per pair
        scores = score_candidates(model, prompts, cands, pad_id=tok.pad_token_id, device="cpu", precision="fp32",
                        batch_size=8)
        with torch.no_grad():
            want = torch.tensor([[-_peft_nll_sum(model, p + c, [IGNORE] * len(p) + c) for c in cands]
                                 for p in prompts])
        torch.testing.assert_close(scores, want, rtol=0, atol=1e-3)


# ---------------------------------------------------------------- configs

def test_method_configs_check_their_keys():
    from tailorlm.config import ConfigError, load_config

    for method, hint in [({"name": "peft", "config": {"peft_type": "LOHA", "rank": 4}}, "rank"),
                         ({"name": "peft", "config": {"peft_type": "NOPE"}}, "peft_type"),
                         ({"name": "prompt", "init": "text"}, "init_text"),
                         ({"name": "bottleneck", "reduction": 4}, "reduction_factor")]:
        with pytest.raises(ConfigError, match=hint):
            load_config(raw={"data": {"train": "x.jsonl"}, "method": method})
    cfg = load_config(raw={"data": {"train": "x.jsonl"}, "method": {"name": "peft", "config": {"peft_type": "loha"}}})
    assert cfg.method.config["peft_type"] == "LOHA"


def test_prefix_from_text_is_the_text_itself_in_the_cache(tiny_llama):
    """init: text makes the prefix the frozen model's keys and values for that text: the tuned model
    on x then computes exactly what the base model computes on text + x."""
    base, tok = load_model(str(tiny_llama))
    text = "My flight was delayed again"
    t = tok(text, add_special_tokens=False)["input_ids"]
    cfg = METHOD_CONFIGS["prefix"](virtual_tokens=len(t), init="text", init_text=text)
    model = METHODS["prefix"].apply(load_model(str(tiny_llama))[0], cfg).eval()
    x = torch.tensor([examples(tok, "decoder", 1)[0].input_ids[:12]])
    with torch.no_grad():
        want = base.eval()(input_ids=torch.cat([torch.tensor([t]), x], 1)).logits[:, len(t):]
        got = model(input_ids=x).logits
    torch.testing.assert_close(got, want, rtol=0, atol=1e-4)


def test_bottleneck_on_gpt2_uses_its_module_map(tiny_tokenizer_dir):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=400, n_embd=32, n_layer=2, n_head=4, n_positions=64))
    x = torch.randint(0, 400, (2, 9))
    want = model.eval()(input_ids=x).logits
    METHODS["bottleneck"].apply(model, METHOD_CONFIGS["bottleneck"](reduction_factor=4))
    assert {n.rsplit(".adapter.", 1)[0] for n, p in model.named_parameters() if p.requires_grad} == {
        f"transformer.h.{i}.{m}.c_proj" for i in range(2) for m in ("attn", "mlp")}
    assert torch.equal(model(input_ids=x).logits, want)
    model(input_ids=x, labels=x).loss.backward()
    assert model.transformer.h[1].mlp.c_proj.adapter.up.weight.grad.abs().sum() > 0


def test_methods_command_counts_on_a_model(tiny_llama, capsys):
    from tailorlm.commands import main

    assert main(["methods", "--model", str(tiny_llama)]) == 0
    out = capsys.readouterr().out
    model, _ = load_model(str(tiny_llama))
    lines = {ln.split()[0]: ln for ln in out.splitlines()[1:] if ln.strip()}
    assert set(lines) == set(METHODS)
    n_prompt = 20 * model.config.hidden_size                       # prompt tuning's default: 20 virtual tokens
    assert f"{n_prompt:,}" in lines["prompt"] and f"{count(model)[1]:,}" in lines["full"]


def test_layout_follows_peft_disable_adapter(tiny_llama):
    """Retention probes compare with the base function through PEFT's disable_adapter(): then nothing
    is prepended and the logits must be read without an offset."""
    from tailorlm.methods import sequence_layout as layout

    model, tok = load_model(str(tiny_llama))
    base, _ = load_model(str(tiny_llama))
    model = METHODS["prompt"].apply(model, METHOD_CONFIGS["prompt"](virtual_tokens=N_VIRTUAL))
    batch = make_batch(model, tok, "decoder")                      # padded: a row per example
    assert layout(model).logit_offset == N_VIRTUAL
    with model.disable_adapter():
        assert layout(model).logit_offset == 0
        off = logits(model, batch, "decoder")
    real = batch.attention_mask.bool()
    torch.testing.assert_close(off[real], logits(base, batch, "decoder")[real], rtol=0, atol=1e-5)
