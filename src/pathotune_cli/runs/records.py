"""Files a run leaves behind, each written to a temporary name and renamed, and where the run came from."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import platform
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

from pathotune_cli import __version__

RECORDED_ENV = ("HF_HUB_OFFLINE", "HF_HOME", "HF_HUB_CACHE", "PATHOTUNE_WEIGHTS", "CUDA_VISIBLE_DEVICES")


def write_text(path: Path, text: str) -> Path:
    """Write text atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def write_json(path: Path, data: Any) -> Path:
    """Write JSON atomically."""
    return write_text(path, json.dumps(data, indent=2, default=_default) + "\n")


def write_yaml(path: Path, data: Any) -> Path:
    """Write YAML atomically, keys in their given order."""
    return write_text(path, yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    """Write a CSV atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    os.replace(tmp, path)
    return path


def versions() -> dict[str, str]:
    """Versions of the packages that decide a run's numbers."""
    found = {"pathotune": __version__, "python": platform.python_version()}
    for name in ("torch", "timm", "open_clip", "numpy", "safetensors"):
        module = sys.modules.get(name)
        if module is None:
            try:
                module = __import__(name)
            except ImportError:
                continue
        found[name] = getattr(module, "__version__", "?")
    return found


def provenance(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Versions, command line, platform and the standard environment variables a run honoured."""
    return {
        "versions": versions(),
        "command": sys.argv,
        "platform": platform.platform(),
        "environment": {k: os.environ[k] for k in RECORDED_ENV if k in os.environ},
        **(extra or {}),
    }


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
