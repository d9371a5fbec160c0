"""CONCH on a faithful small checkpoint in CONCH's own key layout, its text tower and tokenizer included.

The checkpoint holds what ``MahmoodLab/CONCH``'s ``pytorch_model.bin`` holds: ``visual.trunk.*`` (timm ViT),
the contrastive and captioning attentional poolers, ``ln_contrast``/``proj_contrast``, ``text.*`` (CoCa text
encoder with ``cls_emb``), ``text_decoder.*`` and ``logit_scale``. The references below follow CONCH's own
code paths (sequence-first attention, its CLS mask), so they check the open_clip parts we assemble instead.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from open_clip.transformer import AttentionalPooler, MultimodalTransformer, TextTransformer
from torch import nn
from torch.nn import functional as F

from pathotune_cli.errors import BadInput, MissingDependency

from testdata import assert_close_to_scale

D, E, PX, CTX, HEADS = 64, 32, 32, 15, 2
WORDS = ("a synthetic h&e-like tissue patch classes tumor stroma lymphocytes adipose dense purple clusters of large "
         "dark nuclei pink wavy fibres with few elongated many small round blue dots white empty cells thin borders : ;"
         ).split()


def _tokenizer(path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {"<pad>": 0, "<start_of_text>": 1, "<end_of_text>": 2, "<unk>": 3}
    for word in WORDS:
        vocab.setdefault(word, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single="<start_of_text> $A <end_of_text>", special_tokens=[("<start_of_text>", 1), ("<end_of_text>", 2)]
    )
    tok.save(str(path))


def _checkpoint() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    parts = {
        "visual.trunk.": timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0, img_size=PX,
                                           depth=2, embed_dim=D, num_heads=HEADS, dynamic_img_size=True),
        "visual.attn_pool_contrast.": AttentionalPooler(E, D, n_head=HEADS, n_queries=1),
        "visual.ln_contrast.": nn.LayerNorm(E),
        "visual.attn_pool_caption.": AttentionalPooler(D, D, n_head=HEADS, n_queries=4),
        "visual.ln_caption.": nn.LayerNorm(D),
        "text.": TextTransformer(context_length=CTX, vocab_size=64, width=E, heads=HEADS, layers=2, output_dim=E,
                                 embed_cls=True),
        "text_decoder.": MultimodalTransformer(width=E, layers=1, heads=HEADS, context_length=CTX + 1, output_dim=64),
    }
    state = {prefix + k: v for prefix, module in parts.items() for k, v in module.state_dict().items()}
    for key, value in state.items():  # random LayerNorms and embeddings, so nothing hides behind identity
        if key.endswith(("ln_contrast.weight", "ln_q.weight", "ln_k.weight", "cls_emb")):
            state[key] = torch.randn_like(value)
    state["visual.proj_contrast"] = torch.randn(E, E)
    state["logit_scale"] = torch.tensor(2.65)
    return state


def _small(small_preset) -> Path:
    return small_preset(
        "conch", width=D, input_size=PX,
        model_kwargs={"trunk": {"depth": 2, "embed_dim": D, "num_heads": HEADS}, "embed_dim": E, "pooler_heads": HEADS,
                      "text": {"context_length": CTX, "vocab_size": 64, "width": E, "heads": HEADS, "layers": 2}},
    )


def _conch_image_embedding(state: dict[str, torch.Tensor], images: torch.Tensor) -> torch.Tensor:
    """CONCH ``encode_image(proj_contrast=False)``: trunk tokens, sequence-first attentional pooling, LayerNorm."""
    trunk = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0, img_size=PX, depth=2,
                              embed_dim=D, num_heads=HEADS, dynamic_img_size=True).eval()
    trunk.load_state_dict(
        {k.removeprefix("visual.trunk."): v for k, v in state.items() if k.startswith("visual.trunk.")}
    )
    pool = {k.removeprefix("visual.attn_pool_contrast."): v for k, v in state.items()
            if k.startswith("visual.attn_pool_contrast.")}
    attn = nn.MultiheadAttention(E, HEADS, kdim=D, vdim=D)  # sequence-first, as in CONCH
    attn.load_state_dict({k.removeprefix("attn."): v for k, v in pool.items() if k.startswith("attn.")})
    with torch.no_grad():
        x = F.layer_norm(trunk.forward_features(images), (D,), pool["ln_k.weight"], pool["ln_k.bias"]).permute(1, 0, 2)
        q = F.layer_norm(pool["query"], (E,), pool["ln_q.weight"], pool["ln_q.bias"])
        out = attn(q.unsqueeze(1).repeat(1, x.shape[1], 1), x, x, need_weights=False)[0].permute(1, 0, 2)
        return F.layer_norm(out[:, 0], (E,), state["visual.ln_contrast.weight"], state["visual.ln_contrast.bias"])


def _conch_text_embedding(state: dict[str, torch.Tensor], ids: torch.Tensor) -> torch.Tensor:
    """CONCH's TextTransformer on ``ids`` (the tokens without CONCH's trailing pad): appended CLS, its mask."""
    t = {k.removeprefix("text."): v for k, v in state.items() if k.startswith("text.")}
    batch, length = ids.shape
    seq = length + 1
    x = torch.cat([F.embedding(ids, t["token_embedding.weight"]), t["cls_emb"].view(1, 1, -1).expand(batch, 1, -1)], 1)
    cls_mask = F.pad((ids != 0).unsqueeze(1), (1, 0, length, 0), value=True)  # CONCH's build_cls_mask
    additive = torch.zeros(cls_mask.shape).masked_fill(~cls_mask, float("-inf")).repeat_interleave(HEADS, 0)
    causal = torch.full((seq, seq), float("-inf")).triu(1)
    mask = causal[None] + additive
    x = (x + t["positional_embedding"][:seq]).permute(1, 0, 2)
    with torch.no_grad():
        for i in range(2):
            p = f"transformer.resblocks.{i}."
            attn = nn.MultiheadAttention(E, HEADS)
            attn.load_state_dict({k.removeprefix(p + "attn."): v for k, v in t.items() if k.startswith(p + "attn.")})
            h = F.layer_norm(x, (E,), t[p + "ln_1.weight"], t[p + "ln_1.bias"])
            x = x + attn(h, h, h, need_weights=False, attn_mask=mask)[0]
            h = F.layer_norm(x, (E,), t[p + "ln_2.weight"], t[p + "ln_2.bias"])
            h = F.linear(F.gelu(F.linear(h, t[p + "mlp.c_fc.weight"], t[p + "mlp.c_fc.bias"])),
                         t[p + "mlp.c_proj.weight"], t[p + "mlp.c_proj.bias"])
            x = x + h
        pooled = F.layer_norm(x.permute(1, 0, 2)[:, -1], (E,), t["ln_final.weight"], t["ln_final.bias"])
        return F.normalize(pooled @ t["text_projection"], dim=-1)


def test_conch_image_and_text_match_conchs_own_computation_and_tune(small_preset, tune, tmp_path: Path) -> None:
    from pathotune_cli.backbones import load_backbone
    from pathotune_cli.config import load_backbone_preset
    from pathotune_cli.runs.weights import add_weights

    state = _checkpoint()
    folder = tmp_path / "conch"
    folder.mkdir()
    torch.save(state, folder / "pytorch_model.bin")
    _tokenizer(folder / "conch_byte_level_bpe_uncased.json")
    yaml_path = _small(small_preset)
    assert add_weights(str(yaml_path), folder / "pytorch_model.bin").tensors > 0  # into the weight map

    preset = load_backbone_preset(yaml_path)
    backbone = load_backbone(preset)
    images = torch.rand(2, 3, PX, PX)
    normalised = (images - torch.tensor(preset.mean).view(1, 3, 1, 1)) / torch.tensor(preset.std).view(1, 3, 1, 1)
    with torch.no_grad():
        ours = backbone(images)
    assert ours.shape == (2, E) and backbone.feature_dim == E
    assert_close_to_scale(ours, _conch_image_embedding(state, normalised))

    texts = ["dense purple clusters of large dark nuclei", "white empty round cells"]
    ids = backbone._load_tokenizer()(texts, max_length=CTX, padding="max_length", truncation=True,
                                     return_tensors="pt")["input_ids"]
    assert_close_to_scale(backbone.encode_text(texts), _conch_text_embedding(state, ids))

    summary = tune(yaml_path)
    assert summary.backbone == "conch"


def test_conch_without_its_tokenizer_says_where_to_get_it(small_preset, tmp_path: Path) -> None:
    from pathotune_cli.backbones import load_backbone
    from pathotune_cli.config import load_backbone_preset

    torch.save(_checkpoint(), tmp_path / "pytorch_model.bin")
    backbone = load_backbone(load_backbone_preset(_small(small_preset)), tmp_path / "pytorch_model.bin")
    with pytest.raises(MissingDependency, match="needs its tokenizer file conch_byte_level_bpe_uncased.json") as info:
        backbone.encode_text(["tumor"])
    assert (
        "github.com/mahmoodlab/CONCH" in info.value.one_line()
        and "prompt.ttp.encoder=minilm" in info.value.one_line()
    )


def test_an_unknown_conch_key_is_named(small_preset, tmp_path: Path) -> None:
    from pathotune_cli.backbones import load_backbone
    from pathotune_cli.config import load_backbone_preset

    state = _checkpoint()
    state["visual.extra_head.weight"] = torch.zeros(3)
    del state["text.ln_final.bias"]
    torch.save(state, tmp_path / "pytorch_model.bin")
    with pytest.raises(
        BadInput, match=r"missing keys text\.ln_final\.bias; unexpected keys visual\.extra_head\.weight"
    ):
        load_backbone(load_backbone_preset(_small(small_preset)), tmp_path / "pytorch_model.bin")
