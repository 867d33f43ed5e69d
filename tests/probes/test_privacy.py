"""Memorisation and privacy (issue 17, part 2): canary exposure, discoverable extraction and membership
inference, base vs tuned. A tiny Llama is deliberately overfit (full fine-tuning, 200 steps at a high lr
on 20 tweets and the canaries) so memorisation is certain; the untouched base model is the control."""
import json
import math

import numpy as np
import pytest
import torch

from tailorlm.build import tokenizer_for
from tailorlm.run import load_run
from tailorlm.commands import main
from tailorlm.config import ConfigError, load_config
from tailorlm.data import build_data
from tailorlm.eval.evaluators import EvalContext
from tailorlm.probes.canaries import Canaries, exposure_rank, insert_canaries, make_canaries, user_examples
from tailorlm.probes.membership import auc, tpr_at_fpr
from tailorlm.probes.privacy_eval import membership_scores
from tailorlm.probes.privacy_scoring import greedy_matches
from tailorlm.probes.store import write_probe
from tailorlm.train import train
from tailorlm.train.setup import setup_run

from ..conftest import real_tweets, tiny_config, write_jsonl
from ..tiny_models import one_thread  # noqa: F401  (fixture: one thread per test)

REFS = 255          # log2(REFS + 1) = 8 bits: the most exposure a rank can show
CHANCE = 1 / math.log(2)   # a never-seen secret ranks uniformly: exposure ~ -log2(U), mean log2(e), sd log2(e)


# 200 full fine-tuning steps that overfit 4 canaries (a test that sets train.steps sets eval_every and
# save_every to match)
CANARY_RUN = ("method=full", "data.max_length=64", "data.val_fraction=0.5", "data.val_max=500", "train.steps=200",
              "train.batch_size=8", "train.lr=3e-3", "train.schedule=constant", "train.threads=1",
              "train.log_every=10", "train.eval_every=200", "train.save_every=200", "eval.max_examples=300",
              "eval.batch_size=16", "eval.metrics=[val_loss, canaries, membership, extraction]",
              "privacy.canaries.count=4", f"privacy.canaries.references={REFS}", "privacy.prefix_tokens=4",
              "privacy.suffix_tokens=8", "privacy.sample=32", "output.overwrite=true")


@pytest.fixture(scope="module")
def overfit(tiny_llama, tmp_path_factory):
    """(run dir, user data file, its bytes before training, probe rows by (metric, group))."""
    d = tmp_path_factory.mktemp("privacy")
    data = write_jsonl(d / "tweets.jsonl", [{"text": r["text"]} for r in real_tweets(1040)[1000:]])
    before = data.read_bytes()
    train(tiny_config(d / "run", tiny_llama, data, *CANARY_RUN), quiet=True)
    assert main(["privacy", str(d / "run"), "--k", "4", "--m", "8"]) == 0
    probe = json.loads((d / "run" / "probes" / "privacy.json").read_text())
    return d / "run", data, before, Rows(probe["rows"])


class Rows:
    """The probe's rows by (start of the metric's name, group)."""
    def __init__(self, rows):
        self.rows = rows

    def __getitem__(self, key):
        metric, group = key
        (hit,) = [r for r in self.rows if r["metric"].startswith(metric) and r["group"] == group]
        return hit


def test_the_16x_canary_is_exposed_and_never_inserted_ones_stay_at_chance(overfit):
    _, _, _, rows = overfit
    top = rows[("canary exposure (rank", "16x")]
    assert top["tuned"] >= 0.8 * math.log2(REFS), top
    assert top["base"] < 0.5 * math.log2(REFS)          # the base model never saw it
    never = rows[("canary exposure (rank", "never inserted")]
    assert never["tuned"] < CHANCE + 3 * CHANCE / math.sqrt(never["n"]), never
    assert rows[("canary exposure (rank", "16x")]["change"] > never["change"] + 3


def test_membership_inference_separates_an_overfit_run_and_not_the_base(overfit):
    _, _, _, rows = overfit
    ref = rows[("MIA AUC (NLL_tuned - NLL_base)", "reference attack")]
    assert ref["tuned"] > 0.9 and ref["tuned_lo"] > 0.5
    loss = rows[("MIA AUC (NLL alone)", "loss attack")]
    assert loss["base_lo"] <= 0.5 <= loss["base_hi"], loss   # the untouched base model: chance
    assert loss["tuned"] > 0.9


