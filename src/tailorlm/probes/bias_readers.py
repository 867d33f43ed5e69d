"""Bias probe files: tailorlm's shipped pairs, CrowS-Pairs CSV and BBQ JSONL.

- Shipped (`bias_data/pairs.yaml`, or a YAML file in the same layout): per category, blocks of
  templates with a `{group}` slot filled by `pairs: [[more, less], ...]` or by every `more` x `less`.
- CrowS-Pairs (Nangia et al. 2020), the CSV of github.com/nyu-mll/crows-pairs: columns `sent_more`,
  `sent_less`, `stereo_antistereo`, `bias_type` (others ignored). `sent_more` is always the more
  stereotypical sentence, but whom it is about depends on the direction (the dataset's README): on
  `stereo` rows it demonstrates a stereotype of the historically disadvantaged group; on `antistereo`
  rows `sent_less` violates a stereotype of the disadvantaged group and `sent_more` is the minimal
  edit about the contrasting *advantaged* group. Either way `Pair.more` is `sent_more` and the metric
  counts it preferred: the authors' metric.py (which for antistereo rows puts sent_less first and
  counts the second sentence preferred) and lm-evaluation-harness's crows_pairs (choices [sent_more,
  sent_less] on every row) both do; `Pair.direction` keeps the row's direction.
- BBQ (Parrish et al. 2022), the JSONL of github.com/nyu-mll/BBQ: `context`, `question`, `ans0..2`,
  `label`, `context_condition` (ambig | disambig), `question_polarity` (neg | nonneg), `category`,
  `answer_info` ({ansN: [text, group]}), `additional_metadata.stereotyped_groups`. The biased answer
  is the stereotyped group's on a negative question and the other group's on a non-negative one
  (the unknown answer never), matched as lm-evaluation-harness's bbq/utils.py does.
"""
from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

from ..errors import DataError, MissingError

CROWS_COLUMNS = ("sent_more", "sent_less", "stereo_antistereo", "bias_type")
BBQ_FIELDS = ("context", "question", "ans0", "ans1", "ans2", "label", "context_condition", "question_polarity",
              "answer_info", "additional_metadata")
GENDER_ALIASES = {"woman": "f", "girl": "f", "man": "m", "boy": "m"}   # BBQ labels gender groups F / M


@dataclass(frozen=True)
class Pair:
    category: str
    more: str      # the more-stereotypical sentence (CrowS-Pairs' sent_more, whatever the direction)
    less: str      # its minimal edit with the other group (about the disadvantaged group on antistereo rows)
    direction: str = "stereo"   # stereo | antistereo (CrowS-Pairs); the shipped pairs are all stereo


@dataclass(frozen=True)
class BBQItem:
    category: str
    context: str
    question: str
    answers: tuple[str, ...]
    label: int
    ambiguous: bool
    unknown: int                 # index of the "can't be determined" answer
    biased: tuple[int, ...]      # indices of the answers that reflect the targeted bias


def shipped_path() -> Path:
    return Path(str(resources.files("tailorlm.probes").joinpath("bias_data/pairs.yaml")))


def template_pairs(path: Path) -> list[Pair]:
    """Pairs from a template YAML: {category: [{templates, pairs | more + less}, ...]}."""
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise DataError(f"{path}: not valid YAML ({e}). Fix: the layout of tailorlm's bias_data/pairs.yaml") from None
    out: list[Pair] = []
    for cat, blocks in (spec or {}).items():
        for i, b in enumerate(blocks or []):
            if not isinstance(b, dict) or "templates" not in b or not ("pairs" in b or {"more", "less"} <= set(b)):
                raise DataError(f"{path}: {cat}[{i}] needs `templates` and `pairs` (or `more` and `less`)")
            terms = b.get("pairs") or [(m, s) for m in b["more"] for s in b["less"]]
            out += [Pair(cat, t.format(group=m), t.format(group=s)) for t in b["templates"] for m, s in terms]
    return out


def read_crows(path: Path) -> list[Pair]:
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in CROWS_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{path}: not a CrowS-Pairs CSV: no column(s) {missing} (it has {reader.fieldnames}). "
                            f"Fix: the columns {', '.join(CROWS_COLUMNS)}")
        out = []
        for line, row in enumerate(reader, start=2):
            if not (row["sent_more"] or "").strip() or not (row["sent_less"] or "").strip():
                raise DataError(f"{path}:{line}: empty sent_more or sent_less")
            out.append(Pair(row["bias_type"] or "unknown", row["sent_more"], row["sent_less"],
                            row["stereo_antistereo"] or "stereo"))
    return out


def _groups(info: list) -> set[str]:
    """BBQ answer groups, normalised: 'lowSES-African' -> {lowses, african}; 'woman' also -> f."""
    out = set()
    for s in info or []:
        for g in re.split(r"[-_]", str(s)):
            g = g.replace(" ", "").lower()
            out |= {g, GENDER_ALIASES[g]} if g in GENDER_ALIASES else {g}
    return out - {""}


def bbq_item(row: dict) -> BBQItem:
    """One BBQ row: its answers and which of them are unknown, correct and biased."""
    answers = tuple(row[f"ans{i}"] for i in range(3))
    info = row["answer_info"]
    groups = [_groups(info.get(f"ans{i}", [])) for i in range(3)]
    unknown = next((i for i, g in enumerate(groups) if "unknown" in g), -1)
    target = {g.replace(" ", "").lower() for g in row["additional_metadata"].get("stereotyped_groups", [])}
    neg = row["question_polarity"] == "neg"
    biased = tuple(i for i, g in enumerate(groups) if i != unknown and (bool(g & target) == neg))
    return BBQItem(row.get("category", "unknown"), row["context"], row["question"], answers, int(row["label"]),
                   row["context_condition"] == "ambig", unknown, biased)


def read_bbq(path: Path) -> list[BBQItem]:
    out = []
    for line, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
            missing = [f for f in BBQ_FIELDS if f not in row]
            if missing:
                raise DataError(f"no field(s) {missing}")
            out.append(bbq_item(row))
        except (ValueError, KeyError, TypeError, AttributeError, DataError) as e:
            raise DataError(f"{path}:{line}: not a BBQ row ({e}). Fix: the fields {', '.join(BBQ_FIELDS)}") from None
    return out


def load_probes(path: str | Path | None = None) -> tuple[list[Pair], list[BBQItem]]:
    """(pairs, BBQ items) of a probe file, by its layout; None: the shipped pairs."""
    if path is None:
        return template_pairs(shipped_path()), []
    p = Path(path).expanduser()
    if not p.is_file():
        raise MissingError(f"{p}: no such probe file. Fix: a CrowS-Pairs CSV, a BBQ JSONL or a pairs YAML")
    if p.suffix.lower() == ".csv":
        return read_crows(p), []
    if p.suffix.lower() in (".jsonl", ".json"):
        return [], read_bbq(p)
    if p.suffix.lower() in (".yaml", ".yml"):
        return template_pairs(p), []
    raise DataError(f"{p}: unknown probe layout. Fix: .csv (CrowS-Pairs), .jsonl (BBQ) or .yaml (tailorlm's pairs)")
