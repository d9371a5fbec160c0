"""Start-up: ``pathotune --help`` wall time (best of 3), what ``import pathotune_cli`` drags in, and how fast
the offline answers come: ``weights list``, ``doctor``, and ``tune`` refusing a backbone whose weights are not
here (it must fail before any work, so its time is the start-up's).

All run in fresh interpreters, as a user's shell would start them, offline (``HF_HUB_OFFLINE=1``) with an empty
Hugging Face cache. The interpreter's own start (``python -c pass``) is measured beside them for context.
These timings used to be asserted by unit tests, which then failed on a loaded or slower machine; here they are
figures with targets, measured when nothing else runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.core import Figure, Timer, info, log

HEAVY = ("torch", "timm", "open_clip", "openslide", "h5py", "tifffile", "scipy", "matplotlib")
REPEATS = 3


def _best(cmd: list[str], repeats: int = REPEATS, env: dict[str, str] | None = None, rc: int = 0) -> float:
    best = float("inf")
    for _ in range(repeats):
        with Timer() as t:
            done = subprocess.run(cmd, capture_output=True, env=env)
        if done.returncode != rc:
            raise RuntimeError(f"{' '.join(cmd)} exited {done.returncode}: {done.stderr.decode()[-300:]}")
        best = min(best, t.seconds)
    return best


def _offline_figures() -> list[Figure]:
    """Offline answers in fresh processes: the weight table, the doctor, a refused backbone."""
    kather = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "patches" / "kather2016-dev"
    module = [sys.executable, "-m", "pathotune_cli"]
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(Path(tmp) / "hub"),
               "PATHOTUNE_WEIGHTS": str(Path(tmp) / "weights.yaml")}
        weights_s = _best([*module, "weights", "list", "--json"], env=env)
        doctor_s = _best([*module, "doctor", "--json"], env=env)
        refused = [*module, "tune", "--preset", "kather2016", "--data", str(kather), "--backbone", "vit-b16-in21k",
                   "--out", str(Path(tmp) / "run")]
        refused_s = _best(refused, env=env, rc=2) if kather.is_dir() else float("nan")
    return [
        Figure("startup.weights_list_seconds", "startup", "pathotune weights list --json, offline, best of 3",
               weights_s, "s", target=5.0, op="<=", measure="value"),
        Figure("startup.doctor_seconds", "startup", "pathotune doctor --json, offline, best of 3",
               doctor_s, "s", target=5.0, op="<=", measure="value"),
        Figure("startup.missing_weights_seconds", "startup",
               "tune with a backbone whose weights are missing: exit 2, best of 3", refused_s, "s",
               target=2.0, op="<=", measure="value", note="fails before reading data or building a model"),
    ]


def help_command() -> list[str]:
    """The installed ``pathotune`` script next to this interpreter, else ``python -m pathotune_cli``."""
    script = Path(sys.executable).parent / "pathotune"
    if script.is_file():
        return [str(script), "--help"]
    found = shutil.which("pathotune")
    return [found, "--help"] if found else [sys.executable, "-m", "pathotune_cli", "--help"]


def run(work: Any, quick: bool, seed: int = 0) -> list[Figure]:
    """The start-up figures."""
    cmd = help_command()
    log(f"startup: {' '.join(Path(c).name if i == 0 else c for i, c in enumerate(cmd))} (best of {REPEATS})")
    subprocess.run(cmd, check=True, capture_output=True)  # warm the file cache, as a second run would be
    help_s = _best(cmd)
    python_s = _best([sys.executable, "-c", "pass"])
    code = (
        "import sys, pathotune_cli, pathotune_cli.cli.app; "
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout.strip()
    heavy = [m for m in loaded.split(",") if m]
    return [
        *_offline_figures(),
        info("startup.python", "startup", "python -c pass (interpreter start)", python_s, "s"),
        Figure(
            "startup.help_seconds",
            "startup",
            "pathotune --help, best of 3",
            help_s,
            "s",
            target=0.5,
            op="<=",
            measure="value",
            note=" ".join(Path(cmd[0]).name if i == 0 else c for i, c in enumerate(cmd)),
        ),
        Figure(
            "startup.heavy_imports",
            "startup",
            "heavy modules loaded by import pathotune_cli (+ cli.app)",
            float(len(heavy)),
            "modules",
            target=0.0,
            op="<=",
            measure="value",
            note=", ".join(heavy) if heavy else f"none of {', '.join(HEAVY)}",
            extra={"loaded": heavy},
        ),
    ]