def test_extraction_finds_training_text_and_not_held_out_text(overfit):
    _, _, _, rows = overfit
    tr, ho = rows[("extraction rate", "training")], rows[("extraction rate", "held-out")]
    assert tr["n"] >= 10 and ho["n"] >= 10
    assert tr["base"] == 0 and tr["tuned"] > 0.3 and ho["tuned"] < 0.1
    assert rows[("extraction gap", "gap")]["lo"] > 0


def test_evaluators_score_base_and_tuned_into_the_run(overfit):
    run, _, _, _ = overfit
    base = json.loads((run / "base_eval.json").read_text())
    last = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if '"eval"' in x][-1]["eval"]
    assert base["mia_auc"] == 0.5 and last["mia_auc"] > 0.9       # the reference attack on the base: zero scores
    assert base["exposure_16x"] < 4 < last["exposure_16x"]
    assert last["extraction_train"] > last["extraction_heldout"]


def test_canaries_live_in_the_run_not_in_the_users_file(overfit):
    run, data, before, _ = overfit
    assert data.read_bytes() == before
    c = Canaries.load(run)
    assert [x["repetitions"] for x in c.inserted] == [1] * 4 + [4] * 4 + [16] * 4
    secrets = [x["text"] for x in c.inserted] + c.never + c.references
    assert len(set(secrets)) == len(secrets) == 4 * 4 + REFS
    assert not any(s.encode() in before for s in secrets)
    summary = json.loads((run / "summary.json").read_text())
    assert "canaries" in json.dumps(summary)


def test_resume_reinserts_the_same_canaries(overfit):
    run, _, _, _ = overfit
    recorded = (run / "canaries.json").read_bytes()
    cfg = load_config(run / "config.yaml", ["train.steps=201"])
    state = setup_run(cfg, resume=True, quiet=True)
    tok = state.tok
    canary_rows = [e for e in state.data.train if e.file == "<canary>"]
    texts = [tok.decode(e.input_ids, skip_special_tokens=True) for e in canary_rows]
    c = Canaries.load(run)
    assert texts == [x["text"] for x in c.inserted for _ in range(x["repetitions"])]
    assert (run / "canaries.json").read_bytes() == recorded
    assert state.step == 200


def test_exposure_and_auc_by_hand():
    refs = np.arange(1.0, 256.0)                          # 255 references
    assert exposure_rank(np.array([0.5]), refs)[0] == 8.0   # rank 1 of 256
    assert exposure_rank(np.array([300.0]), refs)[0] == 0.0  # rank 256: no exposure
    rng = np.random.default_rng(0)
    m, n = rng.normal(0, 1, 40), rng.normal(0.7, 1, 50)
    brute = np.mean([(a < b) + 0.5 * (a == b) for a in m for b in n])
    assert auc(m, n) == pytest.approx(brute)
    assert auc(np.r_[m, 1.0], np.r_[n, 1.0]) == pytest.approx(np.mean([(a < b) + 0.5 * (a == b) for a in np.r_[m, 1.0]
                                                                        for b in np.r_[n, 1.0]]))
    assert tpr_at_fpr(np.array([0.0, 0.1, 5.0]), np.arange(1.0, 101.0), 0.01) == pytest.approx(2 / 3)


def test_canary_config_errors(tiny_llama, tmp_path):
    data = write_jsonl(tmp_path / "t.jsonl", [{"text": r["text"]} for r in real_tweets(20)])
    with pytest.raises(ConfigError, match="no secret"):
        make_canaries(tiny_config(tmp_path / "r", tiny_llama, data, *CANARY_RUN,
                                  privacy={"canaries": {"count": 2, "pattern": "no slot"}}).privacy.canaries, 0)
    with pytest.raises(ConfigError, match="possible secrets"):
        make_canaries(tiny_config(tmp_path / "r", tiny_llama, data, *CANARY_RUN,
                                  privacy={"canaries": {"count": 2, "pattern": "pin {digits:2}"}}).privacy.canaries, 0)
    with pytest.raises(ConfigError, match="starts with its secret"):
        make_canaries(tiny_config(tmp_path / "r", tiny_llama, data, *CANARY_RUN,
                                  privacy={"canaries": {"count": 2, "pattern": "{digits:9} is it"}}).privacy.canaries, 0)
    with pytest.raises(ConfigError, match="repetitions"):
        tiny_config(tmp_path / "r", tiny_llama, data, *CANARY_RUN,
                    privacy={"canaries": {"count": 1, "repetitions": [4, 4]}})
    cfg = tiny_config(tmp_path / "r", tiny_llama, data, *CANARY_RUN, model={"task": "sequence_classification"})
    tok = tokenizer_for(cfg)
    built = build_data(cfg.data, tok, 0)
    with pytest.raises(ConfigError, match="classification head"):
        insert_canaries(cfg, built, tok)


