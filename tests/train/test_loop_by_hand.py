"""Pins of the training loop's behaviour, computed independently of the loop's own helpers.

Written before the loop was restructured, so that the restructure is checked against numbers the tests
compute themselves: gradient accumulation, the forgetting mitigations and probe, the learning-rate
schedule, weight decay and clipping. Only the public entry points are imported from tailorlm (config,
train, the metrics log, load_run, Retention); everything else is recomputed here with torch and
transformers.
"""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from tailorlm.retention.session import Retention
from tailorlm.train.log import read_metrics
from tailorlm.train.loop import train
from tailorlm.run import load_run

from ..conftest import tiny_config
from ..tiny_models import one_thread  # noqa: F401  (autouse: one thread per test)


# ---------------------------------------------------------------- helpers
# full fine-tuning, one thread on the CPU, evaluation only at the end, no retention
RUN = ("method=full", "train.steps=4", "train.lr=1e-3", "train.warmup=1", "train.eval_every=1000",
       "train.save_every=1000", "train.threads=1", "train.device=cpu", "eval.batch_size=8", "eval.before=false",
       "eval.keep_best=false", "output.overwrite=true")


def step_records(run: Path) -> dict[int, dict]:
    """{step: the step's metrics record} (evaluation records carry no `loss`)."""
    return {r["step"]: r for r in read_metrics(run / "metrics.jsonl") if "loss" in r}


def final_params(run: Path) -> dict[str, torch.Tensor]:
    _, model, _ = load_run(run)
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def base_model(model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir).eval()


def logprobs(model, ids: list[int], temperature: float = 1.0) -> torch.Tensor:
    """(len(ids), vocab) next-token log-probabilities of one unpadded sequence."""
    out = model(input_ids=torch.tensor([ids]), use_cache=False).logits[0].float()
    return (out / temperature).log_softmax(-1)


def seq_nll_sum(model, ids: list[int]) -> tuple[torch.Tensor, int]:
    """Summed NLL of tokens 1..n-1 of `ids` given their prefixes (every token a target), and their count."""
    lp = logprobs(model, ids)[:-1]
    tgt = torch.tensor(ids[1:])
    return -lp.gather(-1, tgt[:, None]).sum(), len(ids) - 1


def kl_rows(lp_base: torch.Tensor, lp_tuned: torch.Tensor) -> torch.Tensor:
    """KL(base || tuned) per row of (positions, vocab) log-probabilities."""
    return (lp_base.exp() * (lp_base - lp_tuned)).sum(-1)


# ---------------------------------------------------------------- 1. gradient accumulation, through the loop
@pytest.mark.parametrize("method", ["lora", "full"])
def test_accumulating_two_micro_batches_of_4_equals_one_batch_of_8(tiny_llama, tweets_text_file, tmp_path, method):
    """The loss is normalised by the target tokens of the whole accumulated batch: 4 x 2 with
    accumulation is, step by step and in the final weights, the same training as 8 x 1."""
    m = {"name": "lora", "r": 4, "alpha": 8} if method == "lora" else {"name": "full"}
    lr = 1e-2 if method == "lora" else 3e-4   # (Adam amplifies fp noise in tiny gradients: keep the lr modest)
    runs = {}
    for bs, accum in ((4, 2), (8, 1)):
        out = tmp_path / f"b{bs}x{accum}"
        train(tiny_config(out, tiny_llama, tweets_text_file, *RUN, method=m,
                          train={"batch_size": bs, "grad_accum": accum, "lr": lr, "steps": 4}), quiet=True)
        runs[(bs, accum)] = out
    acc, one = step_records(runs[(4, 2)]), step_records(runs[(8, 1)])
    assert sorted(acc) == sorted(one) == [1, 2, 3, 4]
    seen = set()
    for s in acc:
        # the same 8 examples in each step (logged in packed-row order, which differs: compare as sets)
        assert len(acc[s]["examples"]) == 8 and sorted(acc[s]["examples"]) == sorted(one[s]["examples"])
        assert not seen & set(acc[s]["examples"])          # and a new 8 each step (one epoch is > 32 rows)
        seen |= set(acc[s]["examples"])
        assert acc[s]["target_tokens"] == one[s]["target_tokens"]
        assert acc[s]["loss"] == pytest.approx(one[s]["loss"], rel=1e-5), s
        assert acc[s]["grad_norm"] == pytest.approx(one[s]["grad_norm"], rel=1e-4), s
    assert acc[4]["loss"] != acc[1]["loss"]                 # it trained
    w_acc, w_one = final_params(runs[(4, 2)]), final_params(runs[(8, 1)])
    assert w_acc.keys() == w_one.keys()
    for n in w_acc:
        assert torch.allclose(w_acc[n], w_one[n], rtol=1e-4, atol=1e-6), n
    if method == "lora":   # the weights moved: B starts at zero
        assert any(bool(w_acc[n].abs().sum() > 0) for n in w_acc if "lora_B" in n)
    else:
        base = dict(base_model(tiny_llama).named_parameters())
        assert any(not torch.equal(w_acc[n], base[n]) for n in w_acc)


