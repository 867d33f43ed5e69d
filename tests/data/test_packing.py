"""Packing is exact: the same loss and gradients as padding, and no token sees another example."""
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer

from tailorlm.config import DataConfig
from tailorlm.data import build_data
from tailorlm.data.batching import Order, collate
from tailorlm.data.tokenize import IGNORE, Example
from tailorlm.forward import lm_loss_sum


def _setup(tiny_llama, tweets_text_file):
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    data = build_data(DataConfig(train=str(tweets_text_file), format="text", max_length=48), tok)
    return tok, data, AutoModelForCausalLM.from_pretrained(tiny_llama, attn_implementation="sdpa")


def test_packed_and_padded_batches_give_the_same_loss_and_gradients(tiny_llama, tweets_text_file):
    tok, data, model = _setup(tiny_llama, tweets_text_file)
    exs = data.train[:6]
    out = {}
    for packing in (True, False):
        model.zero_grad()
        b = collate(exs, tok.pad_token_id, packing=packing, row_tokens=128)
        s, n = lm_loss_sum(model, b)
        (s / n).backward()
        out[packing] = (float(s) / n, torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert collate(exs, tok.pad_token_id, packing=True, row_tokens=128).input_ids.shape[0] < len(exs)
    assert abs(out[True][0] - out[False][0]) <= 1e-4 * abs(out[False][0])
    assert torch.allclose(out[True][1], out[False][1], rtol=1e-4, atol=1e-6)


def test_no_token_attends_across_an_example_boundary(tiny_llama, tweets_text_file):
    """Each example's logits inside a packed row equal its logits alone."""
    tok, data, model = _setup(tiny_llama, tweets_text_file)
    exs = data.train[:3]
    b = collate(exs, tok.pad_token_id, packing=True, row_tokens=1000)
    assert b.input_ids.shape[0] == 1
    with torch.no_grad():
        packed = model(input_ids=b.input_ids, position_ids=b.position_ids, use_cache=False).logits[0]
        for eid, (r, s, n) in zip(b.ids, b.spans):
            alone = model(input_ids=torch.tensor([exs[eid].input_ids])).logits[0]
            assert torch.allclose(packed[s:s + n], alone, atol=1e-5)
    # and the last token of one example is never trained to predict the next example's first token
    for r, s, n in b.spans:
        assert b.targets[r, s + n - 1] == IGNORE


def test_label_only_logits_equal_the_full_cross_entropy(tiny_llama):
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    ex = [Example([5, 6, 7, 8, 9, 10], [IGNORE, IGNORE, IGNORE, 8, 9, 10], "", 0, 0),
          Example([11, 12, 13, 14], [IGNORE, IGNORE, 13, 14], "", 0, 1)]
    b = collate(ex, tok.pad_token_id, packing=False)
    assert b.keep.tolist() == [1, 2, 3, 4]
    with torch.no_grad():
        s, n = lm_loss_sum(model, b)
        logits = model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits
        full = F.cross_entropy(logits.flatten(0, 1), b.targets.flatten(), ignore_index=IGNORE, reduction="sum")
    assert n == 5 and torch.allclose(s, full, rtol=1e-5)


def test_data_order_is_seeded_and_covers_each_example_once_per_epoch():
    o = Order(10, 3, seed=1)
    stream = [i for g in range(10) for i in o.micro_batch(g)]
    assert sorted(stream[:10]) == list(range(10)) and sorted(stream[10:20]) == list(range(10))
    assert stream == [i for g in range(10) for i in Order(10, 3, seed=1).micro_batch(g)]
    assert stream != [i for g in range(10) for i in Order(10, 3, seed=2).micro_batch(g)]
    # two ranks split each global micro-batch between them
    both = Order(10, 3, seed=1)
    assert both.micro_batch(0, 0, 2) + both.micro_batch(0, 1, 2) == stream[:6]


def test_packing_fills_rows_evenly_at_the_least_estimated_cost():
    """Every example once, no row over budget (unless one example is longer), rows even, and the
    layout never costs more (R x W x (1 + W / A)) than the fewest rows that fit."""
    import random

    from tailorlm.data.batching import ATTENTION_TOKENS, _lpt

    def cost(rows, width):
        return rows * width * (1 + width / ATTENTION_TOKENS)

    rng = random.Random(0)
    for trial in range(200):
        lengths = [rng.randint(1, 100) for _ in range(rng.randint(1, 16))]
        exs = [Example(list(range(2, n + 2)), list(range(2, n + 2)), "", 0, i) for i, n in enumerate(lengths)]
        budget = rng.choice([64, 128, 256])
        b = collate(exs, pad_id=0, packing=True, row_tokens=budget)
        assert sorted(b.ids) == list(range(len(lengths)))                       # every example, once
        rows, width = b.input_ids.shape
        fill = [sum(n for r, _, n in b.spans if r == i) for i in range(rows)]
        for i in range(rows):                       # over budget only when one example is itself longer
            assert fill[i] <= budget or sum(1 for r, _, _ in b.spans if r == i) == 1
        if max(lengths) <= budget // 2:             # short examples: the fewest rows fit, and cost no less
            fewest = -(-sum(lengths) // budget)
            by_length = sorted(exs, key=lambda e: -len(e.input_ids))
            k = next(k for k in range(fewest, len(exs) + 1) if max(_lpt(by_length, k)[1]) <= budget)
            assert cost(rows, width) <= cost(k, max(_lpt(by_length, k)[1]))
            assert width - min(fill) <= max(lengths)  # and no row is short by more than one example


def test_packing_takes_more_narrower_rows_when_attention_makes_them_cheaper():
    """Eight examples of 66 tokens in a budget of 256: the fewest rows (3, width 198) score
    3 x 198^2 attention pairs; eight rows of 66 pad nothing and score 8 x 66^2, so they are chosen."""
    exs = [Example(list(range(2, 68)), list(range(2, 68)), "", 0, i) for i in range(8)]
    b = collate(exs, pad_id=0, packing=True, row_tokens=256)
    assert tuple(b.input_ids.shape) == (8, 66)
    long = [Example(list(range(2, 202)), list(range(2, 202)), "", 0, i) for i in range(2)] + \
        [Example(list(range(2, 12)), list(range(2, 12)), "", 0, 2 + i) for i in range(20)]   # 2 x 200 + 20 x 10
    b = collate(long, pad_id=0, packing=True, row_tokens=256)
    assert b.input_ids.shape[0] == 3 and b.input_ids.shape[1] == 200   # short ones packed beside the long, not padded