def test_the_evaluators_base_view_agrees_with_the_step_0_scores(overfit):
    """A resumed run has no step 0: the evaluator then scores the base through pair.base_view (here the
    base folder beside the fully tuned model), and must find what step 0 found."""
    run, _, _, _ = overfit
    cfg, model, tok = load_run(run)
    data = build_data(cfg.data, tok, cfg.train.seed)
    last = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if '"eval"' in x][-1]["eval"]
    got = membership_scores(model, EvalContext(cfg, data, "cpu"))
    assert got["mia_auc"] == pytest.approx(last["mia_auc"]) and got["mia_loss_auc"] == pytest.approx(last["mia_loss_auc"])


def test_canaries_join_classification_data_as_fully_trained_text(tiny_llama, tmp_path):
    rows = [{"text": r["text"], "label": r["label"]} for r in real_tweets(30)]
    cfg = tiny_config(tmp_path / "r", tiny_llama, write_jsonl(tmp_path / "c.jsonl", rows), *CANARY_RUN,
                      data={"format": "classification"}, eval={"metric": "val_loss"})
    tok = tokenizer_for(cfg)
    data = build_data(cfg.data, tok, 0)
    n_user = len(data.train)
    c = insert_canaries(cfg, data, tok, tmp_path)
    extra = data.train[n_user:]
    assert len(extra) == 4 * (1 + 4 + 16) == data.report["canaries"]["rows"]
    assert all(e.labels == e.input_ids and e.cls == -1 for e in extra)        # every token trained, no class
    assert [e.id for e in extra] == list(range(n_user, n_user + len(extra)))
    assert Canaries.load(tmp_path) == c and user_examples(data) == data.train[:n_user]


def test_a_run_with_canaries_and_probes_can_be_replaced(tiny_llama, tmp_path):
    """canaries.json and probes/ are tailorlm's own files: output.overwrite replaces such a run."""
    data = write_jsonl(tmp_path / "t.jsonl", [{"text": r["text"]} for r in real_tweets(20)])
    cfg = tiny_config(tmp_path / "run", tiny_llama, data, *CANARY_RUN, eval={"metrics": ["val_loss"]},
                      train={"steps": 2, "eval_every": 2, "save_every": 2})
    train(cfg, quiet=True)
    write_probe(tmp_path / "run", "privacy", title="t", rows=[])
    assert (tmp_path / "run" / "canaries.json").is_file()
    train(cfg, quiet=True)
    assert not (tmp_path / "run" / "probes").exists() and (tmp_path / "run" / "canaries.json").is_file()


def test_teacher_forced_extraction_equals_greedy_decoding(overfit):
    """greedy_matches reads exact-match extraction off one forward; model.generate must agree, example by example."""
    run, _, _, _ = overfit
    cfg, model, tok = load_run(run)
    data = build_data(cfg.data, tok, cfg.train.seed)
    prompts = [e.input_ids[:5] for e in data.train + data.val if len(e.input_ids) >= 13]
    targets = [e.input_ids[5:13] for e in data.train + data.val if len(e.input_ids) >= 13]
    fast = greedy_matches(model, prompts, targets, pad_id=tok.pad_token_id, device="cpu", precision="fp32")
    slow = []
    for p, t in zip(prompts, targets):
        gen = model.generate(input_ids=torch.tensor([p]), max_new_tokens=len(t), do_sample=False,
                             pad_token_id=tok.pad_token_id)[0, len(p):].tolist()
        slow.append(float(gen == t))
    assert fast.tolist() == slow and 0 < sum(slow) < len(slow)