# ---------------------------------------------------------------- 2. forgetting mitigations on real runs
MITIGATIONS = {
    "none": {},
    "ewc": {"ewc": 30.0},
    "distill": {"distill": 1.0},
    "replay": {"replay": 0.5},
    "all": {"ewc": 30.0, "distill": 1.0, "replay": 0.5},
}
TEMPERATURE = 2.0   # distillation temperature: not 1, so the T^2 * KL_T formula is pinned


class PenaltyCalls:
    """Wraps Retention.penalty: the Retention it was called on, and per step the parameters it was given
    (cloned), the replay batch and the value it returned; and the task examples Retention.attach got."""

    def __init__(self, mp: pytest.MonkeyPatch, on_call=None):
        self.retention, self.calls, self.task_examples = None, [], None
        orig, orig_attach = Retention.penalty, Retention.attach
        cap = self

        def attach(self_, model, params, method, task_examples):
            cap.task_examples = list(task_examples)
            return orig_attach(self_, model, params, method, task_examples)

        mp.setattr(Retention, "attach", attach)

        def penalty(self_, model, params, replay, **kw):   # (kw: a forgetting budget's distill weight)
            cap.retention = self_
            step = len(cap.calls) + 1
            extra = on_call(step, model, params, replay) if on_call else None
            out = orig(self_, model, params, replay, **kw)
            cap.calls.append({"params": {n: p.detach().clone() for n, p in params.items()},
                              "replay": replay, "value": None if out is None else float(out.detach()),
                              "extra": extra})
            return out

        mp.setattr(Retention, "penalty", penalty)


def mitigation_cfg(tiny_llama, data, out, method=None, **retention):
    return tiny_config(out, tiny_llama, data, *RUN, method=method or {"name": "full"},
                       train={"steps": 16, "batch_size": 4, "lr": 5e-3, "warmup": 1},
                       eval={"before": True, "max_examples": 8},
                       retention={"reference": "auto", "samples": 16, "sample_tokens": 24, "temperature": TEMPERATURE, **retention})


