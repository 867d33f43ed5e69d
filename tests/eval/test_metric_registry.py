"""The metric registry (eval/specs.py): every score has a spec, and selection, the report, `compare`
and `continual` ask it for a metric's direction and unit instead of guessing from its name (issue 23)."""
from __future__ import annotations

import numpy as np
import pytest

from tailorlm.compare import table
from tailorlm.continual import metrics as cm
from tailorlm.errors import ConfigError
from tailorlm.eval import evaluators as ev
from tailorlm.eval.specs import MetricSpec, declares, find, register_metrics, spec
from tailorlm.report.tables import before_after
from tailorlm.train.select import Guard


def test_every_built_in_evaluator_declares_the_metrics_it_returns():
    for name, fn in ev.EVALUATORS.items():
        assert fn.metrics, name
        for metric, s in fn.metrics.items():
            assert find(metric.replace("*", "4")) is s, (name, metric)
    assert spec("fewshot8_macro_f1").direction == "higher"
    assert spec("exposure_16x").direction == "lower" and spec("exposure_never").direction == "info"
    assert spec("mia_auc").target == 0.5 and spec("bias_s_dis").target == 0.0
    assert {k for k, s in ev.EVALUATORS["accuracy"].metrics.items() if s.select} == {"accuracy", "macro_f1"}


def test_a_metric_without_a_spec_is_refused_in_one_line():
    with pytest.raises(ConfigError, match="declares no metrics"):
        register_metrics("mine", {})
    with pytest.raises(ConfigError) as e:
        spec("no_such_metric", "--metric")
    assert "--metric 'no_such_metric' has no metric spec" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ValueError, match="target"):
        MetricSpec("target", "AUC")


def test_an_outside_evaluator_must_declare_what_it_returns(monkeypatch):
    ctx = type("Ctx", (), {"cfg": None})()
    monkeypatch.setitem(ev.EVALUATORS, "undeclared", lambda model, ctx: {"never_declared_anywhere": 1.0})
    with pytest.raises(ConfigError, match="'undeclared' returned 'never_declared_anywhere', which has no metric spec"):
        ev.evaluate(None, ctx, ["undeclared"])

    @declares(logit_abs_mean2=MetricSpec("info", "logit"))
    def declared(model, ctx):
        return {"logit_abs_mean2": 2.0, "some_warning": "text is not a metric"}

    monkeypatch.setitem(ev.EVALUATORS, "declared", declared)
    assert ev.evaluate(None, ctx, ["declared"])["logit_abs_mean2"] == 2.0
    # an evaluator returning only registered metrics needs no declaration of its own
    monkeypatch.setitem(ev.EVALUATORS, "plain", lambda model, ctx: {"val_loss": 1.0})
    assert ev.evaluate(None, ctx, ["plain"]) == {"val_loss": 1.0}


def test_compare_ranks_the_lower_membership_auc_as_better():
    """Before the registry, compare's regex took mia_auc as higher-is-better: 0.70 beat 0.55."""
    leaky = {"base": {"mia_auc": 0.5}, "final": {"mia_auc": 0.70}}
    tight = {"base": {"mia_auc": 0.5}, "final": {"mia_auc": 0.55}}
    rows = [{"name": n, "label": n, "size": None, "method": "lora", **table.run_row(s, "mia_auc")}
            for n, s in (("leaky", leaky), ("tight", tight))]
    assert rows[0]["gain"] == pytest.approx(-0.20) and rows[1]["gain"] == pytest.approx(-0.05)
    groups = table.aggregate(rows)
    table.best_flags(groups)
    assert groups[0]["vs_best"]["best"] == "tight"
    with pytest.raises(ConfigError, match="has no metric spec"):
        table.run_row(leaky, "mia_aucc")


