"""Forgetting: measure it against the base model during training, and reduce it."""
