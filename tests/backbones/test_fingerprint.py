"""The backbone fingerprint every prompt file records must never change for the same weights."""

from __future__ import annotations

import torch

from pathotune_cli.backbones.fingerprint import fingerprint


def test_fingerprint_is_stable_across_versions() -> None:
    # the value pathotune 0.1 wrote for these tensors: a change here orphans every prompt file users hold
    state = {
        "blocks.0.weight": torch.arange(6, dtype=torch.float32).reshape(2, 3),
        "scale": torch.tensor(1.5, dtype=torch.bfloat16),
        "empty": torch.zeros(0),
    }
    assert fingerprint(state) == "fa4c6f5f121240fb"
    assert fingerprint(dict(reversed(list(state.items())))) == "fa4c6f5f121240fb"  # name order, not dict order


def test_fingerprint_sees_every_byte_name_and_dtype() -> None:
    state = {"w": torch.zeros(4, 4)}
    base = fingerprint(state)
    nudged = {"w": torch.zeros(4, 4)}
    nudged["w"][3, 3] = 1e-30
    assert fingerprint(nudged) != base
    assert fingerprint({"v": torch.zeros(4, 4)}) != base
    assert fingerprint({"w": torch.zeros(4, 4, dtype=torch.float64)}) != base
    assert fingerprint({"w": torch.zeros(16)}) != base
    assert fingerprint({"w": torch.zeros(8, 4)[::2]}) == base  # a strided view hashes as its values
