"""Public tile datasets in their published folder layouts and canonical splits, as the recipe's train/test CSVs.

THUNDER-style protocols (``--protocol thunder-crc``, ``thunder-mhist``) take ``--data-root DIR``, the dataset as
downloaded and unpacked; its layout is read here into ``OUT/data/train.csv`` and ``OUT/data/test.csv``
(``path,label``), which every cell then uses. A root that is missing or laid out otherwise stops the run before
any cell, naming what was expected and the download page.

- ``crc``: NCT-CRC-HE-100K (train) and CRC-VAL-HE-7K (test), each one folder per class (Kather et al. 2019).
- ``mhist``: ``images/`` and ``annotations.csv`` with ``Image Name``, ``Majority Vote Label`` and ``Partition``
  (train/test), as the MHIST release ships them (Wei et al. 2021).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from pathotune_cli.errors import BadInput

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
Rows = list[tuple[Path, str]]


@dataclass(frozen=True)
class Layout:
    """A dataset's published layout: what the root holds, and where to get it."""

    name: str
    expects: str
    download: str


LAYOUTS = {
    "crc": Layout("crc", "NCT-CRC-HE-100K/ and CRC-VAL-HE-7K/, one folder per class each",
                  "https://zenodo.org/records/1214456"),
    "mhist": Layout("mhist", "images/ and annotations.csv (Image Name, Majority Vote Label, Partition)",
                    "https://bmirds.github.io/MHIST/"),
}


def materialise(layout: str, root: Path | None, out: Path) -> tuple[Path, Path]:
    """Read ``root`` in ``layout``'s published layout; write and return ``out/train.csv`` and ``out/test.csv``.

    Raises:
        BadInput: no root given, or one that does not hold the layout (naming what it expects and the download).
    """
    spec = LAYOUTS[layout]
    if root is None or not Path(root).is_dir():
        what = "not given" if root is None else f"{root} is not a folder"
        raise BadInput(f"data missing: --data-root {what} (needs {spec.expects})",
                       f"download it from {spec.download}, unpack it, and pass --data-root DIR")
    train, test = (_crc if layout == "crc" else _mhist)(Path(root), spec)
    out.mkdir(parents=True, exist_ok=True)
    return _write(out / "train.csv", train), _write(out / "test.csv", test)


def _crc(root: Path, spec: Layout) -> tuple[Rows, Rows]:
    return _image_folder(root / "NCT-CRC-HE-100K", spec), _image_folder(root / "CRC-VAL-HE-7K", spec)


def _image_folder(folder: Path, spec: Layout) -> Rows:
    if not folder.is_dir():
        raise BadInput(f"{folder} does not exist (the root needs {spec.expects})",
                       f"download it from {spec.download} and unpack it under --data-root")
    rows = [(image, cls.name) for cls in sorted(p for p in folder.iterdir() if p.is_dir())
            for image in sorted(cls.iterdir()) if image.suffix.lower() in IMAGE_SUFFIXES]
    if not rows:
        raise BadInput(f"{folder} holds no class folders with images", f"unpack the download from {spec.download}")
    return rows


def _mhist(root: Path, spec: Layout) -> tuple[Rows, Rows]:
    table, images = root / "annotations.csv", root / "images"
    if not table.is_file() or not images.is_dir():
        raise BadInput(f"{root} has no annotations.csv and images/ (MHIST's layout: {spec.expects})",
                       f"download MHIST from {spec.download} and unpack images.zip beside annotations.csv")
    with table.open(newline="", encoding="utf-8-sig") as handle:
        records = list(csv.DictReader(handle))
    needed = ("Image Name", "Majority Vote Label", "Partition")
    if not records or any(k not in records[0] for k in needed):
        raise BadInput(f"{table} lacks the columns {', '.join(needed)}", f"use the annotations.csv of {spec.download}")
    split: dict[str, Rows] = {"train": [], "test": []}
    for record in records:
        part = record["Partition"].strip().lower()
        if part not in split:
            raise BadInput(f"{table}: partition '{record['Partition']}' is neither train nor test",
                           f"use the annotations.csv of {spec.download}")
        split[part].append((images / record["Image Name"].strip(), record["Majority Vote Label"].strip()))
    return split["train"], split["test"]


def _write(path: Path, rows: Rows) -> Path:
    from pathotune_cli.files import write_csv

    write_csv(path, ("path", "label"), ((str(p.resolve()), label) for p, label in rows))
    return path
