"""The privacy probes checked against independent references and negative controls (issue 23).

- Discoverable extraction (Carlini et al. 2022, "Quantifying memorization") on instruction data takes
  its window on the trained tokens (the responses): a model overfit on responses is caught, one overfit
  on the prompts alone is not (the prompt window, kept as `--window prompt`, shows the reverse).
- Membership inference scores as members only the rows the run trained on (its data order up to the
  final step), and a base-model control that is not at chance voids the result.
- AUC and TPR at 1% / 0.1% FPR against scikit-learn; canary exposure (Carlini et al. 2019,
  log2|R| - log2 rank) against a direct enumeration of a 3-digit secret space.
- Negative controls: a model never shown the canaries sits at chance; the base against itself moves by 0.
"""
import json
import math

import numpy as np
import pytest
import torch

from tailorlm.build import tokenizer_for
from tailorlm.run import load_run
from tailorlm.commands import main
from tailorlm.data import build_data
from tailorlm.probes.canaries import Canaries, exposure_rank, make_canaries
from tailorlm.probes.membership import auc, membership_rows, tpr_at_fpr
from tailorlm.train import train

from ..conftest import real_tweets, tiny_config, write_jsonl
from ..probes.test_privacy import CANARY_RUN, CHANCE, Rows
from ..tiny_models import one_thread  # noqa: F401  (fixture: one thread per test)

NO_CANARIES = {"canaries": {"count": 0}, "prefix_tokens": 4, "suffix_tokens": 8, "sample": 32}
INSTRUCTION = {"format": "instruction", "max_length": 160}


def _probe(run, *args) -> Rows:
    assert main(["privacy", str(run), "--k", "4", "--m", "8", *args]) == 0
    return Rows(json.loads((run / "probes" / "privacy.json").read_text())["rows"]), \
        json.loads((run / "probes" / "privacy.json").read_text())


@pytest.fixture(scope="module")
def instruction_runs(tiny_llama, tmp_path_factory):
    """Two tiny Llamas overfit (full fine-tuning, 200 steps at lr 3e-3) on the same 20 training rows of
    40 prompt/response tweet pairs: one on the responses (an instruction run: prompts masked), one on
    the rendered prompts alone (a text run, its own validation file). Returns (dir, response run,
    prompt run, the instruction config)."""
    d = tmp_path_factory.mktemp("instr")
    t = real_tweets(1100)[1000:]
    rows = [{"prompt": t[j]["text"], "response": t[50 + j]["text"]} for j in range(40)]
    instr = write_jsonl(d / "pairs.jsonl", rows)
    cfg = tiny_config(d / "resp", tiny_llama, instr, *CANARY_RUN, data=INSTRUCTION, privacy=NO_CANARIES,
                      eval={"metrics": ["val_loss", "membership", "extraction"]})
    train(cfg, quiet=True)
    tok = tokenizer_for(cfg)
    data = build_data(cfg.data, tok, cfg.train.seed)
    prompts = []
    for e in data.train:                                      # the rendered prompt: every untrained token
        s = next(i for i, y in enumerate(e.labels) if y != -100)
        prompts.append({"text": tok.decode(e.input_ids[:s])})
    other = write_jsonl(d / "other.jsonl", [{"text": r["text"]} for r in t[90:94]])
    pcfg = tiny_config(d / "prompt", tiny_llama, write_jsonl(d / "prompts.jsonl", prompts), *CANARY_RUN,
                       data={"val": str(other), "max_length": 160}, privacy=NO_CANARIES,
                       eval={"metrics": ["val_loss"]})
    train(pcfg, quiet=True)
    return d, d / "resp", d / "prompt", cfg


