"""Phikon (HF ``ViTModel``) and Phikon-v2 (HF ``Dinov2Model``) mapped onto timm, on faithful small models.

The small models are real transformers models with the published configs' flags (LayerNorm eps, LayerScale,
patch 16), written with ``save_pretrained`` as Owkin published them; features through ``pathotune`` must equal
the model card's ``last_hidden_state[:, 0]``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pathotune_cli.errors import BadInput

from testdata import assert_close_to_scale

SIZES = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": 32, "patch_size": 16}


def _phikon(tmp_path: Path) -> tuple[torch.nn.Module, Path]:
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(0)
    config = ViTConfig(**SIZES, intermediate_size=256, layer_norm_eps=1e-12, qkv_bias=True, hidden_act="gelu")
    model = ViTModel(config).eval()  # with its pooler, as saved by Owkin (the model card drops it at load time)
    folder = tmp_path / "phikon"
    model.save_pretrained(folder, safe_serialization=False)  # pytorch_model.bin, as published
    return model, folder


def _phikon_v2(tmp_path: Path) -> tuple[torch.nn.Module, Path]:
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    config = Dinov2Config(**SIZES, mlp_ratio=4, layerscale_value=1e-5, layer_norm_eps=1e-6, qkv_bias=True)
    model = Dinov2Model(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("lambda1"):
                param.copy_(torch.rand_like(param) + 0.5)
    folder = tmp_path / "phikon-v2"
    model.save_pretrained(folder)  # model.safetensors, as published
    return model, folder


@pytest.mark.parametrize("name, make", [("phikon", _phikon), ("phikon-v2", _phikon_v2)])
def test_hf_checkpoint_maps_onto_timm_and_tunes(name, make, small_preset, tune, features_of, tmp_path: Path) -> None:
    reference, folder = make(tmp_path)
    yaml_path = small_preset(name, model_kwargs={"depth": 2, "embed_dim": 64, "num_heads": 2}, width=64, input_size=32)
    from pathotune_cli.config import load_backbone_preset

    preset = load_backbone_preset(yaml_path)
    images = torch.rand(2, 3, 32, 32)
    ours = features_of(yaml_path, images, folder)  # --weights FOLDER picks the published file name
    normalised = (images - torch.tensor(preset.mean).view(1, 3, 1, 1)) / torch.tensor(preset.std).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = reference(pixel_values=normalised).last_hidden_state[:, 0]
    assert_close_to_scale(ours, expected)
    tune(yaml_path, weights=folder)


def test_hf_vit_leftover_keys_are_named(tmp_path: Path, small_preset) -> None:
    from safetensors.torch import load_file, save_file

    from pathotune_cli.backbones import load_backbone
    from pathotune_cli.config import load_backbone_preset

    _, folder = _phikon_v2(tmp_path)
    state = load_file(str(folder / "model.safetensors"))
    state["encoder.layer.0.attention.attention.rotary.weight"] = torch.zeros(2)
    del state["encoder.layer.1.mlp.fc2.bias"]
    save_file(state, str(folder / "model.safetensors"))
    preset = load_backbone_preset(small_preset("phikon-v2", model_kwargs={"depth": 2, "embed_dim": 64, "num_heads": 2},
                                               width=64, input_size=32))
    with pytest.raises(BadInput, match=r"missing keys blocks\.1\.mlp\.fc2\.bias.*unexpected keys "
                                       r"encoder\.layer\.0\.attention\.attention\.rotary\.weight"):
        load_backbone(preset, folder)
