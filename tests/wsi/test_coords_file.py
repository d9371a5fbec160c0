"""Coordinate files: ours round-trip; CLAM and TRIDENT files read back with the right footprint."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from pathotune_cli.errors import BadInput
from pathotune_cli.wsi import plan_slide, read_coords, write_coords


def test_plan_attributes_round_trip(cmu_svs: Path, tmp_path: Path) -> None:
    plan = plan_slide(cmu_svs, target_mpp=0.5, tile_size=224)
    path = write_coords(tmp_path / "cmu.h5", plan.coords, plan.h5_attrs())
    with h5py.File(path) as h5:
        ds = h5["coords"]
        assert ds.dtype == np.int64 and ds.shape == (len(plan.coords), 2)
        attrs = dict(ds.attrs)
    assert attrs["patch_size"] == 224 and attrs["patch_size_level0"] == 224
    assert attrs["patch_level"] == 0 and attrs["read_size"] == 224
    assert attrs["level0_mpp"] == pytest.approx(0.499) and attrs["target_mpp"] == pytest.approx(0.5)
    assert attrs["mpp_source"] == "metadata" and attrs["overlap"] == 0
    assert (attrs["level0_width"], attrs["level0_height"]) == (2220, 2967)
    assert attrs["level0_magnification"] == 20
    back = read_coords(path)
    assert back.flavor == "pathotune"
    assert np.array_equal(back.coords, plan.coords)
    assert back.footprint() == 224 and back.patch_level == 0


def test_clam_file_footprint_from_its_downsample_or_the_slide(tmp_path: Path) -> None:
    coords = np.array([[0, 0], [512, 0]], np.int32)
    with h5py.File(tmp_path / "clam.h5", "w") as h5:
        ds = h5.create_dataset("coords", data=coords)
        ds.attrs.update(
            {"patch_level": 1, "patch_size": 256, "downsample": np.array([2.0, 2.0]), "name": "s"}
        )
    clam = read_coords(tmp_path / "clam.h5")
    assert clam.flavor == "clam" and clam.coords.dtype == np.int64
    assert clam.footprint() == 512
    with h5py.File(tmp_path / "bare.h5", "w") as h5:
        h5.create_dataset("coords", data=coords).attrs.update({"patch_level": 1, "patch_size": 256})
    bare = read_coords(tmp_path / "bare.h5")
    assert bare.footprint([1.0, 4.0]) == 1024
    with pytest.raises(BadInput, match="does not give the tile size in level-0 pixels"):
        bare.footprint()


def test_trident_file(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "trident.h5", "w") as h5:
        ds = h5.create_dataset("coords", data=np.array([[10, 20]]))
        ds.attrs.update(
            {
                "patch_size": 256,
                "patch_size_level0": 512,
                "target_magnification": 20,
                "level0_magnification": 40,
                "overlap": 0,
            }
        )
    trident = read_coords(tmp_path / "trident.h5")
    assert trident.flavor == "trident" and trident.footprint() == 512
    assert trident.coords.tolist() == [[10, 20]]


def test_files_that_are_not_coords(tmp_path: Path) -> None:
    with h5py.File(tmp_path / "feats.h5", "w") as h5:
        h5.create_dataset("features", data=np.zeros((2, 4)))
    with pytest.raises(BadInput, match="no 'coords' dataset"):
        read_coords(tmp_path / "feats.h5")
    (tmp_path / "text.h5").write_text("nope")
    with pytest.raises(BadInput, match="not a readable HDF5 file"):
        read_coords(tmp_path / "text.h5")
    with pytest.raises(BadInput, match="no such coords file"):
        read_coords(tmp_path / "absent.h5")
