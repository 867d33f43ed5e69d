"""Token attributions of a prediction, by Captum (Kokhlikyan et al. 2020, arXiv 2009.07896).

F is the log-probability of the target: for a language model the summed log p of the target tokens
(the predicted label word, or the next tokens) after the prompt, teacher-forced; for a
classification head log softmax(logits)[class]. Each of the user's tokens gets a score, the
template around it none (it is the same for every input).

- ablation: phi_i = F(x) - F(x without token i) (occlusion; Zeiler & Fergus 2014).
- shapley: phi_i = E_pi[F(S_pi,i + i) - F(S_pi,i)] over random token orders pi (Shapley value
  sampling, Castro et al. 2009); the phi sum to F(x) - F(no tokens) for each sampled order.
  For a decoder both run through `captum.attr.LLMAttribution` over a `TextTemplateInput` whose
  features are the user's tokens (a removed token is left out of the text).
- ig: integrated gradients (Sundararajan et al. 2017, arXiv 1703.01365) on the token embeddings,
  `LayerIntegratedGradients`: phi_i = (e_i - e'_i) . integral_0^1 dF(e' + a(e - e'))/de_i da, with e'
  the pad token's embedding at the user's tokens (the template unchanged). Completeness:
  sum_i phi_i = F(x) - F(x'); Captum's convergence delta is the Riemann-sum error of that identity.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from ..errors import MissingError
from .inputs import Rendered

METHODS = ("ablation", "shapley", "ig")


def captum_attr():
    """captum.attr, imported on first use: an optional extra."""
    try:
        import captum.attr as ca
    except ImportError:
        raise MissingError("token attributions need Captum, which is not installed. "
                           "Fix: pip install 'tailorlm[explain]'") from None
    return ca


@dataclass
class Attribution:
    method: str
    scores: list[float]            # one per user token (Rendered.pieces)
    target_logp: float             # F(x)
    baseline_logp: float | None    # F(x'): ig's baseline, or every user token removed (shapley)
    delta: float | None            # ig: sum(phi) - (F(x) - F(x')), Captum's convergence delta


class _Framed:
    """The tokenizer as Captum sees it, encoding a prompt as the run does (`bos + tok(text)` without
    the tokenizer's own special tokens), so attributions score the exact ids evaluation scores."""

    def __init__(self, tok, prefix: list[int]):
        self._tok, self._prefix = tok, prefix

    def encode(self, text, return_tensors=None, add_special_tokens=True, **kw):
        ids = (self._prefix if add_special_tokens else []) + self._tok(text, add_special_tokens=False)["input_ids"]
        return torch.tensor([ids]) if return_tensors == "pt" else ids

    def __call__(self, *a, **kw):
        return self._tok(*a, **kw)

    def __getattr__(self, name):
        return getattr(self._tok, name)


def _device(model) -> torch.device:
    return next(model.parameters()).device


def _lm_logp(model, ids: torch.Tensor, m: int) -> torch.Tensor:
    """(B,) summed log p of the last m tokens of ids (B, T) given the rest. Logits are read from the
    end, so virtual tokens a method prepends (prompt tuning) do not shift them."""
    logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False,
                   logits_to_keep=m + 1).logits[:, -m - 1:-1]                      # (B, m, V)
    return logits.float().log_softmax(-1).gather(-1, ids[:, -m:, None]).squeeze(-1).sum(-1)


def _class_logp(model, ids: torch.Tensor, cls: int) -> torch.Tensor:
    """(B,) log softmax of a classification head's logits at class cls."""
    return model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.float().log_softmax(-1)[:, cls]


def score(model, r: Rendered, target: list[int] | int, ids: torch.Tensor | None = None) -> float:
    """F for one input: the target's log p (a list of token ids) or the class's (an int)."""
    x = torch.tensor([r.ids], device=_device(model)) if ids is None else ids
    with torch.no_grad():
        if isinstance(target, int):
            return float(_class_logp(model, x, target)[0])
        t = torch.tensor([target], device=x.device)
        return float(_lm_logp(model, torch.cat([x, t], 1), len(target))[0])


def attribute(model, tok, r: Rendered, target: list[int] | int, method: str = "ablation", *,
              n_steps: int = 64, n_samples: int = 8, seed: int = 0) -> Attribution:
    """Attributions of F to each of r's user tokens. `target` is a list of token ids (a language
    model's answer) or a class index (a classification head)."""
    if method not in METHODS:
        raise ValueError(f"method {method!r}: one of {METHODS}")
    torch.manual_seed(seed)   # shapley samples token orders with torch's generator
    if method == "ig":
        return integrated_gradients(model, tok, r, target, n_steps=n_steps)
    if isinstance(target, int):
        return _presence(model, tok, r, target, method, n_samples)
    return _llm(model, tok, r, target, method, n_samples)