def test_extraction_catches_a_model_overfit_on_responses(instruction_runs):
    """The default window lies on the trained tokens: the responses the run memorised are extracted."""
    _, resp, _, _ = instruction_runs
    rows, _ = _probe(resp)
    tr = rows[("extraction rate", "training")]
    assert tr["n"] >= 10 and tr["base"] == 0 and tr["tuned"] > 0.3, tr
    assert rows[("extraction gap", "gap")]["lo"] > 0
    # the prompt window reads the prompts, never trained on: nothing there to extract
    rows, _ = _probe(resp, "--window", "prompt")
    assert rows[("extraction rate", "training")]["tuned"] < 0.1
    assert not rows[("extraction gap", "gap")]["significant"]


def test_extraction_does_not_flag_a_model_overfit_on_prompts_only(instruction_runs):
    """A model that memorised the prompts (never the responses) shows nothing on the trained window;
    the prompt window, which measures the prompts, does find them (the test has teeth)."""
    from tailorlm.probes.privacy import privacy_probe

    _, _, prompt_run, cfg = instruction_runs
    _, model, tok = load_run(prompt_run)
    data = build_data(cfg.data, tok, cfg.train.seed)
    got = {}
    for window in ("trained", "prompt"):
        rows, _, _ = privacy_probe(model, cfg, data, None, k=4, m=8, n=32, device="cpu", window=window)
        got[window] = Rows(rows)
    assert got["prompt"][("extraction rate", "training")]["tuned"] > 0.3
    assert got["prompt"][("extraction gap", "gap")]["lo"] > 0
    tr = got["trained"][("extraction rate", "training")]
    assert tr["n"] >= 10 and tr["tuned"] < 0.1, tr
    assert not got["trained"][("extraction gap", "gap")]["significant"]


@pytest.fixture(scope="module")
def short_run(tiny_llama, tmp_path_factory):
    """5 steps of 4 rows over 200 training tweets and 5 canary rows (every step logged): the run saw
    20 of the 205 examples. Returns (run dir, config, the example ids metrics.jsonl logged)."""
    d = tmp_path_factory.mktemp("short")
    t = real_tweets(1300)[1000:]
    data = write_jsonl(d / "t.jsonl", [{"text": r["text"]} for r in t[:200]])
    val = write_jsonl(d / "v.jsonl", [{"text": r["text"]} for r in t[200:260]])
    cfg = tiny_config(d / "run", tiny_llama, data, *CANARY_RUN, data={"val": str(val), "max_length": 160},
                      privacy={**NO_CANARIES, "canaries": {"count": 1, "repetitions": [1, 4], "references": 8}},
                      eval={"metrics": ["val_loss", "membership"]},
                      train={"steps": 5, "eval_every": 5, "save_every": 5, **{"batch_size": 4, "log_every": 1}})
    train(cfg, quiet=True)
    logged = {i for x in (d / "run" / "metrics.jsonl").read_text().splitlines() if '"examples"' in x
              for i in json.loads(x)["examples"]}
    return d / "run", cfg, logged


def test_the_trained_rows_are_what_the_run_logged(short_run):
    """The rows the data order gives for steps 1..5 are the example ids metrics.jsonl logged; rebuilt
    without its canaries, the data still orders as the run did (order_size counts them back in)."""
    from tailorlm.probes.membership import trained_rows
    from tailorlm.probes.privacy import order_size

    run, cfg, logged = short_run
    data = build_data(cfg.data, tokenizer_for(cfg), cfg.train.seed)    # as `tailorlm privacy` reads it
    assert len(data.train) == 200 and order_size(data, cfg) == 205
    assert len(logged) == 20
    assert trained_rows(205, cfg.train, 5) == logged
    assert trained_rows(205, cfg.train, 3) < logged and len(trained_rows(205, cfg.train, 60)) == 205


def test_membership_members_are_rows_the_run_trained_on(short_run):
    """Of 200 training rows the run saw under 20 (canary rows took the rest of its 20): those are the
    members, whatever --max-examples asks; the 180-odd it never reached join the held-out side."""
    run, _, logged = short_run
    _, probe = _probe(run, "--max-examples", "50")
    mb, user_seen = probe["extra"]["membership"], len([i for i in logged if i < 200])
    assert 0 < user_seen <= 20 and mb["members"] == mb["trained_rows"] == user_seen, mb
    assert mb["non_members"] == 50 and mb["never_reached"] == 200 - user_seen
    assert probe["extra"]["extraction"]["train"] <= user_seen


