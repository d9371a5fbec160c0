"""`tune` and `eval --data labels.csv`: tiles read from slides, no tile image on disk, split by slide."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from qupath_files import cmu_annotations
from typer.testing import CliRunner

from pathotune_cli.cli.app import app
from pathotune_cli.config import load_task_preset
from pathotune_cli.errors import BadInput
from pathotune_cli.training.data import split_train_val
from pathotune_cli.wsi.labels import label_tiles, read_label_regions
from pathotune_cli.wsi.labels_csv import labelled_rows, write_labels_csv
from pathotune_cli.wsi.plan import plan_slide

from testdata import SLIDES, require_data

runner = CliRunner()
TINY = ["--backbone", "tiny-random", "--precision", "fp32", "--set", "backbone.input_size=64",
        "--set", "train.batch_size=16"]
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".webp"}


@pytest.fixture(scope="module")
def labels_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """labels.csv over four slides (links to the CMU slide under other names), each with its QuPath export.

    Tiles of 224 px at 1 µm/px (448 level-0 pixels, resized as read): few tiles, so tuning takes seconds.
    """
    cmu = require_data(SLIDES / "cmu-1-small-region.svs")
    root = tmp_path_factory.mktemp("slides")
    task = load_task_preset("kather2016")
    rows = []
    for name in ("a", "b", "c", "d"):
        slide = root / f"{name}.svs"
        slide.symlink_to(cmu)
        plan = plan_slide(slide, target_mpp=1.0, tile_size=224, min_tissue=0)
        regions = read_label_regions(cmu_annotations(root / f"{name}.geojson"), task, plan.level0_size)
        rows += labelled_rows(plan, label_tiles(regions, plan.coords, plan.grid.patch_size_level0), task.class_names)
    return write_labels_csv(root / "labels.csv", rows)


@pytest.mark.slow
def test_tune_and_eval_read_tiles_from_slides_and_split_by_slide(labels_csv: Path, tmp_path: Path) -> None:
    run = tmp_path / "RUN"
    result = runner.invoke(app, ["tune", "--preset", "kather2016", "--data", str(labels_csv), "--epochs", "1",
                                 "--out", str(run), "--set", "train.val_fraction=0.25", *TINY])
    assert result.exit_code == 0, result.output
    with (run / "data_manifest.csv").open() as handle:
        manifest = list(csv.DictReader(handle))
    with labels_csv.open() as handle:
        assert len(manifest) == sum(1 for _ in csv.DictReader(handle))
    train = {r["slide"] for r in manifest if r["split"] == "train"}
    val = {r["slide"] for r in manifest if r["split"] == "val"}
    assert train and val and not train & val  # whole slides on each side
    evaluated = runner.invoke(app, ["eval", str(run / "prompts.safetensors"), "--data", str(labels_csv),
                                    "--out", str(tmp_path / "eval"), "--json", "--precision", "fp32"])
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.stdout)["n"] == len(manifest)
    assert "tiles this prompt file was tuned on" in evaluated.output  # the same tiles: said, by slide and place
    images = [p for folder in (labels_csv.parent, tmp_path) for p in folder.rglob("*") if p.suffix in IMAGE_SUFFIXES]
    assert images == [] or all(p.name in ("confusion_matrix.png", "reliability_diagram.png", "curves.png")
                               for p in images)


def test_slide_tiles_match_the_tiles_the_slide_reader_cuts(labels_csv: Path) -> None:
    from pathotune_cli.runs.tile_level.labels import slide_tiles_set, store_for
    from pathotune_cli.wsi import open_slide, read_tile

    data = slide_tiles_set(labels_csv, load_task_preset("kather2016"))
    store = store_for(data, 224)
    table = data.table
    with open_slide(table.slides[0]) as reader:
        for i in (0, len(data) // 3):
            x, y = table.coords[i]
            want = read_tile(reader, int(x), int(y), int(table.level[i]), int(table.read_size[i]), 224)
            assert np.array_equal(store.batch([i])[0].numpy().transpose(1, 2, 0), want)


def test_grouped_split_keeps_each_slide_on_one_side(labels_csv: Path) -> None:
    from pathotune_cli.runs.tile_level.labels import slide_tiles_set

    data = slide_tiles_set(labels_csv, load_task_preset("kather2016"))
    for seed in range(5):
        train, val = split_train_val(data, 0.3, seed)
        assert val is not None and not set(train.groups) & set(val.groups)
        assert len(train) + len(val) == len(data)


def test_a_label_the_task_does_not_know_names_its_line(labels_csv: Path, tmp_path: Path) -> None:
    from pathotune_cli.runs.tile_level.labels import slide_tiles_set

    text = labels_csv.read_text().splitlines()
    text[2] = text[2].replace(",TUMOR,", ",NECROSIS,").replace(",STROMA,", ",NECROSIS,")
    bad = labels_csv.parent / "bad_labels.csv"
    bad.write_text("\n".join(text) + "\n")
    with pytest.raises(BadInput, match=r"bad_labels.csv line 3: label 'NECROSIS' is not a class of task 'kather2016'"):
        slide_tiles_set(bad, load_task_preset("kather2016"))


def test_demo_annotations_label_each_tile_with_the_region_under_it(tmp_path: Path) -> None:
    from pathotune_cli.demo_data import region_class
    from pathotune_cli.runs.tile_level.demo_labels import TRAIN_SLIDE_SIZE, demo_labels

    messages: list[object] = []
    labels = demo_labels(tmp_path, slides=1, report=messages.append)
    data = slide_tiles_set_for_demo(labels)
    centres = data.table.coords + data.table.footprint[:, None] / 2
    truth = region_class(centres[:, 0], centres[:, 1], *TRAIN_SLIDE_SIZE)
    assert set(data.labels.tolist()) == {0, 1, 2, 3}  # 'Immune cells' matched lymphocytes through its alias
    assert (truth == data.labels).mean() >= 0.95
    assert not [m for m in messages if getattr(m, "warning", False)]
    assert any("cut" in getattr(m, "text", "") for m in messages)


def slide_tiles_set_for_demo(labels: Path):
    from pathotune_cli.runs.tile_level.labels import slide_tiles_set

    return slide_tiles_set(labels, load_task_preset("demo"))


def test_a_patient_column_keeps_a_patients_slides_on_one_side(labels_csv: Path) -> None:
    from pathotune_cli.runs.tile_level.labels import slide_tiles_set

    lines = labels_csv.read_text().splitlines()
    patient = {"a": "P1", "b": "P1", "c": "P2", "d": "P3"}
    rows = [lines[0] + ",patient"] + [f"{line},{patient[Path(line.split(',')[0]).stem]}" for line in lines[1:]]
    with_patients = labels_csv.parent / "patients.csv"
    with_patients.write_text("\n".join(rows) + "\n")
    data = slide_tiles_set(with_patients, load_task_preset("kather2016"))
    assert set(data.groups) == {"P1", "P2", "P3"}
    for seed in range(6):
        train, val = split_train_val(data, 0.3, seed)
        slides_in = {side: {p.split("#")[0] for p in map(str, part.paths)} for side, part in (("t", train), ("v", val))}
        assert not slides_in["t"] & slides_in["v"]
        assert not set(train.groups) & set(val.groups)