@pytest.fixture(scope="module")
def mitigation_runs(tmp_path_factory, tiny_llama, tweets_text_file):
    """One 16-step full fine-tuning run per mitigation setting, with Retention.penalty observed."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("mitigations")
    runs = {}
    for name, r in MITIGATIONS.items():
        with pytest.MonkeyPatch.context() as mp:
            cap = PenaltyCalls(mp)
            summary = train(mitigation_cfg(tiny_llama, tweets_text_file, root / name, **r), quiet=True)
        runs[name] = {"dir": root / name, "summary": summary, "cap": cap, "steps": step_records(root / name)}
    return runs


def unpack(batch) -> list[list[int]]:
    """The token ids of each example in a (packed) batch, from its spans."""
    return [batch.input_ids[r, s:s + n].tolist() for r, s, n in batch.spans]


def fisher_by_hand(model, examples) -> dict[str, torch.Tensor]:
    """Kirkpatrick et al.'s empirical diagonal Fisher: the mean over examples of the squared gradient of
    each example's own log-likelihood of its target tokens (labels != -100, each predicted from the
    position before it), divided by its mean over every entry of every parameter."""
    params = dict(model.named_parameters())
    acc = {n: torch.zeros_like(p) for n, p in params.items()}
    for e in examples:
        lp = logprobs(model, e.input_ids)
        at = [i for i, t in enumerate(e.labels) if i > 0 and t != -100]
        s = -sum(lp[i - 1, e.labels[i]] for i in at)
        for n, g in zip(params, torch.autograd.grad(s, list(params.values()), allow_unused=True)):
            if g is not None:
                acc[n] += g ** 2
    acc = {n: a / len(examples) for n, a in acc.items()}
    mean = torch.cat([a.flatten() for a in acc.values()]).mean()
    return {n: a / mean for n, a in acc.items()}


def model_with(tiny_llama, params: dict[str, torch.Tensor]):
    """A fresh copy of the base model from disk with `params` (a full fine-tuning state) loaded."""
    m = base_model(tiny_llama)
    missing, unexpected = m.load_state_dict(params, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}   # tied to the embeddings
    return m


def distill_by_hand(base, tuned, examples: list[tuple[list[int], int]], weight: float, temperature: float) -> float:
    """weight * T^2 * mean over every target position of KL(base_T || tuned_T): the targets of an auto
    reference text (ids, cut) are its sampled answer ids[cut:], predicted at positions cut-1..n-2."""
    kl, n = 0.0, 0
    with torch.no_grad():
        for ids, cut in examples:
            kl += float(kl_rows(logprobs(base, ids, temperature)[cut - 1:-1],
                                logprobs(tuned, ids, temperature)[cut - 1:-1]).sum())
            n += len(ids) - cut
    return weight * temperature ** 2 * kl / n


def answers_of(tok, texts: list[list[int]]) -> list[tuple[list[int], int]]:
    """(ids, where the sampled answer starts) of auto reference texts."""
    return [(ids, prompt_len(tok, ids)) for ids in texts]


def test_mitigation_penalties_equal_their_formulas_by_hand(mitigation_runs, tiny_llama):
    from transformers import AutoTokenizer

    base = base_model(tiny_llama)
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    theta0 = {n: p.detach().clone() for n, p in base.named_parameters()}
    cap = mitigation_runs["ewc"]["cap"]
    general = cap.retention.replay                                  # the reference's replay half
    assert 0 < len(general) <= 32                                   # every one of them, one gradient each
    probe = {tuple(e.input_ids) for e in cap.retention.probe.ref}
    assert not any(tuple(e.input_ids) in probe for e in general)    # the Fisher never sees the probe's texts
    fisher = fisher_by_hand(base, general)

    def ewc_at(run, step):
        params = mitigation_runs[run]["cap"].calls[step - 1]["params"]
        assert params.keys() == theta0.keys()
        return MITIGATIONS[run]["ewc"] * float(sum((fisher[n] * (params[n] - theta0[n]) ** 2).sum() for n in params))

    def distill_at(run, step):
        call = mitigation_runs[run]["cap"].calls[step - 1]
        tuned = model_with(tiny_llama, call["params"])
        return distill_by_hand(base, tuned, answers_of(tok, unpack(call["replay"])), MITIGATIONS[run]["distill"],
                               TEMPERATURE)

    for run in ("ewc", "distill", "all"):
        logged = {s: r.get("penalty") for s, r in mitigation_runs[run]["steps"].items()}
        assert len(logged) == 16 and all(v is not None for v in logged.values()), run
        # the value the loop logs is the value Retention.penalty returned
        assert [logged[s] for s in range(1, 17)] == [c["value"] for c in mitigation_runs[run]["cap"].calls]
        # step 1: the parameters are their anchor and the model is the base, so every term is 0
        assert abs(logged[1]) < 1e-7, (run, logged[1])
        assert logged[2] > 1e-5, (run, logged[2])
    assert ewc_at("ewc", 1) == 0.0
    # the first step with a penalty, and the last: after one Adam step every moved weight has moved by
    # about the same lr, which hides the Fisher's shape and the direction of the KL; after 15 it does not
    for step in (2, 16):
        steps = {run: mitigation_runs[run]["steps"][step] for run in ("ewc", "distill", "all")}
        assert steps["ewc"]["penalty"] == pytest.approx(ewc_at("ewc", step), rel=1e-4), step
        assert steps["distill"]["penalty"] == pytest.approx(distill_at("distill", step), rel=1e-4), step
        assert steps["all"]["penalty"] == pytest.approx(ewc_at("all", step) + distill_at("all", step), rel=1e-4), step
    # replay alone: no penalty, a replay loss every step
    rep = mitigation_runs["replay"]["steps"]
    assert all("penalty" not in r and "replay_loss" in r for r in rep.values())
    assert all("replay_loss" not in r for r in mitigation_runs["distill"]["steps"].values())


def test_replay_batches_come_from_the_replay_half_and_their_loss_is_the_mean_token_nll(mitigation_runs, tiny_llama):
    from transformers import AutoTokenizer

    base = base_model(tiny_llama)
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    for run, rows in (("replay", 2), ("all", 2), ("distill", 1)):   # round(batch_size * replay) rows, at least 1
        cap = mitigation_runs[run]["cap"]
        replay_pool = [e.input_ids for e in cap.retention.replay]
        probe = [e.input_ids for e in cap.retention.probe.ref]
        assert len(replay_pool) == len(probe) == 8 and not any(ids in probe for ids in replay_pool)
        for call in cap.calls:
            exs = unpack(call["replay"])
            assert len(exs) == rows and all(ids in replay_pool for ids in exs), run
    for run in ("replay", "all"):
        exs = unpack(mitigation_runs[run]["cap"].calls[0]["replay"])
        with torch.no_grad():
            want = answer_nll(base, answers_of(tok, exs))   # step 1: the model is the base; answers only
        assert mitigation_runs[run]["steps"][1]["replay_loss"] == pytest.approx(want, rel=1e-5)


def test_each_mitigation_forgets_less_than_none(mitigation_runs):
    final = {k: v["summary"]["final"] for k, v in mitigation_runs.items()}
    none = final["none"]
    assert none["ref_nll_change"] > 0.15 and none["kl_to_base"] > 0.5     # this setting forgets
    for run in ("ewc", "distill", "replay", "all"):
        assert final[run]["ref_nll_change"] < none["ref_nll_change"] - 0.05, run
    for run in ("ewc", "distill", "all"):
        assert final[run]["kl_to_base"] < none["kl_to_base"] * 0.7, run
    # the task was still learnt
    for run, s in mitigation_runs.items():
        assert s["summary"]["final"]["val_loss"] < s["summary"]["base"]["val_loss"], run


def test_replay_alone_reduces_kl_to_base(mitigation_runs):
    assert mitigation_runs["replay"]["summary"]["final"]["kl_to_base"] < \
        mitigation_runs["none"]["summary"]["final"]["kl_to_base"]


def test_distillation_of_a_lora_run_uses_the_model_with_its_adapters_off(tiny_llama, tweets_text_file, tmp_path,
                                                                         monkeypatch):
    """LoRA keeps no copy of the base: distillation's teacher is the same model with the adapter
    disabled. It equals a fresh base model from disk (the tuned side: the live model at that step)."""
    from transformers import AutoTokenizer

    base = base_model(tiny_llama)
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    w = 0.5

    def tuned_side(step, model, params, replay):
        if step in (2, 16):
            exs = answers_of(tok, unpack(replay))
            with torch.no_grad():
                return distill_by_hand(base, model, exs, w, TEMPERATURE)
        return None

    cap = PenaltyCalls(monkeypatch, on_call=tuned_side)
    train(mitigation_cfg(tiny_llama, tweets_text_file, tmp_path / "r", method={"name": "lora", "r": 4, "alpha": 8},
                         distill=w), quiet=True)
    steps = step_records(tmp_path / "r")
    assert steps[1]["penalty"] == 0.0          # B = 0 at the start: the adapted model is the base
    assert steps[2]["penalty"] > 1e-6
    for step in (2, 16):
        assert steps[step]["penalty"] == pytest.approx(cap.calls[step - 1]["extra"], rel=1e-4), step


# ---------------------------------------------------------------- 3. the retention probe
def test_probe_scores_equal_a_separate_forward_of_base_and_tuned(mitigation_runs, tiny_llama, tiny_tokenizer_dir,
                                                                 tmp_path):
    """ref_nll: per-token NLL of the probe texts' sampled answers (the prompt's template and instruction
    are never scored); kl_to_base: KL(base || tuned) averaged over the positions that predict every 8th
    answer token. Recomputed here from a fresh base model and the run's final/ reloaded."""
    run = mitigation_runs["none"]
    summary, ref = run["summary"], run["cap"].retention.probe.ref
    texts = [e.input_ids for e in ref]
    base = base_model(tiny_llama)
    _, tuned, tok = load_run(run["dir"])
    tuned.eval()
    with torch.no_grad():
        answers = answers_of(tok, texts)
        base_nll, tuned_nll = answer_nll(base, answers), answer_nll(tuned, answers)
        kls = []
        for ids, cut in answers:
            at = [cut - 1 + k for k in range(len(ids) - cut) if k % 8 == 7]   # predicts answer token k
            kls.append(kl_rows(logprobs(base, ids)[at], logprobs(tuned, ids)[at]))
        kl = float(torch.cat(kls).mean())
    assert summary["base"]["ref_nll"] == pytest.approx(base_nll, rel=1e-4)
    assert summary["final"]["ref_nll"] == pytest.approx(tuned_nll, rel=1e-4)
    assert summary["final"]["ref_nll_change"] == pytest.approx(tuned_nll - base_nll, rel=1e-3, abs=1e-5)
    assert summary["final"]["kl_to_base"] == pytest.approx(kl, rel=1e-4)
    # the final evaluation record in metrics.jsonl carries the same numbers
    last_eval = [r for r in read_metrics(run["dir"] / "metrics.jsonl") if "eval" in r][-1]
    assert last_eval["step"] == 16 and last_eval["eval"]["kl_to_base"] == summary["final"]["kl_to_base"]

    # the auto reference is the base model's own writing: 8 probe texts of a generic prompt and up to 24
    # sampled tokens, far more likely under the base than under another random model of the same shape
    from ..conftest import make_tiny_llama

    assert len(texts) == 8
    decoded = [tok.decode(ids) for ids in texts]
    assert all(d.startswith("<|im_start|>user\nWrite a short paragraph about ") for d in decoded)
    assert all("<|im_start|>assistant\n" in d for d in decoded)
    other = base_model(make_tiny_llama(tmp_path / "other", tiny_tokenizer_dir, seed=1))
    with torch.no_grad():
        own, foreign = answer_nll(base, answers), answer_nll(other, answers)
    assert own < foreign - 2.0, (own, foreign)   # measured: 3.6 vs 7.0 nats/token


