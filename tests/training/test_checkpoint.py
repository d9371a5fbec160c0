"""Checkpoints: a flipped byte anywhere (header text or tensor data) is refused in one line, naming the file."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
import torch

from pathotune_cli.errors import BadInput
from pathotune_cli.training.checkpoint import load_checkpoint, save_checkpoint


def _checkpoint(path: Path) -> tuple[Path, torch.optim.Optimizer]:
    torch.manual_seed(0)
    weight = torch.nn.Parameter(torch.randn(8, 4))
    optimizer = torch.optim.AdamW([weight], lr=1e-3)
    weight.grad = torch.randn_like(weight)
    optimizer.step()
    save_checkpoint(path, {"w": weight.detach()}, {"w": weight.detach() * 2}, optimizer,
                    {"epoch": 3, "history": [{"epoch": 1, "note": "resumable"}], "config_digest": "abc"})
    return path, optimizer


def test_a_checkpoint_reads_back_what_was_saved(tmp_path: Path) -> None:
    path, optimizer = _checkpoint(tmp_path / "checkpoint.safetensors")
    current, best, state = load_checkpoint(path, optimizer)
    assert torch.equal(best["w"], current["w"] * 2) and state["epoch"] == 3


@pytest.mark.parametrize("where", ["metadata string", "tensor data", "last byte"])
def test_a_flipped_byte_in_a_checkpoint_is_refused(tmp_path: Path, where: str) -> None:
    path, optimizer = _checkpoint(tmp_path / "checkpoint.safetensors")
    raw = bytearray(path.read_bytes())
    (header_len,) = struct.unpack("<Q", raw[:8])
    at = {"metadata string": raw.index(b"resumable"), "tensor data": 8 + header_len + 5, "last byte": len(raw) - 1}
    raw[at[where]] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(BadInput, match="checksum does not match|is damaged") as info:
        load_checkpoint(path, optimizer)
    line = info.value.one_line()
    assert "\n" not in line and str(path) in line and "without --resume" in line
