"""Label scoring with multi-token label words: each prompt runs once and every candidate continues from its
cached keys and values (eval.tasks._shared_prompt_scores), and gives the same scores as one sequence per
(prompt, candidate) pair (`shared=False`), for a plain model, LoRA and bottleneck adapters; methods with
virtual tokens fall back to the pairs."""
from __future__ import annotations

import pytest
import torch

from tailorlm.eval import tasks
from tailorlm.eval.tasks import score_candidates
from tailorlm.methods import METHOD_CONFIGS, METHODS
from tailorlm.models.load import load_model

from ..tiny_models import mixed_tweets, one_thread  # noqa: F401  (fixture)

# label words of 1, 2, 3, 4, 5 and 6 tokens under the tiny 400-token BPE
WORDS = ["late", "a", "negative", "good", "thanks", "not good", "I"]
BATCH = 3   # 5 prompts: chunks of 3 and 2


def prompts_and_cands(tok) -> tuple[list[list[int]], list[list[int]]]:
    texts = [r["text"] for r in mixed_tweets(5)]
    ids = tok(texts, add_special_tokens=False)["input_ids"]
    prompts = [[tok.bos_token_id] + x[:6 + 7 * i] for i, x in enumerate(ids)]   # 7 .. 35 tokens
    cands = [tok(w, add_special_tokens=False)["input_ids"] for w in WORDS]
    assert len({len(p) for p in prompts}) == len(prompts) 
    assert sorted({len(c) for c in cands}) == [1, 2, 3, 4, 5, 6]
    return prompts, cands


def both(model, tok, prompts, cands) -> tuple[torch.Tensor, torch.Tensor]:
    model.eval()
    kw = dict(pad_id=tok.pad_token_id, device="cpu", precision="fp32", batch_size=BATCH)
    return (score_candidates(model, prompts, cands, shared=True, **kw),
            score_candidates(model, prompts, cands, shared=False, **kw))


def perturbed(model, pattern: str):
    """Trainable adapter weights moved off their identity start (LoRA B = 0, bottleneck W_up = 0), so the
    adapter changes the scores."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if pattern in name:
                p.add_(torch.randn(p.shape, generator=g) * 0.3)
    return model


@pytest.mark.parametrize("cache_tokens", [32768, 60])   # 60: one candidate per continuation, a cache copy each
def test_shared_prompt_scores_equal_pair_scores_plain_model(cache_tokens, tiny_llama, one_thread,  # noqa: F811
                                                            monkeypatch):
    monkeypatch.setattr(tasks, "CACHE_TOKENS", cache_tokens)
    model, tok = load_model(str(tiny_llama))
    prompts, cands = prompts_and_cands(tok)
    fast, pairs = both(model, tok, prompts, cands)
    torch.testing.assert_close(fast, pairs, rtol=0, atol=1e-4)
    assert fast.shape == (5, len(WORDS)) and torch.isfinite(fast).all() and fast.std() > 0.1


@pytest.mark.parametrize("name,pattern", [("lora", "lora_B"), ("bottleneck", "adapter.up")])
def test_shared_prompt_scores_equal_pair_scores_with_adapters(name, pattern, tiny_llama, one_thread):  # noqa: F811
    base, tok = load_model(str(tiny_llama))
    prompts, cands = prompts_and_cands(tok)
    plain, _ = both(base, tok, prompts, cands)
    model = perturbed(METHODS[name].apply(base, METHOD_CONFIGS[name]()), pattern)
    fast, pairs = both(model, tok, prompts, cands)
    torch.testing.assert_close(fast, pairs, rtol=0, atol=1e-4)
    assert (fast - plain).abs().max() > 0.05   # the adapter takes part in both forwards


@pytest.mark.parametrize("name", ["prompt", "prefix"])
def test_virtual_token_methods_fall_back_to_pairs(name, tiny_llama, one_thread):  # noqa: F811
    model, tok = load_model(str(tiny_llama))
    model = METHODS[name].apply(model, METHOD_CONFIGS[name](virtual_tokens=4))
    prompts, cands = prompts_and_cands(tok)
    fast, pairs = both(model, tok, prompts, cands)
    torch.testing.assert_close(fast, pairs, rtol=0, atol=1e-5)


def test_each_prompt_runs_once_per_chunk_not_once_per_candidate(tiny_llama, one_thread):  # noqa: F811
    """The embedding layer sees, per chunk, the B left-padded prompts once, then the B x C' continuations
    (C' candidates longer than one token, their tokens 1..n-1): never a prompt per candidate."""
    model, tok = load_model(str(tiny_llama))
    prompts, cands = prompts_and_cands(tok)
    seen = []
    hook = model.get_input_embeddings().register_forward_hook(lambda m, args, out: seen.append(tuple(args[0].shape)))
    try:
        both(model, tok, prompts, cands)
    finally:
        hook.remove()
    longer, rest = sum(len(c) > 1 for c in cands), max(map(len, cands)) - 1
    chunks = [prompts[:BATCH], prompts[BATCH:]]
    want = [s for ch in chunks for s in [(len(ch), max(map(len, ch))), (len(ch) * longer, rest)]]
    assert seen[:len(want)] == want
    prompt_tokens = sum(b * w for b, w in seen[:len(want)][::2])
    pair_tokens = sum(b * w for b, w in seen[len(want):])   # shared=False: every prompt once per candidate
    assert pair_tokens > len(cands) * sum(map(len, prompts)) > 4 * prompt_tokens
