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
from typing import TYPE_CHECKING, Any

from pathotune_cli import __version__
from pathotune_cli.files import write_json

if TYPE_CHECKING:
    from pathotune_cli.cluster import Shard

RECORDED_ENV = (
    "HF_HUB_OFFLINE", "HF_HOME", "HF_HUB_CACHE", "PATHOTUNE_WEIGHTS", "CUDA_VISIBLE_DEVICES",
    "SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN",
    "SLURM_PROCID", "SLURM_STEP_NUM_TASKS", "RANK", "WORLD_SIZE", "LOCAL_RANK", "OMP_NUM_THREADS",
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


def provenance(extra: dict[str, object] | None = None) -> dict[str, Any]:
    """Versions, command line, platform and the standard environment variables a run honoured."""
    return {
        "versions": versions(),
        "command": sys.argv,
        "platform": platform.platform(),
        "host": platform.node(),
        "environment": {k: os.environ[k] for k in RECORDED_ENV if k in os.environ},
        **(extra or {}),
    }


def write_run_record(out: Path, settings: dict[str, object], started: float, name: str = "run.json",
                     **extra: object) -> Path:
    """``out/<name>`` for a per-slide command: provenance, the run's settings and its timings.

    ``name`` is ``run.json``, or a shard's ``run-<I>-of-<N>.json``.
    """
    return write_json(out / name, provenance({
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
        "seconds": round(time.time() - started, 2),
        "settings": settings,
        **extra,
    }))


def add_to_run_record(path: Path, **extra: object) -> None:
    """Add what is known only later (the kernels a fit chose) to a ``run.json`` written at the start."""
    import json

    record = json.loads(path.read_text()) if path.is_file() else {}
    write_json(path, {**record, **extra})


def write_slides_record(out: Path, command: str, shard: Shard, all_slides: list[Path], settings: dict[str, object],
                        started: float, status: str, **extra: object) -> Path:
    """The run record of a per-slide command, or of one shard of it (``Shard.run_record_name``).

    Written when it starts (``status`` running) and when it ends: its shard, and every slide of the whole run by
    name, so ``pathotune merge`` can tell which slides are still missing.
    """
    return write_run_record(
        out, settings, started, shard.run_record_name(), command=command, status=status,
        shard={"index": shard.index, "count": shard.count, "source": shard.source},
        all_slides=[p.name for p in all_slides], **extra,
    )
