"""What the planner measures of a model before any weight is read: its config.json, and what autograd
keeps per decoder layer (a probe). What the method trains on it is the method's own Footprint
(methods/footprint.py: counted exactly on the model's skeleton on the meta device).

Activations are measured, not guessed, on a probe: the same architecture with 1 and then 2 decoder
layers (random weights, a 256-word vocabulary), the configured method and precision, one forward at
three sequence lengths, counting every tensor autograd saves for backward
(`torch.autograd.graph.saved_tensors_hooks`; each storage once, the weights themselves left out,
since they are counted as weights). The 2-layer minus the 1-layer model is one layer:

    saved(T) = c + a * T + q * T^2        per layer and row of T tokens

c is what a layer keeps whatever the tokens (bf16 copies of its weights under autocast), a the
per-token activations, q the attention matrix when the attention kernel keeps one (0 with a
flash-style kernel). The probe costs the memory of two layers, built once per model, method and
precision and cached in the process.
"""
from __future__ import annotations

import copy
import functools
import json

import torch

from ..data.batching import collate
from ..data.tokenize import Example
from ..device import autocast
from ..forward import lm_loss_sum
from ..methods import METHODS
from ..methods.footprint import shape_only
from ..models.load import load_hf_config

PROBE_VOCAB = 256
PROBE_LENGTHS = (32, 64, 128)


def hf_config(cfg):
    """The model's transformers config (config.json only; its code never runs)."""
    return load_hf_config(cfg.model.path, cfg.model.trust_remote_code)


def _probe_config(config, n_layers: int, vocab: int):
    c = copy.deepcopy(config)
    c.num_hidden_layers, c.vocab_size = n_layers, vocab
    for key in ("pad_token_id", "bos_token_id", "eos_token_id"):
        if isinstance(getattr(c, key, None), int) and getattr(c, key) >= vocab:
            setattr(c, key, 0)
    if hasattr(c, "layer_types") and c.layer_types:
        c.layer_types = c.layer_types[:n_layers]
    return c


def _saved_bytes(model, precision: str, tokens: int, vocab: int) -> int:
    """Bytes of the distinct non-parameter storages autograd saves in one forward of 1 x `tokens`."""

    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in params and s.device.type != "meta":
            seen[s.data_ptr()] = s.nbytes()
        return t

    ids = [1 + (i * 7) % (vocab - 1) for i in range(tokens)]
    batch = collate([Example(ids, list(ids), "probe", 1, 0)], 0, packing=False)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast("cpu", precision):
        loss, _ = lm_loss_sum(model, batch)
    del loss
    return sum(seen.values())


def _fit(xs, ys) -> tuple[float, float, float]:
    """c, a, q of y = c + a x + q x^2 through three points."""
    import numpy as np

    c, a, q = np.linalg.solve(np.array([[1.0, x, x * x] for x in xs]), np.array(ys, dtype=float))
    return float(c), float(a), max(0.0, float(q))


def _measure(config, method_name: str, mcfg, precision: str, dtype: str, n_layers: int, vocab: int) -> list[int]:
    """Bytes saved for backward at each probe length by `n_layers` layers of `vocab` words, the method on."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(_probe_config(config, n_layers, vocab))
    model = model.to(torch.bfloat16 if dtype == "bf16" else torch.float32)
    model = METHODS[method_name].apply(model, mcfg).train()
    return [_saved_bytes(model, precision, t, vocab) for t in PROBE_LENGTHS]


@functools.lru_cache(maxsize=16)
def _probe(config_json: str, method_json: str, method_name: str, precision: str, dtype: str, virtual: int) -> dict:
    from transformers import AutoConfig

    config = AutoConfig.for_model(**json.loads(config_json))
    args = (config, method_name, METHODS[method_name].Config(**json.loads(method_json)), precision, dtype)
    one, two = _measure(*args, 1, PROBE_VOCAB), _measure(*args, 2, PROBE_VOCAB)
    wide = _measure(*args, 1, 2 * PROBE_VOCAB)          # the vocabulary's share: logits and head copies
    layer = [b - a for a, b in zip(one, two)]
    word = [(w - a) / PROBE_VOCAB for a, w in zip(one, wide)]
    rest = [a - b - PROBE_VOCAB * v for a, b, v in zip(one, layer, word)]
    # a row's tokens: its own and the virtual ones the method puts in front (its Footprint's)
    xs = [t + virtual for t in PROBE_LENGTHS]
    return {"layer": _fit(xs, layer), "word": _fit(xs, word), "rest": _fit(xs, rest)}


def probe(cfg, config, precision: str, virtual_tokens: int | None = None) -> dict:
    """Per layer and outside the layers: (c, a, q) of saved bytes for a row of T tokens (see above).
    The method is applied to every probe layer (its `layers` choice is applied by the caller). T counts
    the virtual tokens the method puts in front of each row: given, or asked of the method."""
    if virtual_tokens is None:
        virtual_tokens = METHODS[cfg.method.name].footprint(cfg.method, config).virtual_tokens
    mcfg = shape_only(cfg.method).model_dump()
    mcfg.pop("layers", None)
    return _probe(config.to_json_string(use_diff=False), json.dumps(mcfg), cfg.method.name, precision,
                  cfg.model.dtype, virtual_tokens)
