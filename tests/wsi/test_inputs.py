"""Files that make one slide: a DICOM WSI series, an MRXS and its data folder, an OME-Zarr folder."""

from __future__ import annotations

import shutil
from pathlib import Path

from pathotune_cli.wsi import open_slide
from pathotune_cli.wsi.inputs import dicom_series_uid, find_slides, group_slide_files

SERIES = b"1689669825649.4.0"  # the tail of the fixtures' SeriesInstanceUID, once in each file


def test_the_two_files_of_one_dicom_series_are_one_slide(fixtures_dir: Path) -> None:
    files = sorted(fixtures_dir.iterdir())
    slides = group_slide_files(files)
    assert [p.name for p in slides] == ["boxes.tiff", "boxes_0.dcm", "small.svs"]
    with open_slide(slides[1]) as reader:  # OpenSlide opens the whole series from one of its files
        assert reader.backend == "openslide" and reader.dimensions == (16, 16)


def test_two_series_in_one_folder_are_two_slides(fixtures_dir: Path, tmp_path: Path) -> None:
    for name in ("boxes_0.dcm", "boxes_1.dcm"):
        shutil.copy(fixtures_dir / name, tmp_path / name)
        data = (fixtures_dir / name).read_bytes()
        assert data.count(SERIES) == 1
        (tmp_path / f"other_{name}").write_bytes(data.replace(SERIES, b"1689669825649.4.9"))
    assert dicom_series_uid(tmp_path / "other_boxes_0.dcm").endswith(".4.9")
    slides = group_slide_files(sorted(tmp_path.iterdir(), reverse=True))
    assert sorted(p.name for p in slides) == ["boxes_0.dcm", "other_boxes_0.dcm"]  # each series' first file


def test_the_same_series_in_two_folders_is_two_slides(fixtures_dir: Path, tmp_path: Path) -> None:
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        for name in ("boxes_0.dcm", "boxes_1.dcm"):
            shutil.copy(fixtures_dir / name, tmp_path / folder / name)
    slides = group_slide_files(sorted(tmp_path.rglob("*.dcm")))
    assert [p.relative_to(tmp_path).as_posix() for p in slides] == ["a/boxes_0.dcm", "b/boxes_0.dcm"]


def test_an_mrxs_data_folder_counts_once_with_its_mrxs(tmp_path: Path) -> None:
    (tmp_path / "case.mrxs").write_bytes(b"x")
    (tmp_path / "case").mkdir()
    for name in ("Slidedat.ini", "Data0000.dat", "Data0001.dat"):
        (tmp_path / "case" / name).write_bytes(b"x")
    found = sorted(tmp_path.rglob("*"))
    assert group_slide_files([p for p in found if p.is_file()]) == [tmp_path / "case.mrxs"]


def test_the_files_of_an_ome_zarr_folder_are_that_folder(format_slides: dict[str, Path]) -> None:
    folder = format_slides["ome-zarr"]
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    assert len(files) > 3
    assert group_slide_files([*files, folder]) == [folder]


def test_files_that_are_not_dicom_pass_through(tmp_path: Path) -> None:
    plain = tmp_path / "notes.dcm"
    plain.write_text("not a DICOM file")
    assert dicom_series_uid(plain) is None
    assert group_slide_files([plain, plain]) == [plain]


def test_find_slides_picks_files_and_zarr_folders_and_groups_series(
    fixtures_dir: Path, format_slides: dict[str, Path], tmp_path: Path
) -> None:
    from pathotune_cli.formats import SLIDE_SUFFIXES

    for name in ("boxes_0.dcm", "boxes_1.dcm", "small.svs"):
        shutil.copy(fixtures_dir / name, tmp_path / name)
    shutil.copytree(format_slides["ome-zarr"], tmp_path / "sub" / "cmu.zarr")
    shutil.copy(format_slides["czi"], tmp_path / "sub" / "cmu.czi")
    (tmp_path / "sub" / "biopsy.vsi").write_bytes(b"II*\x00")
    (tmp_path / "notes.txt").write_text("x")
    found = [p.relative_to(tmp_path).as_posix() for p in find_slides(tmp_path, SLIDE_SUFFIXES)]
    assert found == ["boxes_0.dcm", "small.svs", "sub/biopsy.vsi", "sub/cmu.czi", "sub/cmu.zarr"]


def test_identity_files_stand_for_a_whole_slide(fixtures_dir: Path, format_slides: dict[str, Path],
                                                tmp_path: Path) -> None:
    from pathotune_cli.wsi.inputs import identity_files

    series = identity_files(fixtures_dir / "boxes_0.dcm")
    assert [p.name for p in series] == ["boxes_0.dcm", "boxes_1.dcm"]
    zarr_files = identity_files(format_slides["ome-zarr"])
    assert {p.name for p in zarr_files} == {"zarr.json"} and len(zarr_files) == 4  # root and 3 levels, no chunks
    assert identity_files(fixtures_dir / "small.svs") == [fixtures_dir / "small.svs"]
