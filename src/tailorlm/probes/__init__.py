"""Responsible-tuning probes: what tuning did to bias, memorisation (privacy) and the model's reasons.

Every probe scores the base model and the tuned model on the same inputs (`pair.base_view`: the
method's adapters switched off, or the base folder for full fine-tuning) and reports base, tuned and
the change with a paired bootstrap confidence interval (`stats`). A probe's results go to
RUN/probes/NAME.json (`store`), which `tailorlm report` draws.
"""
