"""The slide layer stands beside the engine: it never imports torch or the model packages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

WSI = Path(__file__).resolve().parents[2] / "src" / "pathotune_cli" / "wsi"
FORBIDDEN = (
    "torch",
    "timm",
    "open_clip",
    "pathotune_cli.engine",
    "pathotune_cli.backbones",
    "pathotune_cli.training",
)


def test_wsi_modules_import_no_torch_or_engine() -> None:
    modules = [f"pathotune_cli.wsi.{p.stem}" for p in sorted(WSI.glob("*.py")) if p.stem != "__init__"]
    code = (
        f"import sys, importlib; [importlib.import_module(m) for m in {modules!r}]; "
        f"print(sorted(m for m in sys.modules if m.startswith({FORBIDDEN!r})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_wsi_source_names_no_upper_layer() -> None:
    for path in WSI.glob("*.py"):
        text = path.read_text()
        for name in (
            "import torch",
            "from torch",
            "pathotune_cli.engine",
            "pathotune_cli.runs",
            "pathotune_cli.cli",
        ):
            assert name not in text, f"{path.name} mentions {name}"
