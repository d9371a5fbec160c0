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


def tiny_preset(**overrides):
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

    def __init__(self, images) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, index):
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


FP32_REL = 1e-4
"""How far two fp32 computations of the same function by different kernels may differ, as a share of the
tensors' largest magnitude. fp32 rounds at 6e-8 per operation; fused and plain attention, AMX, AVX512 and GPU
kernels sum in different orders, and a sum of K terms can drift by about K roundings of its scale (K is at most
a few thousand here). 1e-4 of the scale covers every kernel on every machine, while a real difference (a token
in the wrong place, a block skipped) is orders of magnitude larger. The bound follows the tensor's scale, never
one machine's last bits."""


def assert_close_to_scale(actual, expected, rel: float = FP32_REL, what: str = "") -> None:
    """``max |actual - expected| <= rel * max(|actual|, |expected|)`` for tensors or arrays of the same shape."""
    import torch

    a = torch.as_tensor(actual).detach().double()
    e = torch.as_tensor(expected).detach().double()
    assert a.shape == e.shape, f"{what}shapes differ: {tuple(a.shape)} vs {tuple(e.shape)}"
    scale = max(float(a.abs().max()) if a.numel() else 0.0, float(e.abs().max()) if e.numel() else 0.0)
    diff = float((a - e).abs().max()) if a.numel() else 0.0
    assert diff <= rel * scale or diff == 0.0, f"{what}max |diff| {diff:.3e} exceeds {rel:g} of the scale {scale:.3e}"


def forged_png(path: Path, width: int, height: int) -> Path:
    """A PNG whose header states ``width`` x ``height`` pixels and whose data is a few bytes (a bomb's shape)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
                     + chunk(b"IEND", b""))
    return path
