"""Labelled tiles: an ImageFolder tree or a CSV, matched to a task's classes, split, sampled and decoded.

Documented rules: files whose extension is not an image's (``Thumbs.db``, ``notes.txt``) are skipped with a
warning; a file with an image extension that does not decode is refused, naming the file, because a broken
tile in a labelled set is a data problem the lab should see.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from pathotune_cli.config.schema import TaskPreset, class_matcher
from pathotune_cli.errors import BadInput
from pathotune_cli.formats import TILE_IMAGE_SUFFIXES as IMAGE_SUFFIXES

SPLITS = ("train", "val", "test")


@dataclass
class LabelledSet:
    """Image paths with class indices in the task's order, plus what was skipped and why."""

    paths: list[Path]
    labels: np.ndarray
    splits: list[str | None]
    class_names: list[str]
    source: str
    skipped: list[str] = field(default_factory=list)
    groups: list[str] | None = None
    """The slide (or patient) each sample came from, where known: validation then takes whole groups, so no
    slide gives samples to both training and validation."""
    rows: np.ndarray | None = None
    """Tiles read from slides: each sample's row in ``table`` (``paths`` then only name the tiles)."""
    table: Any = None
    """Tiles read from slides: the table they were listed in (``wsi.labels_csv.SlideTiles``)."""

    def __len__(self) -> int:
        return len(self.paths)

    def counts(self) -> dict[str, int]:
        """Images per class, every class of the task listed."""
        c = Counter(self.labels.tolist())
        return {name: int(c.get(i, 0)) for i, name in enumerate(self.class_names)}

    def subset(self, index: np.ndarray) -> LabelledSet:
        """The samples at ``index``."""
        idx = [int(i) for i in index]
        return replace(
            self, paths=[self.paths[i] for i in idx], labels=self.labels[idx], splits=[self.splits[i] for i in idx],
            groups=[self.groups[i] for i in idx] if self.groups is not None else None,
            rows=self.rows[idx] if self.rows is not None else None,
        )


def discover(
    data: str | Path, task: TaskPreset, warn: Callable[[str], None] | None = None, option: str = "--data"
) -> LabelledSet:
    """Find labelled images in an ImageFolder tree or a CSV (``path,label[,split]``).

    Args:
        data: The folder or CSV.
        task: Its classes.
        warn: Receives warnings (skipped files, folders merged into one class).
        option: The option that named ``data`` (``--data``, ``--val-data``), for the messages.

    Raises:
        BadInput: the data is missing or empty, a class folder has no images, or a label is not a class.
    """
    path = Path(data).expanduser()
    if not path.exists():
        raise BadInput(f"{option} {path} does not exist", "pass an ImageFolder tree or a CSV with path,label[,split]")
    found = _from_csv(path, task) if path.is_file() else _from_folder(path, task, warn)
    if warn is not None and found.skipped:
        warn(f"skipped {len(found.skipped)} non-image file(s) in {path}, e.g. {found.skipped[0]}")
    return found


def require_classes(data: LabelledSet, at_least: int = 2) -> None:
    """Tuning needs at least two classes with images."""
    present = [n for n, c in data.counts().items() if c > 0]
    if len(present) < at_least:
        raise BadInput(
            f"{data.source} has images of only {len(present)} class(es) ({', '.join(present) or 'none'})",
            f"a classifier needs at least {at_least} classes with images",
        )


def split_train_val(
    data: LabelledSet, val_fraction: float, seed: int, val_data: LabelledSet | None = None
) -> tuple[LabelledSet, LabelledSet | None]:
    """The validation set: given, or the CSV's ``split`` column, or a seeded fraction.

    The fraction is stratified by class, or, where the samples have ``groups`` (slides, patients), made of whole
    groups (``split_by_group``), so no group gives samples to both sides.
    """
    splits = np.array([s or "" for s in data.splits])
    train_mask = splits != "test"
    if val_data is not None:
        return data.subset(np.flatnonzero(train_mask & (splits != "val"))), val_data
    if (splits == "val").any():
        return data.subset(np.flatnonzero(splits == "train")), data.subset(np.flatnonzero(splits == "val"))
    candidates = np.flatnonzero(train_mask)
    if val_fraction <= 0:
        return data.subset(candidates), None
    if data.groups is not None:
        return split_by_group(data, candidates, val_fraction, seed)
    rng = np.random.default_rng(seed)
    val_idx: list[int] = []
    for cls in np.unique(data.labels[candidates]):
        members = candidates[data.labels[candidates] == cls]
        members = members[rng.permutation(len(members))]
        n_val = int(round(len(members) * val_fraction))
        n_val = min(n_val, len(members) - 1) if len(members) > 1 else 0
        val_idx.extend(members[:n_val].tolist())
    val = np.array(sorted(val_idx), dtype=int)
    train = np.setdiff1d(candidates, val)
    return data.subset(train), (data.subset(val) if len(val) else None)


def split_by_group(
    data: LabelledSet, candidates: np.ndarray, val_fraction: float, seed: int, tries: int = 64
) -> tuple[LabelledSet, LabelledSet | None]:
    """Validation made of whole groups holding about ``val_fraction`` of the samples; None with one group.

    Of ``tries`` seeded orders of the groups, each filled into validation until it holds the fraction (at least
    one group, never all), the one kept covers the most classes on both sides, then comes closest to the fraction.
    """
    assert data.groups is not None
    groups = np.array([data.groups[int(i)] for i in candidates])
    names = sorted(set(groups.tolist()))
    if len(names) < 2:
        return data.subset(candidates), None
    rng = np.random.default_rng(seed)
    target = val_fraction * len(candidates)
    best: tuple[tuple[int, int, float], list[str]] | None = None
    for _ in range(tries):
        order = [names[i] for i in rng.permutation(len(names))]
        chosen: list[str] = []
        count = 0
        for name in order[:-1]:
            if chosen and count >= target:
                break
            chosen.append(name)
            count += int((groups == name).sum())
        in_val = np.isin(groups, chosen)
        labels = data.labels[candidates]
        score = (len(set(labels[in_val].tolist())), len(set(labels[~in_val].tolist())), -abs(count - target))
        if best is None or score > best[0]:
            best = (score, chosen)
    assert best is not None
    in_val = np.isin(groups, best[1])
    return data.subset(candidates[~in_val]), data.subset(candidates[in_val])


