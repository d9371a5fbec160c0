"""Flat images decode right or are refused: every mode matches its 8-bit RGB twin, bombs are refused unread."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from pathotune_cli.errors import BadInput
from pathotune_cli.imaging import MAX_PIXELS, read_rgb

from testdata import forged_png

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (24, 32, 3), dtype=np.uint8)
GRAY = RGB[..., 0].copy()
FEW = np.array([[10, 20, 30], [200, 100, 50], [0, 255, 128], [255, 255, 255]], np.uint8)[RNG.integers(0, 4, (24, 32))]


def _gray16_png(path: Path) -> np.ndarray:
    Image.fromarray(GRAY.astype(np.uint16) * 257).save(path)
    return np.repeat(GRAY[..., None], 3, 2)


def _gray16b_tif(path: Path) -> np.ndarray:
    import tifffile

    tifffile.imwrite(path, (GRAY.astype(np.uint16) * 257).astype(">u2"), byteorder=">")
    return np.repeat(GRAY[..., None], 3, 2)


def _rgb48_png(path: Path) -> np.ndarray:
    import imagecodecs

    path.write_bytes(imagecodecs.png_encode(RGB.astype(np.uint16) * 257))
    return RGB


def _rgb48_tif(path: Path) -> np.ndarray:
    import tifffile

    tifffile.imwrite(path, RGB.astype(np.uint16) * 257, photometric="rgb")
    return RGB


def _palette_png(path: Path) -> np.ndarray:
    Image.fromarray(FEW).quantize(colors=4, method=Image.Quantize.MEDIANCUT).save(path)
    return FEW


def _palette_transparent_png(path: Path) -> np.ndarray:
    picture = Image.fromarray(FEW).quantize(colors=4, method=Image.Quantize.MEDIANCUT)
    index = picture.getpixel((0, 0))
    picture.save(path, transparency=index)
    twin = FEW.copy()
    twin[np.asarray(picture) == index] = 255  # transparent means no tissue: white
    return twin


def _la_png(path: Path) -> np.ndarray:
    alpha = np.full_like(GRAY, 255)
    alpha[:4] = 0
    Image.fromarray(np.dstack([GRAY, alpha]), "LA").save(path)
    twin = np.repeat(GRAY[..., None], 3, 2)
    twin[:4] = 255
    return twin


def _rgba_png(path: Path) -> np.ndarray:
    alpha = np.full_like(GRAY, 255)
    alpha[:, :3] = 0
    Image.fromarray(np.dstack([RGB, alpha]), "RGBA").save(path)
    twin = RGB.copy()
    twin[:, :3] = 255
    return twin


def _cmyk_tif(path: Path) -> np.ndarray:
    Image.fromarray(RGB).convert("CMYK").save(path)
    return RGB


def _gray_png(path: Path) -> np.ndarray:
    Image.fromarray(GRAY).save(path)
    return np.repeat(GRAY[..., None], 3, 2)


def _bilevel_png(path: Path) -> np.ndarray:
    Image.fromarray(GRAY > 127).convert("1").save(path)
    return np.repeat(np.where(GRAY > 127, 255, 0).astype(np.uint8)[..., None], 3, 2)


def _exif_rotated_jpg(path: Path) -> np.ndarray:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: the viewer turns the stored picture 90 degrees clockwise
    Image.fromarray(FEW).save(path, quality=100, subsampling=0, exif=exif)
    stored = np.asarray(Image.open(path).convert("RGB"))
    return np.ascontiguousarray(np.rot90(stored, k=-1))


MODES = {
    "16-bit grayscale PNG (I;16)": ("g16.png", _gray16_png, 0),
    "16-bit big-endian TIFF (I;16B)": ("g16b.tif", _gray16b_tif, 0),
    "48-bit RGB PNG": ("rgb48.png", _rgb48_png, 0),
    "48-bit RGB TIFF": ("rgb48.tif", _rgb48_tif, 0),
    "palette PNG": ("p.png", _palette_png, 0),
    "palette PNG with a transparent entry": ("pt.png", _palette_transparent_png, 0),
    "grayscale with alpha (LA)": ("la.png", _la_png, 0),
    "RGBA": ("rgba.png", _rgba_png, 0),
    "CMYK TIFF": ("cmyk.tif", _cmyk_tif, 1),
    "8-bit grayscale": ("g8.png", _gray_png, 0),
    "bilevel (1)": ("b.png", _bilevel_png, 0),
    "JPEG with EXIF orientation 6": ("rot.jpg", _exif_rotated_jpg, 0),
}


@pytest.mark.parametrize("mode", list(MODES))
def test_every_mode_decodes_as_its_8_bit_rgb_twin(mode: str, tmp_path: Path) -> None:
    name, make, tolerance = MODES[mode]
    twin = make(tmp_path / name)
    got = read_rgb(tmp_path / name).rgb
    assert got.dtype == np.uint8 and got.shape == twin.shape, mode
    assert int(np.abs(got.astype(int) - twin.astype(int)).max()) <= tolerance, mode


def test_16_bit_values_are_rounded_to_8_bits_not_clipped(tmp_path: Path) -> None:
    values = np.array([[0, 128, 129, 257, 32896, 65406, 65535]], np.uint16)
    Image.fromarray(values).save(tmp_path / "ramp.png")
    assert read_rgb(tmp_path / "ramp.png").rgb[0, :, 0].tolist() == [0, 0, 1, 1, 128, 254, 255]


@pytest.mark.parametrize(("mode", "words"), [("I", "32-bit integer"), ("F", "floating-point")])
def test_measurement_images_are_refused_naming_the_file(mode: str, words: str, tmp_path: Path) -> None:
    Image.fromarray(GRAY.astype(np.int32 if mode == "I" else np.float32)).save(tmp_path / "m.tif")
    with pytest.raises(BadInput, match=f"m.tif: a {words} image") as info:
        read_rgb(tmp_path / "m.tif")
    assert "\n" not in info.value.one_line()


@pytest.mark.parametrize(("width", "height"), [(100_000, 100_000), (30_000, 30_000), (13_500, 13_500)])
def test_a_decompression_bomb_is_refused_from_its_header(
    width: int, height: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def never(*args: object) -> None:
        raise AssertionError("decoded pixels of an image above the limit")

    monkeypatch.setattr(Image.Image, "load", never)
    bomb = forged_png(tmp_path / "bomb.png", width, height)
    with pytest.raises(BadInput) as info:
        read_rgb(bomb)
    line = info.value.one_line()
    assert str(bomb) in line and f"{width * height:,} pixels" in line and f"{MAX_PIXELS:,}" in line


def test_a_16_bit_tile_and_its_8_bit_twin_get_the_same_prediction(tiny_run: Path, tmp_path: Path) -> None:
    from pathotune_cli.cli.app import app

    tile = np.asarray(Image.open(next((tiny_run.parent / "tiles" / "tumor").glob("*.png"))).convert("RGB"))
    gray = tile[..., 1]
    folder = tmp_path / "tiles"
    folder.mkdir()
    Image.fromarray(gray).convert("RGB").save(folder / "a_8bit_twin.png")
    Image.fromarray(gray.astype(np.uint16) * 257).save(folder / "b_16bit.png")
    assert Image.open(folder / "b_16bit.png").mode == "I;16"
    result = CliRunner().invoke(app, ["predict", str(tiny_run / "prompts.safetensors"), str(folder),
                                      "--out", str(tmp_path / "P")])
    assert result.exit_code == 0, result.output
    with (tmp_path / "P" / "predictions.csv").open(newline="") as handle:
        twin, sixteen = (dict(list(row.items())[1:]) for row in csv.DictReader(handle))
    assert twin == sixteen  # class and every probability, to the printed digit
