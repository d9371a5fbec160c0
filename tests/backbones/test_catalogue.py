"""Every shipped backbone preset: complete, buildable at full size on the meta device, and covered by a test."""

from __future__ import annotations

import pytest
import torch

from pathotune_cli.config import list_presets, load_backbone_preset

COVERED = {  # preset -> the test that loads a faithful small model of it and tunes on it
    "uni": "test_timm_families", "uni2-h": "test_timm_families", "virchow2": "test_timm_families",
    "h-optimus-0": "test_timm_families", "prov-gigapath": "test_timm_families",
    "dinov2-vitb14": "test_timm_families", "dinov2-vitl14": "test_timm_families",
    "vit-b16-in21k": "test_timm_families", "phikon": "test_hf_families", "phikon-v2": "test_hf_families",
    "conch": "test_conch", "quiltnet-b32": "test_open_clip_families", "clip-vit-b16": "test_open_clip_families",
    "pathoduet-he": "test_pathoduet", "pathoduet-ihc": "test_pathoduet", "tiny-random": "tests/engine",
}
NAMES = list_presets("backbones")


def test_every_catalogue_entry_has_a_faithful_small_model_test() -> None:
    assert set(NAMES) == set(COVERED)


@pytest.mark.parametrize("name", NAMES)
def test_preset_states_what_a_lab_needs_and_builds_at_full_size(name: str) -> None:
    from pathotune_cli.backbones import adapter_class
    from pathotune_cli.backbones.timm_vit import check_matches_preset

    preset = load_backbone_preset(name)
    assert preset.description and preset.licence and preset.citation
    if preset.weights != "random":
        assert preset.source.startswith("https://") and preset.weight_files
        assert preset.weights.startswith("hf-hub:") or preset.weights == "local"
    with torch.device("meta"):
        module = adapter_class(preset).build_module(preset)
    if preset.family == "open_clip":
        assert module.visual.conv1.out_channels == preset.width
        return
    trunk = getattr(module, "trunk", module)
    check_matches_preset(trunk, preset)  # width, patch, prefix tokens and registers as stated
    assert trunk.patch_embed.img_size == (preset.input_size, preset.input_size)
    if preset.family == "pathoduet":
        assert preset.mean == (0.0, 0.0, 0.0) and preset.std == (1.0, 1.0, 1.0) and preset.pool == "avg"


def test_architecture_flags_of_the_pathology_giants() -> None:
    flags = {}
    for name in ("uni2-h", "virchow2", "h-optimus-0", "prov-gigapath"):
        preset = load_backbone_preset(name)
        kw = preset.model_kwargs
        flags[name] = (kw.get("mlp_layer"), kw.get("act_layer"), kw.get("reg_tokens", 0), kw.get("init_values"))
    assert flags == {
        "uni2-h": ("swiglu_packed", "silu", 8, 1e-5),
        "virchow2": ("swiglu_packed", "silu", 4, 1e-5),
        "h-optimus-0": ("swiglu_packed", "silu", 4, 1e-5),
        "prov-gigapath": ("swiglu_packed", "silu", 0, 1e-5),
    }
    assert load_backbone_preset("virchow2").pool == "token+avg"


def test_a_wrong_hash_format_in_a_preset_is_refused() -> None:
    from pathotune_cli.errors import BadInput

    with pytest.raises(BadInput, match="sha256 must be 64 lowercase hex digits"):
        load_backbone_preset("uni", overrides={"sha256": "abc"})
