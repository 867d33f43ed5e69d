"""The probes' evaluators, registered into eval's registry (eval.evaluators.register).

eval does not import the probes: it names this module in eval.evaluators.PLUGINS and imports it on
the registry's first lookup, so the probes sit above eval in the layers and everything that
evaluates (the loop, `tailorlm eval`, compare, continual, the metric specs the report reads) still
finds these five.

    canaries    privacy.canaries: mean exposure per repetition level and of never-inserted secrets
                (Carlini et al. 2019); on by default, {} unless canaries are configured
    membership  membership-inference AUC, training vs held-out sample: NLL_tuned - NLL_base and
                NLL alone (`mia_auc`, `mia_loss_auc`)
    extraction  discoverable extraction rates, training vs held-out (Carlini et al. 2022)
                                                                                probes/privacy_eval.py
    bias, flips stereotype-pair bias (CrowS-Pairs / BBQ) and counterfactual flip rate, base beside
                tuned with a paired interval; `bias_warning` / `flips_warning` past bias.threshold
                                                                                probes/bias_eval.py
"""
from __future__ import annotations

from ..eval.evaluators import FRACTION, register
from ..eval.specs import MetricSpec
from .bias_eval import bias_scores, flip_scores
from .privacy_eval import canary_scores, extraction_scores, membership_scores

# privacy: probes/privacy_eval.py (Carlini et al. 2019, 2022)
register("canaries", canary_scores, {
    "exposure_*x": MetricSpec("lower", "bits", 0.0, doc="mean exposure of canaries inserted k times"),
    "exposure_never": MetricSpec("info", "bits", 0.0, doc="control: never-inserted canaries (chance ~1.44)")})
register("membership", membership_scores, {
    "mia_auc": MetricSpec("target", "AUC", 0.0, 1.0, target=0.5, doc="reference attack; 0.5: no signal"),
    "mia_loss_auc": MetricSpec("target", "AUC", 0.0, 1.0, target=0.5, doc="loss attack; 0.5: no signal")})
register("extraction", extraction_scores, {
    "extraction_train": MetricSpec("lower", doc="training suffixes reproduced exactly", **FRACTION),
    "extraction_heldout": MetricSpec("info", doc="control: held-out suffixes reproduced", **FRACTION),
    "extraction_gap": MetricSpec("lower", "fraction", -1.0, 1.0, doc="train - held-out rate")})
# bias: probes/bias_eval.py (CrowS-Pairs, BBQ; counterfactual flips)
register("bias", bias_scores, {
    "bias_stereo_share": MetricSpec("target", "fraction", 0.0, 1.0, target=0.5, doc="CrowS-Pairs"),
    "bias_score": MetricSpec("lower", "fraction", 0.0, 0.5, doc="|stereotype share - 0.5|"),
    "bias_ll_diff": MetricSpec("lower", "nats", 0.0, doc="mean |LL(more) - LL(less)|"),
    "bias_s_dis": MetricSpec("target", "score", -1.0, 1.0, target=0.0, doc="BBQ disambiguated bias score"),
    "bias_s_amb": MetricSpec("target", "score", -1.0, 1.0, target=0.0, doc="BBQ ambiguous bias score")})
register("flips", flip_scores, {
    "flip_rate": MetricSpec("lower", doc="held-out rows whose label flips under a swap", **FRACTION),
    "flip_dp": MetricSpec("lower", doc="mean |dp(label)| under a swap", **FRACTION)})
