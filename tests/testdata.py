"""Where the real test data is, and small presets, shared by every test module (``pythonpath = tests``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = (ROOT / ".." / "shared" / "data").resolve()
SLIDES = SHARED_DATA / "slides"
KATHER = SHARED_DATA / "patches" / "kather2016-dev"


def require_data(path: Path) -> Path:
    """A real data file or folder: missing is a failure under CI=true (CI never passes by skipping), else a skip."""
    if path.exists():
        return path
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"real test data {path} is missing (CI=true makes this a failure)")
    pytest.skip(f"real test data {path} is missing")


def tiny_preset(**overrides):  # noqa: ANN003, ANN201
    """A 2-block random timm ViT preset (width 64, 64 px), overridable field by field."""
    from pathotune_cli.config.schema import BackbonePreset

    base = dict(
        name="test-tiny", family="timm_vit", model="vit_tiny_patch16_224",
        model_kwargs={"depth": 2, "embed_dim": 64, "num_heads": 2}, weights="random",
        input_size=64, patch_size=16, width=64, num_prefix_tokens=1, pool="token", text_encoder="hash",
    )
    base.update(overrides)
    return BackbonePreset(**base)


class MemoryStore:
    """The ``ImageStore`` interface over uint8 tiles already in memory, (N, 3, S, S)."""

    def __init__(self, images) -> None:  # noqa: ANN001
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, index):  # noqa: ANN001, ANN201
        import numpy as np
        import torch

        return self.images[torch.as_tensor(np.asarray(index))]


def break_prompt_metadata(good: Path, out: Path) -> Path:
    """A copy of a prompt file whose JSON metadata no longer parses (same header length, so still safetensors)."""
    import struct

    raw = bytearray(good.read_bytes())
    (n,) = struct.unpack("<Q", raw[:8])
    header = raw[8 : 8 + n].decode()
    broken = header.replace('"format\\": \\"pathotune-prompts', '"format\\" \\"pathotune-prompts')
    assert broken != header, "the metadata layout changed; update break_prompt_metadata"
    raw[8 : 8 + n] = broken.ljust(n).encode()
    out.write_bytes(bytes(raw))
    return out