def test_compare_refuses_an_unknown_metric_before_training(tmp_path, capsys):
    from tailorlm.commands import main

    assert main(["compare", str(tmp_path / "none.yaml"), "--metric", "mia_aucc", "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--metric 'mia_aucc' has no metric spec" in err[0]
    assert not (tmp_path / "c").exists()


def test_selection_follows_the_spec():
    g = Guard("macro_f1")
    assert g.update(1, {"macro_f1": 0.5}, None).improved
    assert g.update(2, {"macro_f1": 0.6}, None).improved and g.best_step == 2
    assert not g.update(3, {"macro_f1": 0.4}, None).improved
    g = Guard("val_loss")
    g.update(1, {"val_loss": 2.0}, None)
    assert g.update(2, {"val_loss": 1.5}, None).improved
    with pytest.raises(ConfigError, match="may not choose the best checkpoint"):
        Guard("val_tokens")


def test_the_report_colours_a_target_metric_by_its_distance_to_the_target():
    """bias_stereo_share 0.70 -> 0.55 moves toward the ideal 0.5: good (green), though it fell; the
    old name-guessing took it as higher-is-better and coloured it red. mia_auc 0.5 -> 0.62: bad."""
    page = before_after({"summary": {"final": {"bias_stereo_share": 0.55, "mia_auc": 0.62}}, "evals": [],
                         "base": {"bias_stereo_share": 0.70, "mia_auc": 0.5}})
    share = page[page.index("bias_stereo_share"):].split("</tr>")[0]
    auc = page[page.index("mia_auc"):].split("</tr>")[0]
    assert 'class="good">-0.1500' in share and "closer to 0.5 is better" in share
    assert 'class="bad">+0.1200' in auc


def _gem(R: np.ndarray) -> dict:
    """GEM (Lopez-Paz & Ranzato 2017, sec. 2) written from the paper with 1-based tasks: R[i, j] is
    the test accuracy on task j after learning task i (i = 0: before any, the paper's b-vector).
    ACC = 1/T sum_i R[T, i]; BWT = 1/(T-1) sum_{i<T} R[T, i] - R[i, i];
    FWT = 1/(T-1) sum_{i>=2} R[i-1, i] - b_i. Forgetting (Chaudhry et al. 2018):
    f_j = max_{l in 1..T-1} R[l, j] - R[T, j], averaged over j < T."""
    T = R.shape[1]
    r = lambda i, j: R[i, j - 1]  # noqa: E731  (row i, task j, 1-based)
    return {"ACC": sum(r(T, i) for i in range(1, T + 1)) / T,
            "BWT": sum(r(T, i) - r(i, i) for i in range(1, T)) / (T - 1),
            "FWT": sum(r(i - 1, i) - r(0, i) for i in range(2, T + 1)) / (T - 1),
            "F": sum(max(r(l, j) for l in range(j, T)) - r(T, j) for j in range(1, T)) / (T - 1),
            "LA": sum(r(i, i) for i in range(1, T + 1)) / T}


def test_continual_metrics_equal_the_gem_definitions_on_random_matrices():
    rng = np.random.default_rng(0)
    for T in (2, 3, 5):
        R = rng.uniform(size=(T + 1, T))
        got, want = cm.summary(R.tolist()), _gem(R)
        assert got == pytest.approx(want)


def test_continual_averages_only_like_units():
    """Two accuracy stages and one negative-NLL stage: ACC per unit, never their mean (issue 23)."""
    R = [[0.2, -2.0, 0.3], [0.8, -2.2, 0.3], [0.7, -1.5, 0.35], [0.6, -1.9, 0.9]]
    units = ["accuracy", "neg_nll", "accuracy"]
    got = cm.by_unit(R, units)
    assert "ACC" not in got
    assert got["ACC[accuracy]"] == pytest.approx((0.6 + 0.9) / 2)
    assert got["ACC[neg_nll]"] == pytest.approx(-1.9)
    assert got["BWT[accuracy]"] == pytest.approx(0.6 - 0.8)     # task 3 is the last: no BWT term
    assert got["BWT[neg_nll]"] == pytest.approx(-1.9 - -1.5)
    assert got["FWT[accuracy]"] == pytest.approx(0.35 - 0.3) and got["FWT[neg_nll]"] == pytest.approx(-2.2 - -2.0)
    assert got["LA[accuracy]"] == pytest.approx((0.8 + 0.9) / 2)
    assert cm.by_unit(R, ["accuracy"] * 3) == cm.summary(R)
    assert cm.metric_keys(units)[:2] == ["ACC[accuracy]", "BWT[accuracy]"]
