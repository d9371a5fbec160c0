"""Kernels are chosen by measurement on the machine, cached, pinnable, and every choice computes the same thing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pathotune_cli.backbones import load_backbone
from pathotune_cli.backbones.kernels import KernelChoice, cached_choices, candidates, choose
from pathotune_cli.config.run import KernelSpec, PromptSettings
from pathotune_cli.engine.model import PromptedModel
from pathotune_cli.hardware import Placement

from testdata import assert_close_to_scale, tiny_preset

BF16 = Placement("cpu", "bf16", "test")
FP32 = Placement("cpu", "fp32", "test")


def _attention(backbone) -> str:
    return "fused" if backbone.vit.blocks[0].attn.fused_attn else "plain"


def _fake_timer(backbone, cost: dict[str, float]):
    """A clock that advances, at every reading, by the cost of the kernels the backbone runs with now."""
    clock = [0.0]

    def timer() -> float:
        weights = "bf16" if backbone.vit.blocks[0].mlp.fc1.weight.dtype == torch.bfloat16 else "fp32"
        clock[0] += cost[_attention(backbone)] + cost[weights]
        return clock[0]

    return timer


@pytest.mark.parametrize(("cost", "expected"), [
    ({"fused": 0.1, "plain": 0.5, "fp32": 0.0, "bf16": 0.2}, KernelChoice("fused", "fp32")),
    ({"fused": 0.5, "plain": 0.1, "fp32": 0.3, "bf16": 0.0}, KernelChoice("plain", "bf16")),
])
def test_calibration_picks_the_faster_kernels_and_reuses_its_choice(cost: dict, expected: KernelChoice,
                                                                     tmp_path: Path) -> None:
    backbone = load_backbone(tiny_preset())
    cache = tmp_path / "kernels.json"
    assert choose(backbone, BF16, "training", timer=_fake_timer(backbone, cost), cache=cache) == expected
    entry = next(iter(cached_choices(cache).values()))
    assert entry["choice"] == {"attention": expected.attention, "weights": expected.weights}
    assert len(entry["seconds"]) == 4  # every candidate was timed

    def no_timing() -> float:
        raise AssertionError("measured again instead of using the cache")

    assert choose(backbone, BF16, "training", timer=no_timing, cache=cache) == expected
    assert choose(backbone, BF16, "inference", timer=_fake_timer(backbone, cost), cache=cache) == expected
    assert len(cached_choices(cache)) == 2  # one entry per pass


def test_pinned_kernels_are_not_measured(tmp_path: Path) -> None:
    backbone = load_backbone(tiny_preset())
    spec = KernelSpec.parse("attention=plain,weights=bf16")
    assert candidates(backbone, "bf16", "cpu", spec) == [KernelChoice("plain", "bf16")]
    assert candidates(backbone, "fp32", "cpu", KernelSpec.parse("bf16")) == [KernelChoice("fused", "fp32"),
                                                                          KernelChoice("plain", "fp32")]
    assert choose(backbone, BF16, "training", spec, cache=tmp_path / "k.json") == KernelChoice("plain", "bf16")
    assert not (tmp_path / "k.json").exists()
    with pytest.raises(ValueError, match="use attention=fused|plain"):
        KernelSpec.parse("attention=flash")


def test_every_kernel_gives_the_same_features_and_gradients(demo_task) -> None:
    from pathotune_cli.engine.text import hash_encode

    torch.manual_seed(0)
    backbone = load_backbone(tiny_preset())
    model = PromptedModel(backbone, PromptSettings(method="pathotune"), 4, hash_encode(demo_task.texts())).eval()
    images = torch.rand(4, 3, 64, 64)
    params = [p for p in model.parameters() if p.requires_grad]
    outputs = {}
    for placement in (FP32, BF16):
        for choice in candidates(backbone, placement.precision, "cpu"):
            backbone.apply_kernels(choice, placement)
            with placement.autocast():
                logits = model(images).float()
            grads = torch.autograd.grad(logits.square().sum(), params)
            outputs[(placement.precision, choice)] = (logits.detach(), torch.cat([g.flatten() for g in grads]))
    reference = outputs[("fp32", KernelChoice("fused", "fp32"))]
    for (precision, choice), (logits, grads) in outputs.items():
        rel = 1e-4 if precision == "fp32" else 0.05  # bf16 rounds at 2^-8 per op, a few ops deep
        assert_close_to_scale(logits, reference[0], rel=rel, what=f"{precision} {choice.describe()}: ")
        assert_close_to_scale(grads, reference[1], rel=rel * 2, what=f"{precision} {choice.describe()} grads: ")
    bf16 = [v for (p, c), v in outputs.items() if p == "bf16"]
    assert_close_to_scale(bf16[0][0], bf16[1][0], rel=0.02)  # weights stored in bf16 = autocast's own casts


def test_a_fingerprint_is_computed_once_per_weight_file_and_survives_bf16_storage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    from safetensors.torch import save_file

    import pathotune_cli.backbones.fingerprint as fp

    backbone = load_backbone(tiny_preset())
    file = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in backbone.vit.state_dict().items()}, str(file))
    loaded = load_backbone(tiny_preset(), weights=file)
    calls = []
    real = fp.fingerprint
    monkeypatch.setattr(fp, "fingerprint", lambda state: calls.append(1) or real(state))
    first = fp.fingerprint_of(loaded)
    assert fp.fingerprint_of(loaded) == first and len(calls) == 1  # cached
    loaded.apply_kernels(KernelChoice("plain", "bf16"), BF16)
    assert real(loaded.frozen_state()) == first  # the fp32 originals, not the bf16 copies
    os.utime(file, ns=(1, 1))
    assert fp.fingerprint_of(loaded) == first and len(calls) == 2  # a changed file is hashed again


def test_weights_stored_in_bf16_still_run_in_full_precision_outside_autocast() -> None:
    """Code that runs without autocast (explanations, the two-pass gradient's first pass) gets the fp32 layer."""
    torch.manual_seed(0)
    backbone = load_backbone(tiny_preset()).eval()
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        reference = backbone(images)
        backbone.apply_kernels(KernelChoice("fused", "bf16"), BF16)
        assert backbone.vit.blocks[0].attn.qkv.weight.dtype == torch.bfloat16
        assert torch.equal(backbone(images), reference)  # the fp32 originals, bit for bit
        with BF16.autocast():
            assert_close_to_scale(backbone(images).float(), reference, rel=0.05)
        backbone.apply_kernels(KernelChoice("fused", "fp32"), FP32)
        assert backbone.vit.blocks[0].attn.qkv.weight.dtype == torch.float32
        assert "forward" not in backbone.vit.blocks[0].attn.qkv.__dict__
        assert torch.equal(backbone(images), reference)
