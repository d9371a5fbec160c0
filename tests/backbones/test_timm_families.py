"""UNI, UNI2-h, Virchow2, H-optimus-0, Prov-GigaPath, DINOv2 and the ImageNet ViT on faithful small models.

Each small model is built the way its model card builds the real one (timm kwargs with Python objects, not our
string names), saved under the real file name and format, found the way a user's copy would be found (Hugging
Face cache, weight map, ``--weights``), and must give the same features through ``pathotune`` as the reference
model gives by the model card's recipe; then ``pathotune`` prompts tune on it for an epoch.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.layers import SwiGLUPacked

from pathotune_cli.backbones.weights import read_weight_map, write_weight_map

from testdata import assert_close_to_scale

SWIGLU = {"mlp_layer": SwiGLUPacked, "act_layer": torch.nn.SiLU}
SMALL_SWIGLU = {"depth": 2, "embed_dim": 96, "num_heads": 2}
SMALL = {"depth": 2, "embed_dim": 64, "num_heads": 2}

# preset: (timm architecture, model-card kwargs, small sizes, input px, file name, how it is found, pooling)
CASES = {
    "uni": ("vit_large_patch16_224", {"init_values": 1e-5, "dynamic_img_size": True}, SMALL, 32,
            "pytorch_model.bin", "hf-cache", "token"),
    "uni2-h": ("vit_giant_patch14_224", {"patch_size": 14, "init_values": 1e-5, "mlp_ratio": 2.66667 * 2,
               "no_embed_class": True, "reg_tokens": 8, "dynamic_img_size": True, **SWIGLU},
               SMALL_SWIGLU, 28, "pytorch_model.bin", "weight-map", "token"),
    "virchow2": ("vit_huge_patch14_224", {"init_values": 1e-5, "mlp_ratio": 5.3375, "reg_tokens": 4,
                 "global_pool": "", "dynamic_img_size": True, **SWIGLU},
                 SMALL_SWIGLU, 28, "model.safetensors", "hf-cache", "token+avg"),
    "h-optimus-0": ("vit_giant_patch14_reg4_dinov2", {"init_values": 1e-5}, SMALL_SWIGLU, 28,
                    "pytorch_model.bin", "hf-cache-pinned", "token"),
    "prov-gigapath": ("vit_giant_patch14_dinov2", {"patch_size": 16, "init_values": 1e-5, "mlp_ratio": 5.33334},
                      SMALL_SWIGLU, 32, "pytorch_model.bin", "explicit", "token"),
    "dinov2-vitb14": ("vit_base_patch14_dinov2", {}, SMALL, 28, "model.safetensors", "hf-cache", "token"),
    "dinov2-vitl14": ("vit_large_patch14_dinov2", {}, SMALL, 28, "model.safetensors", "hf-cache", "token"),
    "vit-b16-in21k": ("vit_base_patch16_224", {}, SMALL, 32, "model.safetensors", "hf-cache", "token"),
}
SAVED_AT = {"dinov2-vitb14": 56, "dinov2-vitl14": 56}
"""DINOv2 weights are published at 518 px and run at 224: save the small ones bigger so loading must resample."""


@pytest.mark.parametrize("name", sorted(CASES))
def test_small_faithful_model_loads_matches_reference_and_tunes(
    name: str, small_preset, hf_cache, tune, features_of, scale_layers, tmp_path: Path
) -> None:
    arch, card_kwargs, sizes, px, filename, found, pool = CASES[name]
    saved_px = SAVED_AT.get(name, px)
    torch.manual_seed(0)
    reference = timm.create_model(arch, pretrained=False, num_classes=0, img_size=saved_px, **card_kwargs, **sizes)
    scale_layers(reference)
    reference.eval()
    state = reference.state_dict()

    from pathotune_cli.config import load_backbone_preset

    real = load_backbone_preset(name)
    yaml_path = small_preset(
        name, model_kwargs={k: v for k, v in sizes.items()}, width=sizes["embed_dim"], input_size=px
    )
    preset = load_backbone_preset(yaml_path)
    assert (preset.family, preset.key_layout, preset.pool, preset.num_prefix_tokens, preset.num_register_tokens) == (
        real.family, real.key_layout, real.pool, real.num_prefix_tokens, real.num_register_tokens
    )

    repo = real.weights.removeprefix("hf-hub:")
    if found == "hf-cache":
        path = hf_cache(repo, filename)
    elif found == "hf-cache-pinned":
        path = hf_cache(repo, filename, revision=real.revision)
    else:
        path = tmp_path / "downloads" / filename
        path.parent.mkdir()
    if filename.endswith(".safetensors"):
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    explicit = path if found == "explicit" else None
    if found == "weight-map":
        write_weight_map({**read_weight_map(), name: str(path)})

    images = torch.rand(2, 3, px, px)
    ours = features_of(yaml_path, images, explicit)
    normalised = (images - torch.tensor(preset.mean).view(1, 3, 1, 1)) / torch.tensor(preset.std).view(1, 3, 1, 1)
    if saved_px != px:  # the reference is timm's own loader of the same file at the run size
        reference = timm.create_model(arch, pretrained=True, num_classes=0, img_size=px, **card_kwargs, **sizes,
                                      pretrained_cfg_overlay={"file": str(path)}).eval()
    with torch.no_grad():
        tokens = reference.forward_features(normalised)
    expected = tokens[:, 0]
    if pool == "token+avg":  # Virchow2's model card: CLS token and the mean of the patch tokens (registers out)
        expected = torch.cat([tokens[:, 0], tokens[:, reference.num_prefix_tokens :].mean(1)], dim=-1)
    assert_close_to_scale(ours, expected)

    summary = tune(yaml_path, weights=explicit)
    assert summary.backbone == name


def test_swiglu_string_mapping_builds_the_same_keys_as_the_model_card(small_preset) -> None:
    from pathotune_cli.backbones.timm_vit import build_timm_vit
    from pathotune_cli.config import load_backbone_preset

    preset = load_backbone_preset(small_preset("uni2-h", model_kwargs=SMALL_SWIGLU, width=96, input_size=28))
    ours = build_timm_vit(preset)
    card = timm.create_model("vit_giant_patch14_224", pretrained=False, num_classes=0, img_size=28,
                             **CASES["uni2-h"][1], **SMALL_SWIGLU)
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == {
        k: tuple(v.shape) for k, v in card.state_dict().items()
    }
    assert type(ours.blocks[0].mlp).__name__ == "GluMlp" and isinstance(ours.blocks[0].mlp.act, torch.nn.SiLU)


@pytest.mark.parametrize("key, value, message", [
    ("mlp_layer", "swiglu_fused", "mlp_layer 'swiglu_fused' is not one of mlp, swiglu_packed"),
    ("act_layer", "swish", "act_layer 'swish' is not one of gelu"),
    ("norm_eps", -1, "norm_eps must be a small positive number"),
])
def test_unknown_timm_object_names_are_clear_errors(key: str, value: object, message: str, small_preset) -> None:
    from pathotune_cli.backbones.timm_vit import build_timm_vit
    from pathotune_cli.config import load_backbone_preset
    from pathotune_cli.errors import BadInput

    preset = load_backbone_preset(
        small_preset("uni2-h", model_kwargs={**SMALL_SWIGLU, key: value}, width=96, input_size=28)
    )
    with pytest.raises(BadInput, match=message):
        build_timm_vit(preset)
