"""THUNDER-style protocols read public datasets in their published layouts and canonical splits (tested on small
generated replicas of each layout), and stop before any cell, naming the download page, when the data is absent."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.accuracy.__main__ import main  # noqa: E402
from benchmarks.accuracy.layouts import materialise  # noqa: E402


def _image(path: Path, seed: int, size: int = 32) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def _crc_replica(root: Path) -> Path:
    for i, (folder, cls) in enumerate((f, c) for f in ("NCT-CRC-HE-100K", "CRC-VAL-HE-7K") for c in ("ADI", "TUM")):
        for j in range(3):
            _image(root / folder / cls / f"{cls}-{j}.tif", 10 * i + j)
    return root


def _mhist_replica(root: Path) -> Path:
    rows = []
    for i in range(12):
        name, label, part = f"MHIST_{i:03d}.png", ("HP", "SSA")[i % 2], "test" if i >= 8 else "train"
        _image(root / "images" / name, i)
        rows.append({"Image Name": name, "Majority Vote Label": label,
                     "Number of Annotators who Selected SSA (Out of 7)": 3, "Partition": part})
    with (root / "annotations.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


def _read(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_crc_layout_reads_nct_crc_he_100k_as_train_and_crc_val_he_7k_as_test(tmp_path: Path) -> None:
    train, test = materialise("crc", _crc_replica(tmp_path / "crc"), tmp_path / "data")
    rows_train, rows_test = _read(train), _read(test)
    assert len(rows_train) == len(rows_test) == 6
    assert all("NCT-CRC-HE-100K" in r["path"] for r in rows_train) and all("CRC-VAL-HE-7K" in r["path"]
                                                                          for r in rows_test)
    assert {r["label"] for r in rows_train} == {"ADI", "TUM"}


def test_mhist_layout_follows_its_partition_column(tmp_path: Path) -> None:
    train, test = materialise("mhist", _mhist_replica(tmp_path / "mhist"), tmp_path / "data")
    assert [Path(r["path"]).name for r in _read(test)] == [f"MHIST_{i:03d}.png" for i in range(8, 12)]
    assert len(_read(train)) == 8 and {r["label"] for r in _read(train)} == {"HP", "SSA"}


@pytest.mark.parametrize(("protocol", "page"), [("thunder-mhist", "https://bmirds.github.io/MHIST/"),
                                                ("thunder-crc", "https://zenodo.org/records/1214456")])
def test_a_thunder_protocol_without_its_data_stops_naming_the_download(
    protocol: str, page: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["--protocol", protocol, "--data-root", str(tmp_path / "absent"), "--out", str(tmp_path / "A")])
    assert code == 2
    err = capsys.readouterr().err
    assert "data missing: --data-root" in err and page in err
    assert not (tmp_path / "A" / "runs").exists()


def test_thunder_mhist_runs_a_cell_on_the_replica(tmp_path: Path) -> None:
    from testdata import tiny_preset

    preset = tmp_path / "tiny-test.yaml"
    data = tiny_preset().model_dump(mode="json")
    data.pop("name")
    preset.write_text(yaml.safe_dump(data))
    out = tmp_path / "A"
    code = main(["--protocol", "thunder-mhist", "--data-root", str(_mhist_replica(tmp_path / "mhist")),
                 "--backbones", str(preset), "--methods", "prototypes,knn", "--shots", "all", "--seeds", "1",
                 "--bootstrap", "20", "--precision", "fp32", "--device", "cpu", "--out", str(out)])
    assert code == 0
    assert [r["method"] for r in _read(out / "accuracy.csv")] == ["prototypes", "knn"]
    assert (out / "data" / "test.csv").is_file()