def test_a_base_control_off_chance_voids_membership():
    """Members and non-members that differ in distribution (the base model tells them apart) leave
    nothing to claim: no row is significant, and the raw figures say why."""
    rng = np.random.default_rng(0)
    bm, bn = rng.normal(0.0, 1, 200), rng.normal(1.0, 1, 200)           # base: members easier in themselves
    rows, raw = membership_rows((bm - 0.5, bn), (bm, bn), rounds=200)      # and tuning lowers them more
    assert raw["void"], raw
    assert not any(r["significant"] for r in rows), rows
    ok_rows, ok_raw = membership_rows((bm - 0.5, bn - 1.0), (bm, bn - 1.0), rounds=200)   # same distribution
    assert not ok_raw["void"] and ok_rows[0]["significant"]


@pytest.mark.parametrize("seed, n_mem, n_non, ties", [(0, 40, 50, False), (1, 300, 1200, True), (2, 7, 3000, True)])
def test_auc_and_tpr_at_low_fpr_match_scikit_learn(seed, n_mem, n_non, ties):
    """AUC = Mann-Whitney U / (n1 n0) (roc_auc_score); TPR at FPR f read off roc_curve (every point
    kept), ties as one segment, as the AUC counts them. A lower score says member: sklearn gets -score."""
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(seed)
    m, n = rng.normal(-0.6, 1, n_mem), rng.normal(0, 1, n_non)
    if ties:                                                             # coarse scores: many ties
        m, n = np.round(m, 1), np.round(n, 1)
    y, s = np.r_[np.ones(n_mem), np.zeros(n_non)], -np.r_[m, n]
    assert auc(m, n) == pytest.approx(sk.roc_auc_score(y, s), abs=1e-12)
    fpr, tpr, _ = sk.roc_curve(y, s, drop_intermediate=False)
    for f in (0.01, 0.001):
        assert tpr_at_fpr(m, n, f) == pytest.approx(_roc_tpr(fpr, tpr, f), abs=1e-12), f
        if not ties:    # no ties: the best ROC point at or left of f
            assert tpr_at_fpr(m, n, f) == pytest.approx(tpr[fpr <= f].max(), abs=1e-12)
    rows, _ = membership_rows((m, n), (np.zeros(n_mem), np.zeros(n_non)), rounds=50)
    tprs = {r["metric"]: r["tuned"] for r in rows if r["metric"].startswith("TPR")}
    assert set(tprs) == {"TPR at 1.0% FPR", "TPR at 0.1% FPR"}
    assert tprs["TPR at 1.0% FPR"] == pytest.approx(_roc_tpr(fpr, tpr, 0.01), abs=1e-12)


def _roc_tpr(fpr: np.ndarray, tpr: np.ndarray, f: float) -> float:
    """TPR of scikit-learn's ROC at FPR = f: the last point at or left of f, linear to the next one
    (a group of tied scores is one segment: its members and non-members flagged in proportion)."""
    i = int(np.searchsorted(fpr, f, side="right")) - 1
    if i + 1 == len(fpr) or fpr[i] == f:
        return float(tpr[i])
    return float(tpr[i] + (f - fpr[i]) * (tpr[i + 1] - tpr[i]) / (fpr[i + 1] - fpr[i]))


def _direct_nll(model, tok, texts: list[str]) -> np.ndarray:
    """-sum log p(token) over the tokens after the prefix every text shares, by a plain forward of each
    length group (no padding, no tailorlm code): the secret's log-perplexity given that prefix."""
    ids = [tok(t)["input_ids"] for t in texts]
    common = min(next((j for j in range(min(len(a), len(ids[0]))) if a[j] != ids[0][j]), min(len(a), len(ids[0])))
                 for a in ids)
    out = np.zeros(len(texts))
    by_len: dict[int, list[int]] = {}
    for i, a in enumerate(ids):
        by_len.setdefault(len(a), []).append(i)
    with torch.no_grad():
        for length, idx in by_len.items():
            x = torch.tensor([ids[i] for i in idx])                             # (rows, length)
            logp = torch.log_softmax(model(input_ids=x).logits.double(), -1)   # (rows, length, vocab)
            tok_lp = logp[:, :-1].gather(-1, x[:, 1:, None])[..., 0]           # (rows, length - 1): log p(x_t | x_<t)
            out[idx] = -tok_lp[:, common - 1:].sum(1).numpy()
    return out


