"""`tailorlm plan`'s three mistakes (issue 27): a limit that only bf16 weights *with* smaller micro-batches
meet gets that pair proposed (and the pair trains); a classification run's logits are budgeted at its
label positions, as the data really tokenizes, not at every token as for the same rows read as text;
and a suggestion shows the figure that was compared with the memory available (peak x headroom)."""
from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tailorlm.build import tokenizer_for
from tailorlm.config import load_config
from tailorlm.data import build_data
from tailorlm.data.batching import collate
from tailorlm.data.tokenize import IGNORE
from tailorlm.plan import human, plan
from tailorlm.plan.estimate import estimate
from tailorlm.train import train

from ..conftest import make_tiny_llama, tiny_config
from ..tiny_models import CLS_RUN, one_thread, tweets_cls_file  # noqa: F401
from .test_plan import RUN, docs  # noqa: F401  (fixture: real text in long documents)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def heavy(tmp_path_factory, tiny_tokenizer_dir) -> Path:
    """A tiny Llama whose frozen weights outweigh one row's activations: halving them saves more than
    a micro-batch of 1 does, and neither alone is enough for the limit below."""
    return make_tiny_llama(tmp_path_factory.mktemp("heavy"), tiny_tokenizer_dir, num_hidden_layers=4,
                           hidden_size=256, intermediate_size=2048, num_attention_heads=4, num_key_value_heads=2)


def _need(cfg, **sections) -> int:
    """What the planner says `cfg` with these section values needs (peak x headroom), advice left out."""
    raw = json.loads(cfg.model_dump_json())
    for section, values in sections.items():
        raw[section].update(values)
    return estimate(load_config(raw=raw), 10 ** 15).needed


def test_only_bf16_weights_with_smaller_micro_batches_fit_and_that_pair_is_proposed(heavy, docs, tmp_path):
    cfg = tiny_config(tmp_path / "run", heavy, docs, *RUN)
    one = {"batch_size": 1, "grad_accum": 8}
    limit = _need(cfg, model={"dtype": "bf16"}, train=one)
    singles = {"micro-batch of 1": _need(cfg, train=one),
               "checkpointing, micro-batch of 1": _need(cfg, train={**one, "gradient_checkpointing": True}),
               "bf16 weights": _need(cfg, model={"dtype": "bf16"}),
               "bf16 weights, checkpointing": _need(cfg, model={"dtype": "bf16"},
                                                    train={"gradient_checkpointing": True})}
    print({k: human(v) for k, v in singles.items()}, "pair", human(limit))
    assert min(singles.values()) > limit          # no single change (nor bf16 with checkpointing) is enough
    p = plan(cfg, limit)
    assert p.fits is False and p.advice
    first = p.advice[0]
    assert re.fullmatch(r"model\.dtype=bf16 train\.batch_size=(\d) train\.grad_accum=(\d)", first["override"])
    assert "together" in first["why"] and all(a["needed"] <= limit for a in p.advice)
    fixed = tiny_config(tmp_path / "run", heavy, docs, *RUN, *first["override"].split())
    assert fixed.model.dtype == "bf16" and fixed.train.batch_size * fixed.train.grad_accum == 8
    assert plan(fixed, limit).fits
    assert train(fixed, quiet=True)["steps"] == 1   # the proposed pair is a run that trains


def test_the_suggestion_shows_the_figure_it_compared(heavy, docs, tmp_path):
    cfg = tiny_config(tmp_path / "run", heavy, docs, *RUN)
    path = tmp_path / "cfg.yaml"
    path.write_text(cfg.model_dump_json())
    limit = _need(cfg, train={"batch_size": 2, "grad_accum": 4})
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}:{REPO}", "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-m", "tailorlm", "plan", str(path), "--memory", str(limit)], env=env,
                         capture_output=True, text=True)
    print(out.stdout)
    assert out.returncode == 1, out.stderr
    p = plan(cfg, limit)
    a = p.advice[0]
    assert p.headroom > 1 and a["needed"] == int(a["total"] * p.headroom) and a["needed"] <= limit < a["total"] * 2
    shown = f"needs {human(a['needed'])} (x{p.headroom:g} of its {human(a['total'])} peak) of {human(limit)} available"
    assert f"fits with: {a['override']}" in out.stdout and shown in out.stdout


def _cls_config(tmp_path, model, data, fmt):
    return tiny_config(tmp_path / "run", model, data, *CLS_RUN, f"data.format={fmt}", "data.max_length=96",
                       "train.batch_size=8", "data.prompt_template=Sentiment of this tweet?\n\n{text}")


@pytest.mark.parametrize("chunk", [1024, None], ids=["loss_chunk", "plain_head"])
def test_classification_logits_are_budgeted_at_label_positions(tiny_llama, tweets_cls_file, tmp_path, chunk):
    cls, text = (_cls_config(tmp_path, tiny_llama, tweets_cls_file, f) for f in ("classification", "text"))
    cls.train.loss_chunk = text.train.loss_chunk = chunk
    data = build_data(cls.data, tokenizer_for(cls))
    per_example = max(sum(t != IGNORE for t in e.labels[1:]) for e in data.train)   # label + end of turn
    assert 2 <= per_example < 12
    pc, pt = plan(cls, 10 ** 15), plan(text, 10 ** 15)
    assert pc.targets == 8 * per_example and pt.targets is None
    # what the head really sees on the run's own micro-batches: never more than planned
    random.seed(0)
    for _ in range(20):
        batch = collate(random.sample(data.train, 8), 0, packing=True, row_tokens=cls.data.max_length)
        assert batch.n_targets <= pc.targets and batch.keep.numel() <= min(96, pc.targets)
    V = json.loads((tiny_llama / "config.json").read_text())["vocab_size"]
    print(f"logits: classification {human(pc.parts['logits'])}, as text {human(pt.parts['logits'])}")
    if chunk:   # one chunk's (positions, vocab) logits, gradients and log-softmax: 12 bytes each
        assert pt.parts["logits"] - pc.parts["logits"] == (min(8 * 96, chunk) - 8 * per_example) * V * 12
    else:       # (rows, K, vocab) at K = min(T, N) kept columns, not T
        assert pc.parts["logits"] < pt.parts["logits"] * min(96, 8 * per_example) / 96 * 1.01
    assert pc.parts["activations"] == pt.parts["activations"] and pc.total < pt.total
