"""The general-text reference that forgetting is measured on.

By default it is written by the base model itself at step 0: short paragraphs it generates for
generic prompts, sampled with a fixed seed. Only the sampled answer is scored: the chat template and
the "Write a short paragraph about ..." instruction are given text (labels IGNORE), kept as context
but never a target, so forgetting measures the answers the base would write, not drift on a template
(a model tuned on chat data moves its template predictions without losing any capability). Their
NLL under the base model is low by construction, so any rise during tuning is capability lost, and
no external data is needed. A user may instead give a JSONL/CSV/Parquet file with a `text` field
(e.g. Wikipedia), read as `text` format, every token a target.
"""
from __future__ import annotations

import torch

from ..data.read import read_rows
from ..data.tokenize import IGNORE, Example
from ..forward import eval_mode, left_padded
from ..progress import track

TOPICS = ["the history of bridges", "how vaccines work", "the water cycle", "a recipe for bread", "the planet Mars",
          "why the sky is blue", "the rules of chess", "how a computer stores numbers", "the French Revolution",
          "photosynthesis", "the life of honey bees", "how to learn a language", "volcanoes", "the printing press",
          "ocean tides", "the human heart", "jazz music", "the Roman Empire", "electric cars", "the moon landing",
          "how rain forms", "the Olympic Games", "a good night's sleep", "the invention of the telephone"]


def read_reference(path: str, tok, max_length: int, limit: int) -> list[Example]:
    """`limit` blocks of a user-supplied general text file, spread evenly over the whole file (not
    its first article), every token a target."""
    rows = [r for r in read_rows(path, "skip").rows if isinstance(r.get("text"), str) and r["text"].strip()]
    if not rows:
        raise ValueError(f"{path}: no rows with a non-empty 'text' field for the retention reference")
    ids_per_row = tok([r["text"] for r in rows], add_special_tokens=False)["input_ids"]
    blocks = [(r, ids[s:s + max_length]) for r, ids in zip(rows, ids_per_row)
              for s in range(0, len(ids), max_length) if len(ids[s:s + max_length]) >= 16]
    pick = [blocks[i] for i in spread(len(blocks), limit)]
    return [Example(chunk, list(chunk), path, r["_line"], i) for i, (r, chunk) in enumerate(pick)]


def spread(n: int, k: int) -> list[int]:
    """k indices spread evenly over range(n) (all of them when k >= n)."""
    return list(range(n)) if k >= n else [i * n // k for i in range(k)]


@torch.no_grad()
def generate_reference(model, tok, n: int, new_tokens: int, seed: int, device: str) -> list[Example]:
    """n base-model samples for generic prompts: input_ids = the rendered prompt + the sampled answer,
    labels = IGNORE over the prompt (template and instruction) and the answer's own tokens after it."""
    g = torch.Generator().manual_seed(seed)
    out = []
    prompts = [f"Write a short paragraph about {TOPICS[i % len(TOPICS)]}." for i in range(n)]
    with eval_mode(model), left_padded(tok):
        for i in track(range(0, n, 8), "sampling", total=n, unit="texts", step=8):
            chunk = prompts[i:i + 8]
            if getattr(tok, "chat_template", None):
                texts = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                                 add_generation_prompt=True) for p in chunk]
            else:   # a base model: the instruction as its own paragraph, the answer a new one (run on from
                # the sentence, Gemma-3-270M wrote "<h3><h3>..." and "1111..." at 0.1 nats/token: no prose to lose)
                texts = [p + "\n\n" for p in chunk]
            enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=g)))
            gen = model.generate(**enc, max_new_tokens=new_tokens, do_sample=True, top_p=0.9, temperature=0.8,
                                 pad_token_id=tok.pad_token_id)
            width, ends = enc["input_ids"].shape[1], _end_ids(model, tok)
            for row, mask in zip(gen.tolist(), enc["attention_mask"].tolist()):   # (width + new,), (width,)
                # the prompt by its attention mask, not by token: the pad token is often <|im_end|>,
                # which the template itself uses
                prompt = [t for t, m in zip(row[:width], mask) if m]
                answer = _answer(row[width:], ends)
                out.append(Example(prompt + answer, [IGNORE] * len(prompt) + answer, "<base-model samples>",
                                   len(out) + 1, len(out)))
    return out


def _end_ids(model, tok) -> set[int]:
    """Token ids that end a sample: the tokenizer's EOS and the model's generation EOS (an int or a list)."""
    ends = {tok.eos_token_id} if tok.eos_token_id is not None else set()
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ends |= set(gen_eos) if isinstance(gen_eos, (list, tuple)) else ({gen_eos} if gen_eos is not None else set())
    return ends


def _answer(new: list[int], ends: set[int]) -> list[int]:
    """The sampled tokens up to and including the first end token: generate fills a row with pad only
    after it has ended, so every token before it was sampled (a pad id among them too)."""
    for j, t in enumerate(new):
        if t in ends:
            return new[:j + 1]
    return new
