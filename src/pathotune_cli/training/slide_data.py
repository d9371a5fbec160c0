"""Labelled slides: a slides CSV matched to a slide-level task, split by patient, or dealt into folds.

Two layouts are read: ours, ``slide,label[,patient][,split]`` (slide paths relative to the CSV's folder), and
CLAM's ``case_id,slide_id,label``, where ``slide_id`` is a file stem found beside the CSV or in ``--features``.
Rules: every slide of a patient is in one split (a patient in two given splits is refused), a patient column
defaults to one patient per slide, and every bad row is named in its own line.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pathotune_cli.config.schema import TaskPreset
from pathotune_cli.errors import BadInput
from pathotune_cli.formats import MPP_COLUMNS, SLIDE_COLUMNS, SLIDE_SUFFIXES, features_path
from pathotune_cli.training.data import SPLITS, class_matcher

PATIENT_COLUMNS = ("patient", "case_id", "patient_id", "case")


@dataclass(frozen=True)
class SlideItem:
    """One labelled slide."""

    slide_id: str
    """The slide's stem: names its outputs and its features file."""
    path: Path | None
    """The slide file, or None where only its features are given."""
    label: int
    patient: str
    split: str | None = None
    mpp: float | None = None
    """The CSV's mpp for the slide (None: the file's, or ``--default-mpp``)."""


@dataclass(frozen=True)
class SlideSet:
    """Labelled slides of a task, in CSV order."""

    items: tuple[SlideItem, ...]
    class_names: tuple[str, ...]
    source: str
    notes: tuple[str, ...] = field(default_factory=tuple)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def labels(self) -> np.ndarray:
        """Class index per slide."""
        return np.array([item.label for item in self.items], dtype=np.int64)

    def counts(self) -> dict[str, int]:
        """Slides per class, every class listed."""
        found = Counter(item.label for item in self.items)
        return {name: int(found.get(i, 0)) for i, name in enumerate(self.class_names)}

    def subset(self, index: np.ndarray | list[int]) -> SlideSet:
        """The slides at ``index``."""
        return SlideSet(tuple(self.items[int(i)] for i in index), self.class_names, self.source)


def read_slide_table(
    path: str | Path, task: TaskPreset, features: str | Path | None = None, warn: Callable[[str], None] | None = None
) -> SlideSet:
    """Read and check a slides CSV for ``task``.

    Raises:
        BadInput: no such CSV, no slide or label column, or bad rows (a missing slide, an unknown label, a bad
            split, a patient in two splits): each bad row is sent to ``warn`` and the error names the first.
    """
    path = Path(path)
    rows = _rows(path)
    columns = {c.strip().lower(): c for c in rows[0]} if rows else {}
    slide_key = next((columns[c] for c in SLIDE_COLUMNS if c in columns), None)
    if slide_key is None or "label" not in columns:
        raise BadInput(
            f"{path.name}: needs a slide column and a label column",
            "the first line must name them: slide,label[,patient][,split] (or CLAM's case_id,slide_id,label)",
        )
    patient_key = next((columns[c] for c in PATIENT_COLUMNS if c in columns), None)
    match = class_matcher(task)
    items, problems = [], []
    for line, row in enumerate(rows, start=2):
        item, problem = _item(row, line, path, slide_key, columns, patient_key, match, task, features)
        if problem:
            problems.append(problem)
        elif item is not None:
            items.append(item)
    problems += _patients_in_two_splits(items, path)
    if problems:
        for problem in problems:
            (warn or (lambda text: None))(problem)
        more = f" (and {len(problems) - 1} more bad rows)" if len(problems) > 1 else ""
        raise BadInput(f"{problems[0]}{more}", "fix the slides CSV")
    if not items:
        raise BadInput(f"{path.name}: lists no slides", "add rows of slide,label")
    return SlideSet(tuple(items), tuple(task.class_names), str(path))


def split_slides(data: SlideSet, val_fraction: float, seed: int) -> tuple[SlideSet, SlideSet | None, SlideSet | None]:
    """(train, validation or None, test or None): the CSV's ``split`` column, else a patient-grouped stratified
    seeded ``val_fraction`` of the slides (test only from the column)."""
    splits = [item.split for item in data.items]
    index = {s: [i for i, v in enumerate(splits) if v == s] for s in SPLITS}
    test = data.subset(index["test"]) if index["test"] else None
    if index["val"]:
        train = [i for i, v in enumerate(splits) if v in (None, "train")]
        return data.subset(train), data.subset(index["val"]), test
    candidates = [i for i, v in enumerate(splits) if v != "test"]
    if val_fraction <= 0:
        return data.subset(candidates), None, test
    pool = data.subset(candidates)
    folds = max(2, round(1 / val_fraction))
    val_local = patient_folds(pool, folds, seed)[0]
    train_local = sorted(set(range(len(pool))) - set(val_local))
    return pool.subset(train_local), (pool.subset(val_local) if val_local else None), test


