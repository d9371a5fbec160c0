"""Where a run came from: versions, command line, platform and the standard environment it honoured.

Every command that writes (``tune``, ``tile``, ``predict``) leaves a ``run.json`` built from ``provenance``, so
a folder says how it was made.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from pathotune_cli import __version__
from pathotune_cli.files import write_json

RECORDED_ENV = (
    "HF_HUB_OFFLINE", "HF_HOME", "HF_HUB_CACHE", "PATHOTUNE_WEIGHTS", "CUDA_VISIBLE_DEVICES",
    "SLURM_JOB_ID", "SLURM_ARRAY_TASK_ID", "RANK", "WORLD_SIZE",
)


def versions() -> dict[str, str]:
    """Versions of the packages that decide a run's numbers (imported ones, else importable ones)."""
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
        "host": platform.node(),
        "environment": {k: os.environ[k] for k in RECORDED_ENV if k in os.environ},
        **(extra or {}),
    }


def write_run_record(out: Path, settings: dict[str, Any], started: float, **extra: Any) -> Path:
    """``out/run.json`` for a per-slide command: provenance, the run's settings and its timings."""
    return write_json(out / "run.json", provenance({
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
        "seconds": round(time.time() - started, 2),
        "settings": settings,
        **extra,
    }))


def add_to_run_record(path: Path, **extra: Any) -> None:
    """Add what is known only later (the kernels a fit chose) to a ``run.json`` written at the start."""
    import json

    record = json.loads(path.read_text()) if path.is_file() else {}
    write_json(path, {**record, **extra})
