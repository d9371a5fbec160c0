"""One way to decode a flat image file (a tile, or a PNG/JPEG read as a one-level slide) into 8-bit RGB.

Every command that decodes a flat image (``tune``, ``eval``, ``export --check-data`` and ``predict`` on tile
images, ``tile`` and ``predict`` on flat images as slides) goes through ``read_rgb``, so they refuse and convert
the same files the same way:

- **Too large**: an image above ``MAX_PIXELS`` (Pillow's own decompression-bomb limit, about 179 megapixels)
  is refused from its header, before any pixel is decoded, naming the file and its pixel count.
- **16-bit** grayscale (``I;16``, ``I;16B``: some scanners and exporters write it) is scaled to 8 bits,
  ``round(v / 257)``, so 65535 is 255 and an 8-bit value saved as 16 bits (``v * 257``) comes back exactly.
  16-bit RGB (48-bit PNG and TIFF) Pillow itself reads as 8-bit RGB (the high byte: within 1 of the rounded
  value). 32-bit integer and floating-point images (``I``, ``F``) are measurements, not pictures: refused.
- **Palette, grayscale, CMYK, YCbCr** are converted by Pillow; **transparency** (``RGBA``, ``LA``, ``PA``, a
  palette's transparent entry) is composited onto white, as transparent slide regions are: no tissue there.
- **EXIF orientation** is honoured (the image is turned as a viewer shows it), so a phone or camera picture of
  a tile is the picture the user saw. Coordinates of a flat image read as a slide are then in that orientation.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pathotune_cli.errors import BadInput, os_error

MAX_PIXELS = 178_956_970
"""Largest flat image decoded (width x height): Pillow's hard decompression-bomb limit at its default,
2 x ``PIL.Image.MAX_IMAGE_PIXELS``; a 13,000 x 13,000 image, 500 MB of RGB."""
TOO_LARGE_FIX = (
    "a flat image this large is a slide: save it as a tiled pyramid TIFF "
    "(`vips tiffsave IN OUT.tif --tile --pyramid`) and cut it with `pathotune tile`, or remove it"
)
WHITE = 255
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")
REFUSED_MODES = {"I": "a 32-bit integer image", "F": "a floating-point image"}
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


class NotAnImage(BadInput):
    """The file does not decode as an image (as opposed to an image that decodes but is refused)."""

    def __init__(self, path: Path, why: str) -> None:
        super().__init__(f"{path} is not a readable image ({why})", "remove or replace the file")
        self.path, self.why = path, why

    def __reduce__(self) -> tuple[type, tuple[Path, str]]:  # noqa: D105
        return (type(self), (self.path, self.why))


@dataclass(frozen=True)
class Decoded:
    """A decoded image: its pixels as (H, W, 3) uint8 RGB, its format and what its header says."""

    rgb: np.ndarray
    format: str = ""
    info: dict[str, Any] = field(default_factory=dict)


def read_rgb(path: str | Path) -> Decoded:
    """Decode ``path`` into 8-bit RGB by the rules of this module.

    Raises:
        BadInput: too many pixels (before decoding), not an image Pillow reads, truncated, or a 32-bit or
            floating-point image; all naming the file. An ``OSError`` of the file itself (missing, no
            permission) becomes its one line too (``errors.os_error``).
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = Image.open(path)
        except Image.DecompressionBombError as exc:
            raise too_large(path, _pixels_in(str(exc))) from None
        except UnidentifiedImageError:
            raise not_an_image(path, "not an image format Pillow reads") from None
        except OSError as exc:
            if exc.errno is not None:
                raise os_error(exc, path) from None
            raise not_an_image(path, _first_line(exc)) from None
        except (ValueError, SyntaxError) as exc:
            raise not_an_image(path, _first_line(exc)) from None
        with img:
            width, height = img.size
            if width * height > MAX_PIXELS:
                raise too_large(path, width * height, (width, height))
            try:
                img.load()
                oriented = ImageOps.exif_transpose(img)
                return Decoded(to_rgb8(oriented, str(path)), img.format or "", dict(img.info))
            except (OSError, ValueError, SyntaxError, EOFError) as exc:  # truncated or damaged pixel data
                raise not_an_image(path, _first_line(exc)) from None


def to_rgb8(img: Any, name: str = "image") -> np.ndarray:
    """(H, W, 3) uint8 RGB of a decoded Pillow image of any mode (the rules of this module)."""
    mode = img.mode
    if mode in SIXTEEN_BIT_MODES:
        values = np.asarray(img).astype(np.uint32)
        gray = ((values * 255 + 32767) // 65535).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if mode in REFUSED_MODES:
        raise BadInput(
            f"{name}: {REFUSED_MODES[mode]} (Pillow mode {mode}), not a picture of tissue",
            "save it as 8- or 16-bit RGB or grayscale",
        )
    if mode in _ALPHA_MODES or "transparency" in img.info:
        return composite_on_white(np.asarray(img.convert("RGBA")))
    return np.ascontiguousarray(np.asarray(img.convert("RGB")))


def composite_on_white(rgba: np.ndarray) -> np.ndarray:
    """Composite (H, W, 4) RGBA (not premultiplied) onto white; fully transparent -> white. RGB passes through."""
    if rgba.shape[-1] == 3:
        return rgba
    alpha = rgba[..., 3:4]
    if alpha.min() == 255:
        return np.ascontiguousarray(rgba[..., :3])
    a = alpha.astype(np.uint16)
    rgb = (rgba[..., :3].astype(np.uint16) * a + WHITE * (255 - a) + 127) // 255
    return rgb.astype(np.uint8)


def too_large(path: Path, pixels: int | None, size: tuple[int, int] | None = None) -> BadInput:
    """The one line for an image above ``MAX_PIXELS``, the same in every command."""
    dims = f"{size[0]:,} x {size[1]:,} = " if size else ""
    count = f"{dims}{pixels:,} pixels" if pixels else "more pixels than the limit"
    return BadInput(f"{path}: {count}, above the limit of {MAX_PIXELS:,} pixels for a flat image (refused "
                    "before decoding: a decompression bomb or a slide saved flat)", TOO_LARGE_FIX)


def not_an_image(path: Path, why: str) -> NotAnImage:
    """The one line for an image file that does not decode."""
    return NotAnImage(path, why)


def _pixels_in(message: str) -> int | None:
    """Pillow's bomb error states the pixel count: ``Image size (N pixels) exceeds limit ...``."""
    match = re.search(r"\((\d+) pixels\)", message)
    return int(match.group(1)) if match else None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:160] if text else type(exc).__name__