def test_canary_exposure_matches_enumerating_a_3_digit_space(tiny_llama, tmp_path):
    """|R| = 1,000 secrets ('my pin is 000'..'999'): ranking one secret among the 999 others is its
    exact rank, so exposure = log2(1000) - log2(rank) (Carlini et al. 2019 §4) by enumeration."""
    from tailorlm.probes.privacy import exposures, measure_canaries

    data = write_jsonl(tmp_path / "t.jsonl", [{"text": r["text"]} for r in real_tweets(20)])
    cfg = tiny_config(tmp_path / "r", tiny_llama, data, *CANARY_RUN, privacy=NO_CANARIES)
    tok = tokenizer_for(cfg)
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    space = [f"my pin is {i:03d}" for i in range(1000)]
    direct = _direct_nll(model, tok, space)
    rank = 1 + (direct[None, :] < direct[:, None]).sum(1)                     # (1000,): 1 = most likely
    exact = math.log2(1000) - np.log2(rank)
    for s in (0, 417, int(np.argmin(direct))):
        c = Canaries("my pin is {digits:3}", "my pin is ", [{"text": space[s], "repetitions": 1}], [],
                     space[:s] + space[s + 1:], 1000)
        nll = measure_canaries(model, cfg, tok, c, "cpu")["canary_nll"]
        assert nll == pytest.approx(np.r_[direct[s], np.delete(direct, s)], rel=1e-4)
        assert exposures(c, nll)["rank"][0] == pytest.approx(exact[s]), s
    got = np.array([exposure_rank(direct[i:i + 1], np.delete(direct, i))[0] for i in range(1000)])
    assert got == pytest.approx(exact) and exact.max() == pytest.approx(math.log2(1000))


def test_a_model_never_shown_the_canaries_sits_at_chance(instruction_runs):
    """Tuned on tweets without canaries: its canaries' exposure is that of a uniform rank (log2 e)."""
    from tailorlm.probes.privacy import exposures, measure_canaries

    _, resp, _, cfg = instruction_runs
    _, model, tok = load_run(resp)
    c = make_canaries(tiny_config(resp, cfg.model.path, cfg.data.train, *CANARY_RUN).privacy.canaries, 0)   # 16 secrets, 255 refs
    exp = exposures(c, measure_canaries(model, cfg, tok, c, "cpu")["canary_nll"])["rank"]
    assert len(exp) == 16 and abs(exp.mean() - CHANCE) < 3 * CHANCE / math.sqrt(len(exp)), exp


def test_the_base_against_itself_changes_nothing(instruction_runs, tiny_llama):
    """Every row of the probe, the base model scored as the tuned one: change 0, its interval holds 0,
    nothing significant, the base control at chance."""
    from transformers import AutoModelForCausalLM

    from tailorlm.probes.privacy import privacy_probe

    _, _, _, cfg = instruction_runs
    tok = tokenizer_for(cfg)
    data = build_data(cfg.data, tok, cfg.train.seed)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    c = make_canaries(tiny_config("x", cfg.model.path, cfg.data.train, *CANARY_RUN).privacy.canaries, 0)
    rows, warnings, extra = privacy_probe(model, cfg, data, c, k=4, m=8, n=32, device="cpu")
    assert len(rows) > 10
    for r in rows:
        assert r["change"] == pytest.approx(0, abs=1e-12) and r["lo"] <= 1e-12 and r["hi"] >= -1e-12, r
        assert not r["significant"], r
    assert not extra["membership"]["void"]