def _llm(model, tok, r: Rendered, target: list[int], method: str, n_samples: int) -> Attribution:
    """A decoder through captum's LLMAttribution; the text template keeps the run's prompt around the
    user's tokens (the features), so a feature switched off is that token left out of the text."""
    ca = captum_attr()
    prefix = r.ids[:len(r.ids) - len(tok(r.prompt, add_special_tokens=False)["input_ids"])]
    algo = ca.FeatureAblation(model) if method == "ablation" else ca.ShapleyValueSampling(model)
    llm = ca.LLMAttribution(algo, _Framed(tok, prefix))
    inp = ca.TextTemplateInput(lambda *v: r.head + "".join(v) + r.tail, values=list(r.pieces))
    kw = {"n_samples": n_samples} if method == "shapley" else {}
    # one target token at a time, read from the end: robust to a virtual prompt a method prepends.
    # (Captum's notes on re-tokenizing the target for display are not about the scores: silenced.)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", module="captum")
        res = llm.attribute(inp, target=torch.tensor(target), forward_in_tokens=True, use_cached_outputs=False, **kw)
    scores = res.seq_attr.float().cpu().tolist()
    full = score(model, r, target)
    empty = None
    if method == "shapley":   # the value of the empty coalition, against which the phi sum
        ids = torch.tensor([prefix + tok(r.head + r.tail, add_special_tokens=False)["input_ids"]], device=_device(model))
        empty = score(model, r, target, ids)
    return Attribution(method, scores, full, empty, None)


def _presence(model, tok, r: Rendered, cls: int, method: str, n_samples: int) -> Attribution:
    """A classification head, by ablation or Shapley sampling over a presence vector (1: the token,
    0: the pad token in its place), through captum's perturbation classes."""
    ca = captum_attr()
    dev = _device(model)
    ids = torch.tensor([r.ids], device=dev)
    s, e = r.span
    pad = _pad_id(tok)

    def f(presence: torch.Tensor) -> torch.Tensor:   # presence (B, n user tokens) -> F (B,)
        x = ids.expand(presence.shape[0], -1).clone()
        x[:, s:e] = torch.where(presence > 0.5, x[:, s:e], torch.full_like(x[:, s:e], pad))
        return _class_logp(model, x, cls)

    on = torch.ones(1, e - s, device=dev)
    algo = ca.FeatureAblation(f) if method == "ablation" else ca.ShapleyValueSampling(f)
    kw = {"n_samples": n_samples} if method == "shapley" else {}
    with torch.no_grad():
        phi = algo.attribute(on, baselines=0.0, **kw)[0]
        full, empty = float(f(on)[0]), float(f(torch.zeros_like(on))[0])
    return Attribution(method, phi.float().cpu().tolist(), full, empty if method == "shapley" else None, None)


def _pad_id(tok) -> int:
    for t in (tok.pad_token_id, tok.unk_token_id, tok.eos_token_id):
        if t is not None:
            return int(t)
    return 0


def integrated_gradients(model, tok, r: Rendered, target: list[int] | int, *, n_steps: int = 64,
                         internal_batch_size: int = 16) -> Attribution:
    """Layer integrated gradients on the input embeddings (a decoder's target tokens or a head's
    class), the baseline being the pad token at the user's tokens; the convergence delta reported."""
    ca = captum_attr()
    dev = _device(model)
    x = torch.tensor([r.ids], device=dev)
    s, e = r.span
    if isinstance(target, int):
        f = lambda ids: _class_logp(model, ids, target)                      # noqa: E731
    else:
        t = torch.tensor([target], device=dev)
        x = torch.cat([x, t], 1)                                             # the answer, teacher-forced
        f = lambda ids: _lm_logp(model, ids, len(target))                    # noqa: E731
    base = x.clone()
    base[:, s:e] = _pad_id(tok)
    lig = ca.LayerIntegratedGradients(f, model.get_input_embeddings())
    phi, delta = lig.attribute(x, baselines=base, n_steps=n_steps, internal_batch_size=internal_batch_size,
                               return_convergence_delta=True)               # phi (1, T, hidden)
    per_token = phi.sum(-1)[0, s:e]   # the template's rows are exactly 0: its input equals the baseline
    with torch.no_grad():
        fx, fb = float(f(x)[0]), float(f(base)[0])
    return Attribution("ig", per_token.detach().float().cpu().tolist(), fx, fb, float(delta[0]))
