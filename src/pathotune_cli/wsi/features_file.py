"""Per-slide tile features in HDF5, in the layout TRIDENT and CLAM users already read.

Two top-level datasets, as TRIDENT writes them: ``features`` (N, D) float32 and ``coords`` (N, 2) int64 level-0
top-left x, y, row i of one the tile of row i of the other. ``coords`` carries the attributes ``tile`` writes
(``patch_size``, ``patch_size_level0``, ``level0_mpp``, ...); ``features`` carries ``encoder`` (the backbone
preset), ``backbone_fingerprint``, ``prompts_sha256`` (empty for bare-backbone features) and ``feature_kind``.

Read: ours; TRIDENT's (attributes on the datasets, ``features`` in the encoder's dtype, cast here); CLAM's
``h5_files/<slide>.h5`` (``features`` and int32 ``coords``, no attributes). CLAM's ``.pt`` files are pickles:
refused, with how to get an h5 instead. STAMP's ``feats`` dataset is read too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pathotune_cli.errors import BadInput, first_line
from pathotune_cli.wsi.coords_file import attr_value, plain_value

FORMAT = "pathotune-features-1"
FEATURE_NAMES = ("features", "feats")
"""Dataset names of tile features: ours, TRIDENT's and CLAM's; STAMP's."""


@dataclass(frozen=True)
class FeaturesFile:
    """Tile features of one slide, read back."""

    features: np.ndarray
    """(N, D) float32."""
    coords: np.ndarray
    """(N, 2) int64 level-0 top-left x, y."""
    flavor: str
    """``pathotune``, ``trident``, ``clam`` or ``stamp``."""
    feature_attrs: dict[str, Any] = field(default_factory=dict)
    coords_attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str | None:
        """The backbone fingerprint the features were made with, where the file says (ours)."""
        value = self.feature_attrs.get("backbone_fingerprint")
        return str(value) if value else None


def write_features(
    path: str | Path,
    features: np.ndarray,
    coords: np.ndarray,
    coords_attrs: Mapping[str, Any],
    feature_attrs: Mapping[str, Any],
) -> Path:
    """Write one slide's features and coords (callers stage the path: ``files.Staging``)."""
    import h5py

    features = np.asarray(features, np.float32).reshape(len(coords), -1)
    coords = np.asarray(coords, np.int64).reshape(-1, 2)
    path = Path(path)
    with h5py.File(path, "w") as h5:
        feats = h5.create_dataset("features", data=features)
        for key, value in {"format": FORMAT, **feature_attrs}.items():
            feats.attrs[key] = attr_value(value)
        ds = h5.create_dataset("coords", data=coords)
        for key, value in coords_attrs.items():
            ds.attrs[key] = attr_value(value)
    return path


def read_features(path: str | Path) -> FeaturesFile:
    """Read a features file of pathotune, TRIDENT, CLAM or STAMP.

    Raises:
        BadInput: missing, not HDF5, a pickle (``.pt``), no features dataset, or features and coords of
            different lengths.
    """
    import h5py

    path = Path(path)
    if path.suffix.lower() in (".pt", ".pth"):
        raise BadInput(
            f"{path.name}: a PyTorch pickle; pathotune reads no pickles",
            "use the .h5 files (CLAM writes h5_files/<slide>.h5 beside pt_files/; TRIDENT writes .h5 by default)",
        )
    if not path.is_file():
        raise BadInput(f"{path}: no such features file", "run `pathotune features` or check --features")
    try:
        with h5py.File(path, "r") as h5:
            name = next((n for n in FEATURE_NAMES if n in h5), None)
            if name is None:
                raise BadInput(
                    f"{path.name}: no 'features' dataset", "pass a features .h5 from pathotune, TRIDENT or CLAM"
                )
            features = np.asarray(h5[name][()], np.float32)
            feature_attrs = {k: plain_value(v) for k, v in h5[name].attrs.items()}
            coords = np.asarray(h5["coords"][()], np.float64) if "coords" in h5 else np.zeros((len(features), 2))
            coords_attrs = {k: plain_value(v) for k, v in h5["coords"].attrs.items()} if "coords" in h5 else {}
            file_attrs = {k: plain_value(v) for k, v in h5.attrs.items()}
    except OSError as exc:
        raise BadInput(f"{path.name}: not a readable HDF5 file ({first_line(exc)})") from None
    features = features.reshape(len(features), -1) if features.size else features.reshape(0, 0)
    coords = coords.reshape(-1, 2)
    if len(coords) != len(features):
        raise BadInput(f"{path.name}: {len(features)} features but {len(coords)} coords", "the file is damaged")
    flavor = _flavor(name, feature_attrs, coords_attrs, file_attrs)
    return FeaturesFile(features, np.rint(coords).astype(np.int64), flavor, feature_attrs,
                        coords_attrs or file_attrs)


def _flavor(name: str, feature_attrs: dict[str, Any], coords_attrs: dict[str, Any], file_attrs: dict[str, Any]) -> str:
    if feature_attrs.get("format") == FORMAT:
        return "pathotune"
    if name == "feats" or "stamp_version" in file_attrs:
        return "stamp"
    if "encoder" in feature_attrs or "patch_size_level0" in coords_attrs:
        return "trident"
    return "clam"