def sample_shots(
    data: LabelledSet, shots: int | None, seed: int, warn: Callable[[str], None] | None = None
) -> LabelledSet:
    """Few-shot: at most ``shots`` images per class, chosen with the seed.

    A class with fewer training images than ``shots`` keeps all it has, and ``warn`` says which and how many.
    """
    if shots is None:
        return data
    rng = np.random.default_rng(seed + 7919)
    keep: list[int] = []
    short: list[str] = []
    for cls in np.unique(data.labels):
        members = np.flatnonzero(data.labels == cls)
        if len(members) < shots:
            short.append(f"'{data.class_names[int(cls)]}' has {len(members)}")
        keep.extend(rng.choice(members, size=min(shots, len(members)), replace=False).tolist())
    if short and warn is not None:
        warn(f"--shots {shots} is more than some classes have for training: {', '.join(short)}; "
             "each of them uses all its images")
    return data.subset(np.array(sorted(keep), dtype=int))


def _from_folder(root: Path, task: TaskPreset, warn: Callable[[str], None] | None = None) -> LabelledSet:
    match = class_matcher(task)
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise BadInput(f"data folder {root} has no class folders", "put one folder per class, each holding its images")
    paths: list[Path] = []
    labels: list[int] = []
    skipped: list[str] = []
    by_class: dict[int, list[str]] = {}
    for folder in folders:
        index = match(folder.name)
        if index is not None:
            by_class.setdefault(index, []).append(folder.name)
        if index is None:
            raise BadInput(
                f"class folder '{folder.name}' in {root} is not a class of task '{task.name}' "
                f"(classes: {', '.join(task.class_names)})",
                "rename the folder, or add it as an alias in your task preset",
            )
        files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
        broken = next((p for p in folder.rglob("*") if p.is_symlink() and not p.exists()), None)
        if broken is not None:
            raise BadInput(f"{broken} is a link to a file that does not exist", "remove the link or restore its target")
        images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
        skipped.extend(str(p) for p in files if p.suffix.lower() not in IMAGE_SUFFIXES)
        if not images:
            raise BadInput(
                f"class folder {folder} has no images ({', '.join(IMAGE_SUFFIXES)})",
                "add its images or remove the folder",
            )
        paths.extend(images)
        labels.extend([index] * len(images))
    for index, names in by_class.items():
        if len(names) > 1 and warn is not None:
            shown, every = " and ".join(f"'{n}'" for n in names), "both" if len(names) == 2 else "all"
            warn(f"folders {shown} in {root} {every} map to class '{task.class_names[index]}'; their images are "
                 "merged into it (rename a folder if they are different classes)")
    return LabelledSet(
        paths, np.array(labels, dtype=np.int64), [None] * len(paths), task.class_names, str(root), skipped
    )


def _from_csv(path: Path, task: TaskPreset) -> LabelledSet:
    match = class_matcher(task)
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise BadInput(
            f"cannot read data CSV {path}: {exc}",
            "pass a UTF-8 CSV with columns path,label[,split]",
        ) from None
    if not rows:
        raise BadInput(f"data CSV {path} lists no images", "add a header row path,label[,split] and one row per image")
    missing = [c for c in ("path", "label") if c not in rows[0]]
    if missing:
        columns = ", ".join(repr(c) for c in rows[0] if c is not None) or "none"
        raise BadInput(
            f"data CSV {path} has no {' or '.join(repr(c) for c in missing)} column (its header names {columns})",
            "name the columns path,label[,split] in the first line",
        )
    paths: list[Path] = []
    labels: list[int] = []
    splits: list[str | None] = []
    skipped: list[str] = []
    for line, row in enumerate(rows, start=2):
        if not any(isinstance(v, str) and v.strip() for v in row.values()):
            continue  # a blank row (",,")
        raw, label = (row.get("path") or "").strip(), (row.get("label") or "").strip()
        if not raw:
            raise BadInput(f"{path} line {line}: no image path", "fill in the path column, or remove the row")
        file = Path(raw).expanduser()
        file = file if file.is_absolute() else path.parent / file
        index = match(label)
        if index is None:
            raise BadInput(
                f"{path} line {line}: label '{label}' is not a class of task '{task.name}' "
                f"(classes: {', '.join(task.class_names)})",
                "fix the label, or add it as an alias in your task preset",
            )
        split = (row.get("split") or "").strip().lower() or None
        if split is not None and split not in SPLITS:
            raise BadInput(
                f"{path} line {line}: split '{split}' is not one of {', '.join(SPLITS)}",
                "fix the split column",
            )
        if not file.is_file():
            raise BadInput(
                f"{path} line {line}: image {file} does not exist",
                "fix the path (relative paths start at the CSV's folder)",
            )
        if file.suffix.lower() not in IMAGE_SUFFIXES:
            skipped.append(str(file))
            continue
        paths.append(file)
        labels.append(index)
        splits.append(split)
    if not paths:
        raise BadInput(f"data CSV {path} lists no images", "add rows of path,label")
    return LabelledSet(paths, np.array(labels, dtype=np.int64), splits, task.class_names, str(path), skipped)
