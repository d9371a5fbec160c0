"""`pathotune --help` answers fast because nothing heavy is imported until a command runs."""

from __future__ import annotations

import subprocess
import sys


def test_importing_the_cli_imports_no_torch() -> None:
    code = (
        "import sys, pathotune_cli, pathotune_cli.cli.app; "
        "print(sorted(m for m in ('torch', 'timm', 'open_clip', 'openslide', 'h5py') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_help_lists_every_command() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pathotune_cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for command in ("tune", "eval", "predict", "tile", "export", "inspect", "doctor", "demo", "presets", "weights"):
        assert command in out
