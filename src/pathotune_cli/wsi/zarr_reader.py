"""OME-Zarr (OME-NGFF) images through ``zarr``: the multiscales pyramid, mpp from its coordinate transformations.

An OME-Zarr "file" is a folder (``slide.zarr/``). Its root group's attributes hold ``multiscales`` (NGFF 0.4, zarr
v2 ``.zattrs``) or ``ome.multiscales`` (NGFF 0.5, zarr v3 ``zarr.json``); a bioformats2raw layout keeps the image
in group ``0``. The first multiscale image is the slide: its datasets are the levels, finest first, and the
``scale`` of dataset 0 on the ``x`` axis (in the axis's unit) is the mpp. RGB is a channel axis ``c`` of 3 (or 4)
uint8 values; other axes (``t``, ``z``) are read at index 0. Chunks are read through zarr, so memory stays that
of the region asked for.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from pathotune_cli.errors import BadInput, MissingDependency, first_line
from pathotune_cli.wsi.reader import DamagedTile, SlideReader

INSTALL = "pip install zarr"
_META_FILES = (".zattrs", "zarr.json")


class ZarrSlideReader(SlideReader):
    """An OME-Zarr image folder, read level by level through zarr."""

    backend = "zarr"

    def __init__(self, path: str | Path) -> None:
        """Open the OME-Zarr folder ``path``; raises BadInput when it holds no RGB multiscale image."""
        zarr = import_zarr()
        super().__init__(path)
        try:
            root = zarr.open_group(str(self.path), mode="r")
            group, multiscale = _first_multiscale(root)
        except (BadInput, MissingDependency):
            raise
        except Exception as exc:  # zarr's errors for a broken store have many types
            raise BadInput(f"{self.path.name}: not a readable OME-Zarr ({first_line(exc)})") from exc
        if multiscale is None:
            raise BadInput(f"{self.path.name}: a zarr folder without OME multiscales metadata",
                           "write it as OME-Zarr (ome-zarr-py, bioformats2raw), or convert it to OME-TIFF")
        self._axes = [a["name"] if isinstance(a, dict) else str(a) for a in multiscale.get("axes", [])]
        if "x" not in self._axes or "y" not in self._axes:
            raise BadInput(f"{self.path.name}: OME-Zarr axes {self._axes} have no x and y")
        self._unit = next((a.get("unit") for a in multiscale["axes"] if isinstance(a, dict) and a["name"] == "x"),
                          None)
        self._datasets = multiscale["datasets"]
        self._arrays = [group[d["path"]] for d in self._datasets]
        self._check_rgb()
        yi, xi = self._axes.index("y"), self._axes.index("x")
        self._dims = tuple((int(a.shape[xi]), int(a.shape[yi])) for a in self._arrays)

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        """(width, height) of every dataset of the multiscale image, finest first."""
        return self._dims

    @property
    def mpp(self) -> float | None:
        """Dataset 0's ``scale`` on the x axis, in microns (from the axis's unit; none stated means microns)."""
        from pathotune_cli.wsi.mpp import to_microns

        for transform in self._datasets[0].get("coordinateTransformations", []):
            if transform.get("type") == "scale" and "scale" in transform:
                return to_microns(transform["scale"][self._axes.index("x")], self._unit)
        return None

    @property
    def mpp_source(self) -> str | None:
        """``ngff-scale`` when dataset 0 has a scale transformation."""
        return "ngff-scale" if self.mpp is not None else None

    @property
    def properties(self) -> dict[str, str]:
        """Axes and chunking, for display."""
        return {"zarr.axes": "".join(self._axes), "zarr.chunks": str(self._arrays[0].chunks)}

    def close(self) -> None:
        """Nothing to release: zarr opens chunk files per read."""
        self._arrays = []

    def _read(self, x: int, y: int, level: int, w: int, h: int) -> np.ndarray:
        index: list[slice | int] = []
        for name in self._axes:
            index.append(slice(y, y + h) if name == "y" else slice(x, x + w) if name == "x" else
                         slice(0, 3) if name == "c" else 0)
        try:
            region = np.asarray(self._arrays[level][tuple(index)])
        except Exception as exc:  # a chunk that is missing bytes or does not decompress
            raise DamagedTile(
                f"{self.path.name}: a chunk of level {level} cannot be read ({first_line(exc)})",
                "the folder is damaged; copy it again",
            ) from exc
        kept = [n for n in self._axes if n in ("y", "x", "c")]
        order = [kept.index("y"), kept.index("x"), kept.index("c")]
        return np.ascontiguousarray(region.transpose(order))

    def _check_rgb(self) -> None:
        array = self._arrays[0]
        channels = array.shape[self._axes.index("c")] if "c" in self._axes else 1
        if channels not in (3, 4) or array.dtype != np.uint8:
            raise BadInput(
                f"{self.path.name}: an OME-Zarr image of {channels} channel(s) of {array.dtype}, not RGB uint8",
                "tile RGB (brightfield H&E) images; export fluorescence channels as an RGB image first",
            )


def import_zarr() -> Any:
    """Import zarr, or say which ``pip install`` adds it."""
    try:
        import zarr
    except ImportError as exc:
        raise MissingDependency(f"reading OME-Zarr needs zarr, which is not installed ({first_line(exc)})",
                                INSTALL) from exc
    return zarr


def is_zarr(path: Path) -> bool:
    """Whether ``path`` is a zarr folder (a ``.zattrs``/``.zgroup`` or ``zarr.json`` at its root)."""
    return path.is_dir() and any((path / name).is_file() for name in (*_META_FILES, ".zgroup"))


def _first_multiscale(root: Any) -> tuple[Any, dict[str, Any] | None]:
    """The group holding the first multiscale image and its metadata (root, or ``0`` for bioformats2raw)."""
    for group in (root, _child(root, "0")):
        if group is None:
            continue
        attrs = dict(group.attrs)
        multiscales = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
        if multiscales:
            return group, json.loads(json.dumps(multiscales[0]))
    return root, None


def _child(group: Any, name: str) -> Any:
    try:
        return group[name]
    except (KeyError, ValueError, FileNotFoundError):
        return None