def patient_folds(data: SlideSet, k: int, seed: int) -> list[list[int]]:
    """The slide indices of ``k`` validation folds: every patient in exactly one fold, patients of each class
    (a patient's most common label) dealt round-robin in a seeded order, so folds are stratified."""
    by_patient: dict[str, list[int]] = {}
    for i, item in enumerate(data.items):
        by_patient.setdefault(item.patient, []).append(i)
    rng = np.random.default_rng(seed)
    folds: list[list[int]] = [[] for _ in range(k)]
    patients_of: dict[int, list[str]] = {}
    for patient, members in sorted(by_patient.items()):
        label = Counter(data.items[i].label for i in members).most_common(1)[0][0]
        patients_of.setdefault(label, []).append(patient)
    turn = 0
    for label in sorted(patients_of):
        order = patients_of[label]
        for p in rng.permutation(len(order)):
            folds[turn % k].extend(by_patient[order[p]])
            turn += 1
    return [sorted(f) for f in folds]


def _rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise BadInput(f"{path}: no such slides CSV", "pass --data slides.csv (slide,label[,patient][,split])")
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            return list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise BadInput(f"cannot read slides CSV {path}: {exc}", "pass a UTF-8 CSV") from None


def _item(row: dict[str, str], line: int, path: Path, slide_key: str, columns: dict[str, str],
          patient_key: str | None, match: Callable[[str], int | None], task: TaskPreset,
          features: str | Path | None) -> tuple[SlideItem | None, str | None]:
    name = (row.get(slide_key) or "").strip()
    if not name:
        return None, None
    label = match(row.get(columns["label"]) or "")
    if label is None:
        return None, (f"{path.name} line {line}: label '{row.get(columns['label'])}' is not a class of task "
                      f"'{task.name}' (classes: {', '.join(task.class_names)})")
    split = (row.get(columns.get("split", ""), "") or "").strip().lower() or None
    if split is not None and split not in SPLITS:
        return None, f"{path.name} line {line}: split '{split}' is not one of {', '.join(SPLITS)}"
    slide, stem = _locate(name, path.parent, features)
    if slide is None and (features is None or features_path(features, stem) is None):
        where = f" (nor its features in {features})" if features else ""
        return None, f"{path.name} line {line}: slide {name} does not exist{where}"
    patient = (row.get(patient_key) or "").strip() if patient_key else ""
    mpp_key = next((columns[c] for c in MPP_COLUMNS if c in columns), None)
    text = (row.get(mpp_key) or "").strip() if mpp_key else ""
    try:
        mpp = float(text) if text else None
    except ValueError:
        return None, f"{path.name} line {line}: mpp {text!r} is not a number"
    return SlideItem(stem, slide, label, patient or f"slide:{stem}", split, mpp), None


def _locate(name: str, folder: Path, features: str | Path | None) -> tuple[Path | None, str]:
    """The slide file for a CSV entry (a path, or a CLAM stem with any slide suffix), and its stem."""
    given = Path(name).expanduser()
    candidate = given if given.is_absolute() else folder / given
    if candidate.is_file():
        return candidate, candidate.stem
    for suffix in SLIDE_SUFFIXES:
        if (folder / f"{name}{suffix}").is_file():
            return folder / f"{name}{suffix}", name
    stem = given.stem if given.suffix.lower() in SLIDE_SUFFIXES else given.name
    return None, stem


def _patients_in_two_splits(items: list[SlideItem], path: Path) -> list[str]:
    seen: dict[str, str | None] = {}
    problems = []
    for item in items:
        previous = seen.setdefault(item.patient, item.split)
        if (previous or "train") != (item.split or "train") and not item.patient.startswith("slide:"):
            problems.append(f"{path.name}: patient {item.patient} is in both {previous or 'train'} and "
                            f"{item.split or 'train'}; all of a patient's slides belong in one split")
            seen[item.patient] = item.split
    return problems
