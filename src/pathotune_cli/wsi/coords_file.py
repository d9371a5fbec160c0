"""Tile coordinate files in HDF5, in the layout CLAM and TRIDENT users already read.

One dataset, ``coords``: ``(N, 2)`` int64 level-0 top-left x, y. Its attributes say how to cut the tiles:
``patch_size`` (tile side at the target resolution, as TRIDENT), ``patch_size_level0`` (footprint in level-0
pixels), ``patch_level`` and ``read_size`` (the level read, and how many of its pixels, as CLAM's
``patch_level``), ``level0_mpp``, ``target_mpp``, ``mpp_source``, ``overlap``, ``level0_width``,
``level0_height``. Files written by CLAM (``patch_level`` + ``patch_size`` at that level) and TRIDENT
(``patch_size_level0``) are read too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pathotune_cli.errors import BadInput, first_line

FORMAT = "pathotune-coords-1"
REQUIRED_ATTRS = (
    "patch_size",
    "patch_size_level0",
    "level0_mpp",
    "target_mpp",
    "mpp_source",
    "overlap",
    "level0_width",
    "level0_height",
    "patch_level",
    "read_size",
)


@dataclass(frozen=True)
class CoordsFile:
    """Tile coordinates read back from an HDF5 file."""

    coords: np.ndarray
    """``(N, 2)`` int64 level-0 top-left x, y."""
    flavor: str
    """``pathotune``, ``trident`` or ``clam``: who wrote the file."""
    patch_size_level0: int | None
    """Tile footprint in level-0 pixels; None for a CLAM file without ``downsample`` (see ``footprint``)."""
    patch_size: int | None
    """Tile side at the target resolution (pathotune, TRIDENT) or at ``patch_level`` (CLAM)."""
    patch_level: int | None
    """Level the tiles were read from, where recorded."""
    attrs: dict[str, Any] = field(default_factory=dict)
    """Every attribute of the ``coords`` dataset, as plain Python values."""

    def footprint(self, level_downsamples: Sequence[float] | None = None) -> int:
        """Tile side in level-0 pixels, using the slide's downsamples for a CLAM file that lacks it.

        Raises:
            BadInput: The file does not say, and no downsamples were given.
        """
        if self.patch_size_level0:
            return int(self.patch_size_level0)
        if self.patch_size and self.patch_level is not None and level_downsamples is not None:
            if self.patch_level < len(level_downsamples):
                return round(self.patch_size * level_downsamples[self.patch_level])
        raise BadInput(
            f"coords file ({self.flavor}) does not give the tile size in level-0 pixels",
            "pass the slide it was made from, or re-tile with `pathotune tile`",
        )


def write_coords(path: str | Path, coords: np.ndarray, attrs: Mapping[str, Any]) -> Path:
    """Write ``coords`` and its attributes; ``attrs`` must hold every name in ``REQUIRED_ATTRS``.

    Args:
        path: Output ``.h5`` file (overwritten).
        coords: ``(N, 2)`` level-0 top-left x, y.
        attrs: Attributes; None values are written as NaN (numbers) or empty strings.
    """
    import h5py

    missing = [name for name in REQUIRED_ATTRS if name not in attrs]
    if missing:
        raise ValueError(f"coords attributes missing: {', '.join(missing)}")
    coords = np.asarray(coords, np.int64).reshape(-1, 2)
    path = Path(path)
    with h5py.File(path, "w") as h5:
        chunks = (max(1, min(len(coords), 4096)), 2)
        ds = h5.create_dataset("coords", data=coords, maxshape=(None, 2), chunks=chunks)
        for key, value in {"format": FORMAT, **attrs}.items():
            ds.attrs[key] = attr_value(value)
    return path


def read_coords(path: str | Path) -> CoordsFile:
    """Read a coords file written by pathotune, TRIDENT or CLAM.

    Raises:
        BadInput: The file is missing, not HDF5, or has no ``coords`` dataset of shape (N, 2).
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        raise BadInput(f"{path}: no such coords file", "check the path")
    try:
        with h5py.File(path, "r") as h5:
            if "coords" not in h5:
                raise BadInput(
                    f"{path.name}: no 'coords' dataset",
                    "pass a coords .h5 from `pathotune tile`, CLAM or TRIDENT",
                )
            ds = h5["coords"]
            coords = np.asarray(ds[()], np.int64)
            attrs = {key: plain_value(value) for key, value in ds.attrs.items()}
            for key, value in h5.attrs.items():  # some writers keep attributes on the file instead
                attrs.setdefault(key, plain_value(value))
    except OSError as exc:
        raise BadInput(f"{path}: not a readable HDF5 file ({first_line(exc)})",
                       "pass a coords .h5 from `pathotune tile`, CLAM or TRIDENT") from exc
    if coords.size == 0:
        coords = coords.reshape(0, 2)
    if coords.ndim != 2 or coords.shape[1] < 2:
        raise BadInput(f"{path.name}: 'coords' has shape {coords.shape}, expected (N, 2)")
    coords = np.ascontiguousarray(coords[:, :2])
    flavor = (
        "pathotune"
        if attrs.get("format") == FORMAT
        else "trident"
        if "patch_size_level0" in attrs
        else "clam"
    )
    size0 = attrs.get("patch_size_level0")
    if size0 is None and flavor == "clam" and "downsample" in attrs and attrs.get("patch_size"):
        size0 = round(float(attrs["patch_size"]) * float(np.ravel(attrs["downsample"])[0]))
    return CoordsFile(
        coords=coords,
        flavor=flavor,
        patch_size_level0=_int(size0),
        patch_size=_int(attrs.get("patch_size")),
        patch_level=_int(attrs.get("patch_level")),
        attrs=attrs,
    )


def attr_value(value: Any) -> Any:
    """An attribute value HDF5 stores: None as an empty string, paths as strings."""
    if value is None:
        return ""
    if isinstance(value, Path):
        return str(value)
    return value


def plain_value(value: Any) -> Any:
    """An HDF5 attribute read back as a plain Python value."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def _int(value: Any) -> int | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(round(number)) if np.isfinite(number) and number >= 0 else None
