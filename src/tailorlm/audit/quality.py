"""Text quality check: mangled characters, control characters, empty targets, extreme lengths.

A model fine-tuned on "donâ€™t" learns to write "donâ€™t". These problems survive every parser,
so they are looked for in the text itself:
  - U+FFFD replacement characters: bytes that were not valid in their encoding were replaced
    somewhere upstream (or by our salvage of undecodable lines); the original text is lost.
  - mojibake: UTF-8 bytes decoded as cp1252/Latin-1 ("Ã©" for "é", "â€™" for "’"). A match
    counts only when re-encoding it as cp1252/Latin-1 gives valid UTF-8, which keeps real
    "Ã" or "â" in Portuguese or French text from being flagged.
  - control characters (C0/C1 other than tab and newlines): invisible, often from binary junk;
    bare carriage returns used as line breaks are reported apart, as info.
  - whitespace-only targets: the row trains the model to answer with nothing.
  - extreme lengths: outliers on log character length by median/MAD (robust to the outliers
    themselves), reported as info because long or short rows can be legitimate.
"""
from __future__ import annotations

import math
import re

import numpy as np

from .report import INFO, WARNING, Collector
from .schema import RowSchema

CHECK = "quality"
_CP1252_EXTRA = "€‚ƒ„…†‡ˆ‰Š‹ŒŽ‘’“”•–—˜™š›œžŸ"
_MOJIBAKE = re.compile("[\u00c2-\u00f4][\u0080-\u00bf" + _CP1252_EXTRA + "]{1,3}")
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_BARE_CR = re.compile("\r(?!\n)")
ROBUST_Z = 3.5            # the usual cut for the modified z-score (Iglewicz & Hoaglin)
MIN_ROWS_FOR_LENGTHS = 20  # below this, median/MAD say nothing


def mojibake(text: str) -> list[str]:
    """The mojibake sequences in text, each verified to be UTF-8 read as cp1252 or Latin-1."""
    found = []
    for m in _MOJIBAKE.finditer(text):
        s = m.group()
        for codec in ("cp1252", "latin-1"):
            try:
                fixed = s.encode(codec).decode("utf-8")
            except (UnicodeEncodeError, UnicodeDecodeError):
                continue
            if len(fixed) == 1 and ord(fixed) >= 0x80:
                found.append(s)
                break
    return found


def check_quality(rows: list[dict], layout: RowSchema) -> tuple[list, dict]:
    col = Collector()
    stats = {"replacement_char": 0, "mojibake": 0, "control_chars": 0, "mangled_rows": 0,
             "whitespace_targets": 0, "bare_cr": 0}
    texts = []
    for row in rows:
        text = layout.content(row)
        texts.append(text)
        mangled = False
        if "\ufffd" in text:
            stats["replacement_char"] += 1
            mangled = True
            how = "undecodable bytes (line salvaged with U+FFFD)" if row.get("_salvaged") \
                else "U+FFFD replacement characters"
            col.add(WARNING, CHECK, f"mangled characters: {how}", row, _around(text, "\ufffd"))
        moj = mojibake(text)
        if moj:
            stats["mojibake"] += 1
            mangled = True
            col.add(WARNING, CHECK, "mangled characters: mojibake (UTF-8 read as cp1252/Latin-1)",
                    row, _around(text, moj[0]), sequence=moj[0],
                    should_be=moj[0].encode("cp1252", "ignore").decode("utf-8", "replace"))
        stats["mangled_rows"] += mangled
        ctl = _CONTROL.search(text)
        if ctl:
            stats["control_chars"] += 1
            col.add(WARNING, CHECK, "control characters", row, _around(text, ctl.group()),
                    char=f"U+{ord(ctl.group()):04X}")
        if "\r" in text and _BARE_CR.search(text):
            # old Mac line breaks: harmless to most tokenizers but inconsistent with "\n" rows
            stats["bare_cr"] += 1
            col.add(INFO, CHECK, "bare carriage returns (\\r) used as line breaks; normalise to \\n",
                    row, _around(text, "\r"))
        target = layout.target(row)
        if target and not target.strip():
            stats["whitespace_targets"] += 1
            col.add(WARNING, CHECK, "whitespace-only target: trains the model to say nothing", row,
                    repr(target))
    stats["length_chars"] = _length_outliers(rows, texts, col)
    return col.findings(), stats


def _length_outliers(rows: list[dict], texts: list[str], col: Collector) -> dict:
    lengths = [len(t) for t in texts]
    if not lengths:
        return {}
    arr = np.asarray(lengths, dtype=float)
    desc = {"min": int(arr.min()), "median": float(np.median(arr)),
            "p95": float(np.percentile(arr, 95)), "max": int(arr.max())}
    if len(arr) < MIN_ROWS_FOR_LENGTHS:
        return desc
    # log scale: text lengths are skewed, and "10x the median" and "a tenth of it" should be
    # equally unusual
    logs = np.log1p(arr)
    med = np.median(logs)
    mad = np.median(np.abs(logs - med))
    if mad == 0:
        return desc
    z = (logs - med) / (1.4826 * mad)
    desc["short_outliers"] = int((z < -ROBUST_Z).sum())
    desc["long_outliers"] = int((z > ROBUST_Z).sum())
    lo = math.expm1(med - ROBUST_Z * 1.4826 * mad)
    hi = math.expm1(med + ROBUST_Z * 1.4826 * mad)
    for i in np.flatnonzero(z < -ROBUST_Z):
        col.add(INFO, CHECK, f"very short (< {lo:.0f} chars; median {desc['median']:.0f})",
                rows[i], texts[i], chars=lengths[i])
    for i in np.flatnonzero(z > ROBUST_Z):
        col.add(INFO, CHECK, f"very long (> {hi:.0f} chars; median {desc['median']:.0f})",
                rows[i], None, chars=lengths[i])
    return desc


def _around(text: str, needle: str, width: int = 60) -> str:
    i = text.find(needle)
    lo = max(0, i - width)
    return ("…" if lo else "") + text[lo:i + len(needle) + width]
