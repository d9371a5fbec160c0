"""The plain thumbnail ``predict`` leaves for the report: a small JPEG that carries its slide's level-0 size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from pathotune_cli.wsi import save_slide_thumbnail, slide_thumbnail_level0_size


def test_thumbnail_keeps_the_level0_size_and_shrinks_to_its_long_side(tmp_path: Path) -> None:
    rgb = np.zeros((1500, 2000, 3), np.uint8)
    rgb[:, :1000] = (200, 110, 170)
    path = save_slide_thumbnail(tmp_path / "s.thumb.jpg", rgb, (80_000, 60_000))
    assert slide_thumbnail_level0_size(path) == (80_000, 60_000)
    with Image.open(path) as img:
        assert img.format == "JPEG" and img.size == (1024, 768)
        left = np.asarray(img)[384, 100].astype(int)
    assert np.abs(left - (200, 110, 170)).max() < 8
    assert path.stat().st_size < 100_000


def test_other_images_have_no_level0_size(tmp_path: Path) -> None:
    plain = tmp_path / "plain.jpg"
    Image.new("RGB", (8, 8)).save(plain)
    commented = tmp_path / "other.jpg"
    Image.new("RGB", (8, 8)).save(commented, comment=b'{"format": "elsewhere", "level0_size": [4, 4]}')
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    assert [slide_thumbnail_level0_size(p) for p in (plain, commented, text, tmp_path / "gone.jpg")] == [None] * 4
