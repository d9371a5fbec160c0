"""Kernels are chosen by measurement on the machine, cached, pinnable, and every choice computes the same thing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pathotune_cli.backbones import load_backbone
from pathotune_cli.backbones.kernels import KernelChoice, cached_choices, candidates, choose
from pathotune_cli.config.run import KernelSpec, PromptSettings
from pathotune_cli.engine.model import PromptedModel
from pathotune_cli.errors import BadInput
from pathotune_cli.hardware import Placement

from testdata import assert_close_to_scale, tiny_preset

BF16 = Placement("cpu", "bf16", "test")
FP16 = Placement("cpu", "fp16", "test")  # CPU autocast runs fp16 too: the GPU precision's numerics, tested here
FP32 = Placement("cpu", "fp32", "test")


def _attention(backbone) -> str:
    return "fused" if backbone.vit.blocks[0].attn.fused_attn else "plain"


def _fake_timer(backbone, cost: dict[str, float]):
    """A clock that advances, at every reading, by the cost of the kernels the backbone runs with now."""
    clock = [0.0]

    def timer() -> float:
        dtype = backbone.vit.blocks[0].mlp.fc1.weight.dtype
        weights = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "fp32")
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
    assert candidates(backbone, "fp16", "cuda") == [KernelChoice(a, w) for a in ("fused", "plain")
                                                    for w in ("fp32", "fp16")]  # the autocast dtype's storage
    with pytest.raises(BadInput, match="weights=bf16 store the frozen weights for bf16 autocast.*precision is fp32"):
        candidates(backbone, "fp32", "cpu", KernelSpec.parse("bf16"))  # refused, never silently fp32
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
    for placement in (FP32, BF16, FP16):
        for choice in candidates(backbone, placement.precision, "cpu"):
            backbone.apply_kernels(choice, placement)
            with placement.autocast():
                logits = model(images).float()
            grads = torch.autograd.grad(logits.square().sum(), params)
            outputs[(placement.precision, choice)] = (logits.detach(), torch.cat([g.flatten() for g in grads]))
    reference = outputs[("fp32", KernelChoice("fused", "fp32"))]
    for (precision, choice), (logits, grads) in outputs.items():
        rel = 1e-4 if precision == "fp32" else 0.05  # bf16 rounds at 2^-8 per op (fp16 at 2^-11), a few ops deep
        assert_close_to_scale(logits, reference[0], rel=rel, what=f"{precision} {choice.describe()}: ")
        assert_close_to_scale(grads, reference[1], rel=rel * 2, what=f"{precision} {choice.describe()} grads: ")
    for low in ("bf16", "fp16"):  # weights stored in the autocast dtype = autocast's own casts
        same = [v for (p, c), v in outputs.items() if p == low]
        assert len(same) == 4
        assert_close_to_scale(same[0][0], same[1][0], rel=0.02, what=f"{low} stored vs cast: ")


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


def test_a_gpu_holds_only_the_low_precision_copy_of_the_frozen_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stored bf16/fp16 weights halve the device's memory: on a GPU no fp32 copy stays beside them (simulated
    on the CPU), the fp32 originals live in host memory, and code outside autocast runs the stored values."""
    import pathotune_cli.backbones.base as base

    monkeypatch.setattr(base, "_keeps_fp32", lambda device: False)
    torch.manual_seed(0)
    backbone = load_backbone(tiny_preset()).eval()
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        reference = backbone(images)
        first = backbone.frozen_state()
        backbone.apply_kernels(KernelChoice("plain", "fp16"), FP16)
        qkv = backbone.vit.blocks[0].attn.qkv
        assert qkv.weight.dtype == torch.float16 and qkv.__dict__["_fp32_params"] == (None, None)
        linears = [m for m in backbone.modules() if isinstance(m, torch.nn.Linear)]
        assert all(m.weight.dtype == torch.float16 for m in linears)
        outside = backbone(images)  # no autocast: the stored values in fp32
        assert outside.dtype == torch.float32
        assert_close_to_scale(outside, reference, rel=0.01)
        with FP16.autocast():
            assert_close_to_scale(backbone(images).float(), reference, rel=0.05)
        assert all(torch.equal(first[k], v) for k, v in backbone.frozen_state().items())  # fingerprint: originals
        backbone.apply_kernels(KernelChoice("fused", "fp32"), FP32)  # placed again in fp32: the originals back
        assert torch.equal(backbone(images), reference)


def test_stored_weights_pinned_under_a_precision_auto_resolves_otherwise_are_refused_before_the_run_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pathotune_cli.hardware as hardware
    from pathotune_cli.demo_data import write_demo_tiles
    from pathotune_cli.runs.tune import TuneOptions, resolve_config, tune_run

    monkeypatch.setattr(hardware, "cpu_has_fast_bf16", lambda: False)  # a CPU where auto means fp32
    data = write_demo_tiles(tmp_path / "tiles", per_class=2, seed=0)
    config = resolve_config(TuneOptions(preset="demo", data=data, backbone="tiny-random", out=tmp_path / "run",
                                        epochs=1, sets=("runtime.kernels=bf16",)))
    with pytest.raises(BadInput) as refused:
        tune_run(config)
    assert refused.value.one_line() == ("kernels weights=bf16 store the frozen weights for bf16 autocast, and this "
                                        "run's precision is fp32; add --precision bf16, or pin weights=fp32 or auto")
    assert not (tmp_path / "run").exists()  # nothing claimed: the corrected command just runs