def answer_nll(model, answers: list[tuple[list[int], int]]) -> float:
    """Per-token NLL of the tokens from `cut` on of each text."""
    tot, n = 0.0, 0
    for ids, cut in answers:
        lp = logprobs(model, ids)[cut - 1:-1]
        tot += float(-lp.gather(-1, torch.tensor(ids[cut:])[:, None]).sum())
        n += len(ids) - cut
    return tot / n


def prompt_len(tok, ids: list[int]) -> int:
    """Tokens up to and including the assistant header (where sampling started)."""
    head = tok("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
    for i in range(len(ids) - len(head) + 1):
        if ids[i:i + len(head)] == head:
            return i + len(head)
    raise AssertionError("no assistant header in a reference text")


# ---------------------------------------------------------------- 4. learning rate, weight decay, clipping
def multiplier(step0: int, warmup: int, total: int, schedule: str, min_ratio: float) -> float:
    """The peak-lr multiplier at 0-based step `step0`: (s+1)/(warmup+1) in warmup, then constant, or a
    linear or cosine decay from 1 to min_ratio over the remaining steps."""
    if step0 < warmup:
        return (step0 + 1) / (warmup + 1)
    if schedule == "constant":
        return 1.0
    progress = (step0 - warmup) / (total - warmup)
    if schedule == "linear":
        return min_ratio + (1 - min_ratio) * (1 - progress)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


@pytest.mark.parametrize("schedule", ["cosine", "linear", "constant"])
def test_logged_lr_follows_warmup_then_the_schedule(tiny_llama, tweets_text_file, tmp_path, schedule):
    peak, steps, warmup, min_ratio = 2e-3, 10, 3, 0.2
    train(tiny_config(tmp_path / "r", tiny_llama, tweets_text_file, *RUN,
                      method={"name": "lora", "r": 2, "alpha": 4}, data={"max_length": 32}, eval={"max_examples": 2},
                      train={"steps": steps, "batch_size": 2, "lr": peak, "warmup": warmup, "schedule": schedule, "min_lr_ratio": min_ratio}), quiet=True)
    recs = step_records(tmp_path / "r")
    assert sorted(recs) == list(range(1, steps + 1))
    want = [peak * multiplier(s - 1, warmup, steps, schedule, min_ratio) for s in range(1, steps + 1)]
    got = [recs[s]["lr"] for s in range(1, steps + 1)]
    assert got == pytest.approx(want, rel=1e-9, abs=0)
    assert got[0] == pytest.approx(peak / 4) and got[warmup] == pytest.approx(peak)   # 1/(w+1), then the peak
    if schedule != "constant":   # the last step is one step short of the floor
        assert min_ratio * peak < got[-1] < got[warmup]


REAL_ADAMW = torch.optim.AdamW


class AdamWSpy:
    """Replaces torch.optim.AdamW: records the parameter groups it is built with and, at each step(),
    the norm of the gradients it is about to apply."""

    def __init__(self, mp: pytest.MonkeyPatch):
        self.groups, self.step_norms = [], []
        spy, real = self, REAL_ADAMW

        class Spied(real):
            def __init__(self, params, *a, **k):
                params = list(params)
                spy.groups = [{"params": list(g["params"]), "weight_decay": g["weight_decay"]} for g in params]
                super().__init__(params, *a, **k)

            def step(self, closure=None):
                grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
                spy.step_norms.append(float(torch.linalg.vector_norm(torch.stack(
                    [torch.linalg.vector_norm(g) for g in grads]))))
                return super().step(closure)

        mp.setattr(torch.optim, "AdamW", Spied)


def test_weight_decay_applies_to_matrices_only(tiny_llama, tweets_text_file, tmp_path, monkeypatch):
    lr, wd = 1e-2, 0.5
    finals, spies = {}, {}
    for decay in (wd, 0.0):
        spies[decay] = AdamWSpy(monkeypatch)
        out = tmp_path / f"wd{decay}"
        train(tiny_config(out, tiny_llama, tweets_text_file, *RUN,
                          train={"steps": 1, "lr": lr, "warmup": 0, "weight_decay": decay}), quiet=True)
        finals[decay] = final_params(out)
    groups = spies[wd].groups
    assert [g["weight_decay"] for g in groups] == [wd, 0.0]
    assert all(p.ndim >= 2 for p in groups[0]["params"]) and all(p.ndim == 1 for p in groups[1]["params"])
    base = {n: p.detach() for n, p in base_model(tiny_llama).named_parameters()}
    assert len(groups[0]["params"]) + len(groups[1]["params"]) == len(base)   # every weight, once (tied: once)
    mats = [n for n in base if base[n].ndim >= 2]
    vecs = [n for n in base if base[n].ndim == 1]
    assert mats and vecs and all("norm" in n for n in vecs)
    for n in vecs:   # the same first step without decay: identical
        assert torch.equal(finals[wd][n], finals[0.0][n]), n
    for n in mats:   # decoupled decay: theta <- theta * (1 - lr * wd) before the Adam update
        assert not torch.equal(finals[wd][n], finals[0.0][n]), n
        assert torch.allclose(finals[0.0][n] - finals[wd][n], lr * wd * base[n], rtol=1e-3, atol=1e-7), n


def test_clipping_logs_the_norm_before_and_steps_with_the_norm_after(tiny_llama, tweets_text_file, tmp_path,
                                                                    monkeypatch):
    clip = 1e-3
    logged, seen = {}, {}
    for max_norm in (clip, None):
        spy = AdamWSpy(monkeypatch)
        out = tmp_path / f"clip{max_norm}"
        train(tiny_config(out, tiny_llama, tweets_text_file, *RUN, train={"steps": 2, "max_grad_norm": max_norm}), quiet=True)
        logged[max_norm] = [r["grad_norm"] for _, r in sorted(step_records(out).items())]
        seen[max_norm] = spy.step_norms
    assert len(seen[clip]) == len(seen[None]) == 2
    # unclipped: what the optimizer gets is what is logged
    assert seen[None] == pytest.approx(logged[None], rel=1e-5)
    # clipped: the same gradient at step 1 (same start), logged before clipping, far above the limit...
    assert logged[clip][0] == pytest.approx(logged[None][0], rel=1e-6)
    assert all(g > 100 * clip for g in logged[clip])
    # ...and scaled down to the limit for the update
    for s in range(2):
        assert seen[clip][s] <= clip * (1 + 1e-5)
        assert seen[clip][s] == pytest.approx(clip, rel=1e-3)
