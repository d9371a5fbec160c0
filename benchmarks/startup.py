"""Start-up: ``pathotune --help`` wall time (best of 3) and what ``import pathotune_cli`` drags in.

Both run in fresh interpreters, as a user's shell would start them. The interpreter's own start
(``python -c pass``) is measured beside them for context.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks.core import Figure, Timer, info, log

HEAVY = ("torch", "timm", "open_clip", "openslide", "h5py", "tifffile", "scipy", "matplotlib")
REPEATS = 3


def _best(cmd: list[str], repeats: int = REPEATS) -> float:
    best = float("inf")
    for _ in range(repeats):
        with Timer() as t:
            subprocess.run(cmd, check=True, capture_output=True)
        best = min(best, t.seconds)
    return best


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
