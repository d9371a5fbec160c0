"""The token layout into the first block, for CLS-only, CLS-plus-registers, no-CLS and patch-14 backbones."""

from __future__ import annotations

import pytest
import torch

from pathotune_cli.backbones import load_backbone
from pathotune_cli.config.run import PromptSettings
from pathotune_cli.engine.model import PromptedModel
from pathotune_cli.engine.text import hash_encode


def _capture_block_inputs(model: PromptedModel) -> list[torch.Tensor]:
    """Tokens entering each block, the last one too (which a class-token model runs through ``block_head``)."""
    seen: list[torch.Tensor] = []
    block, head = model.backbone.block, model.backbone.block_head

    def spy(index: int, tokens: torch.Tensor) -> torch.Tensor:
        seen.append(tokens.detach().clone())
        return block(index, tokens)

    def spy_head(index: int, tokens: torch.Tensor, rows: int) -> torch.Tensor:
        seen.append(tokens.detach().clone())
        return head(index, tokens, rows)

    model.backbone.block = spy  # type: ignore[method-assign]
    model.backbone.block_head = spy_head  # type: ignore[method-assign]
    return seen


@pytest.mark.parametrize("layout", ["cls", "registers", "no_cls", "patch14"])
def test_token_order_is_prefix_tvp_ttp_ivp_patches(layout: str, tiny_preset, demo_task, layouts) -> None:
    preset = tiny_preset(**layouts[layout])
    backbone = load_backbone(preset)
    texts = demo_task.texts()
    settings = PromptSettings(method="pathotune", tvp={"tokens": 3, "deep": False}, ivp={"tokens": 2})
    model = PromptedModel(backbone, settings, 4, hash_encode(texts)).eval()
    images = torch.rand(2, 3, preset.input_size, preset.input_size)
    plain = backbone.embed(backbone.normalise(images))
    with torch.no_grad():
        feats = model.instance_features(images)
    seen = _capture_block_inputs(model)
    with torch.no_grad():
        logits = model(images, feats)
    assert logits.shape == (2, 4)
    first = seen[0]
    p = preset.num_prefix_tokens
    n_patches = (preset.input_size // preset.patch_size) ** 2
    n_ttp = len(texts)
    assert first.shape[1] == p + 3 + n_ttp + 2 + n_patches
    assert backbone.num_prefix_tokens == p
    torch.testing.assert_close(first[:, :p], plain[:, :p])  # CLS and registers untouched, in front
    torch.testing.assert_close(first[:, p : p + 3], model.tvp.tokens[0].expand(2, -1, -1))
    torch.testing.assert_close(first[:, p + 3 : p + 3 + n_ttp], model.ttp().expand(2, -1, -1))
    ivp = model.vrm(feats)
    torch.testing.assert_close(first[:, p + 3 + n_ttp : p + 3 + n_ttp + 2], ivp)
    torch.testing.assert_close(first[:, -n_patches:], plain[:, p:])  # patches keep their position embedding


def test_deep_prompts_replace_tokens_at_every_block_or_only_the_last(tiny_preset) -> None:
    preset = tiny_preset(model_kwargs={"depth": 4, "embed_dim": 64, "num_heads": 2})
    backbone = load_backbone(preset)
    for depth, expected in ((None, [0, 1, 2, 3]), (2, [0, 2, 3])):
        model = PromptedModel(
            backbone, PromptSettings(method="vpt", tvp={"tokens": 2, "deep": True, "depth": depth}), 3
        )
        assert model.tvp.replace_at == expected
        seen = _capture_block_inputs(model)
        with torch.no_grad():
            model(torch.rand(1, 3, 64, 64))
        assert len(seen) == 4  # every block, the last included
        for block, tokens in enumerate(seen):
            fresh = model.tvp.at_block(block)
            if fresh is not None:
                torch.testing.assert_close(tokens[0, 1:3], fresh)
        del model.backbone.block, model.backbone.block_head  # the spies; the class's methods again


def test_avg_pool_ignores_prompt_tokens(tiny_preset, layouts) -> None:
    backbone = load_backbone(tiny_preset(**layouts["no_cls"]))
    tokens = torch.randn(1, 5 + 16, 64)
    pooled = backbone.pool(tokens, skip=5)
    torch.testing.assert_close(pooled, backbone.avg_norm(tokens[:, 5:].mean(1)))


def test_input_size_other_than_224_and_patch_14(tiny_preset, layouts) -> None:
    backbone = load_backbone(tiny_preset(**layouts["patch14"]))
    assert backbone.embed(torch.rand(1, 3, 56, 56)).shape[1] == 1 + 16
    features = backbone(torch.rand(2, 3, 100, 100))  # resized to 56 inside
    assert features.shape == (2, 64)


def test_preset_that_misstates_the_model_is_refused(tiny_preset) -> None:
    from pathotune_cli.errors import BadInput

    with pytest.raises(BadInput, match="says width=32 but the model has 64"):
        load_backbone(tiny_preset(width=32))


@pytest.mark.parametrize(
    ("ttp_tokens", "ivp_tokens", "parts"),
    [(None, 0, ("tvp", "ttp")), (0, None, ("tvp", "ivp")), (0, 0, ("tvp",))],
)
def test_ablation_switches_leave_out_ttp_or_ivp_tokens(
    tmp_path, tiny_preset, demo_task, ttp_tokens, ivp_tokens, parts
) -> None:
    from pathotune_cli.engine import build_prompted_model, load_prompted_model, prompt_header, save_prompt_file

    preset = tiny_preset()
    ttp = {} if ttp_tokens is None else {"tokens": ttp_tokens}
    ivp = {"tokens": 2} if ivp_tokens is None else {"tokens": ivp_tokens}
    settings = PromptSettings(method="pathotune", tvp={"tokens": 3, "deep": False}, ttp=ttp, ivp=ivp)
    built = build_prompted_model(demo_task, preset, settings)
    model = built.model.eval()
    assert (model.ttp is not None, model.vrm is not None) == ("ttp" in parts, "ivp" in parts)
    assert (built.text_encoder is not None) == ("ttp" in parts)  # no text encoded when TTP is off
    images = torch.rand(2, 3, preset.input_size, preset.input_size)
    plain = model.backbone.embed(model.backbone.normalise(images))
    with torch.no_grad():  # before the spies: the instance encoder runs the same blocks
        feats = model.instance_features(images)
    seen = _capture_block_inputs(model)
    with torch.no_grad():
        logits = model(images, feats)
    first = seen[0]
    widths = {"tvp": 3, "ttp": len(demo_task.texts()), "ivp": 2}
    n_patches = plain.shape[1] - 1
    assert first.shape[1] == 1 + sum(widths[p] for p in parts) + n_patches
    torch.testing.assert_close(first[:, 1:4], model.tvp.tokens[0].expand(2, -1, -1))
    if "ivp" in parts:  # IVP follows TVP directly when TTP is off
        start = 4 + (widths["ttp"] if "ttp" in parts else 0)
        with torch.no_grad():
            torch.testing.assert_close(first[:, start : start + 2], model.vrm(feats))
    torch.testing.assert_close(first[:, -n_patches:], plain[:, 1:])
    del model.backbone.block, model.backbone.block_head
    path = save_prompt_file(tmp_path / "p.safetensors", model.trained_state(), prompt_header(built, demo_task, preset))
    reloaded, file = load_prompted_model(path)
    assert ("ttp.text_embeddings" in file.tensors) == ("ttp" in parts)
    with torch.no_grad():
        assert torch.equal(reloaded(images, feats), logits)


def test_pathotune_with_ttp_and_ivp_off_has_the_vpt_layout(tiny_preset) -> None:
    backbone = load_backbone(tiny_preset())
    tvp = {"tokens": 3}
    ablated = PromptedModel(backbone, PromptSettings(method="pathotune", tvp=tvp, ttp={"tokens": 0},
                                                     ivp={"tokens": 0}), 4)
    vpt = PromptedModel(backbone, PromptSettings(method="vpt", tvp=tvp), 4)
    assert ablated.num_prompt_tokens == vpt.num_prompt_tokens == 3
    assert ablated.trainable_parameters() == vpt.trainable_parameters()
    assert not ablated.needs_instance_features
