"""Helpers for faithful small models: shrink a real preset, lay files out like the real download, tune a little.

A small model keeps every architecture flag of the real one (registers, SwiGLU, LayerScale, prefix tokens,
pooling, key layout) and shrinks only width, depth, heads and input size, through ``model_kwargs`` overrides
of the shipped preset YAML. Weight files are written in the format and under the name their publisher uses.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

SMALL = {"depth": 2, "embed_dim": 64, "num_heads": 2}


@pytest.fixture
def small_preset(tmp_path: Path) -> Callable[..., Path]:
    """``small_preset("uni2-h", model_kwargs={...}, width=64, input_size=28)`` -> a YAML path named like the
    real preset, so the weight map and the HF cache resolve exactly as they would for the real one."""

    def make(name: str, **overrides: Any) -> Path:
        from pathotune_cli.config import find_preset
        from pathotune_cli.config.loader import read_yaml

        data = read_yaml(find_preset("backbones", name))
        kwargs = {**data.get("model_kwargs", {}), **overrides.pop("model_kwargs", {})}
        data.update(overrides, model_kwargs=kwargs, name=name)
        folder = tmp_path / "presets"
        folder.mkdir(exist_ok=True)
        path = folder / f"{name}.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        return path

    return make


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str, str], Path]:
    """``hf_cache("MahmoodLab/UNI", "pytorch_model.bin")`` -> the path to write, inside a fake Hugging Face
    cache (``HF_HUB_CACHE``) laid out as ``hf download`` leaves it: refs/main and snapshots/<commit>/FILE."""
    cache = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))

    def where(repo: str, filename: str, revision: str = "0123456789abcdef0123456789abcdef01234567") -> Path:
        folder = cache / f"models--{repo.replace('/', '--')}"
        (folder / "refs").mkdir(parents=True, exist_ok=True)
        (folder / "refs" / "main").write_text(revision, encoding="utf-8")
        snapshot = folder / "snapshots" / revision
        snapshot.mkdir(parents=True, exist_ok=True)
        return snapshot / filename

    return where


@pytest.fixture(scope="session")
def tiles(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A few tiny synthetic tiles of the demo task's four classes (32 px)."""
    from pathotune_cli.demo_data import write_demo_tiles

    return write_demo_tiles(tmp_path_factory.mktemp("tiles") / "data", per_class=3, size=32, seed=0)


@pytest.fixture
def tune(tmp_path: Path, tiles: Path) -> Callable[..., dict]:
    """Tune ``pathotune`` prompts for one epoch on the tiny tiles through the real run path."""

    def run(
        backbone: Path | str, weights: Path | None = None, task: str = "demo", sets: list[str] | None = None
    ):  # a TuneResult
        from pathotune_cli.runs.tune import TuneOptions, resolve_config, tune_run

        opts = TuneOptions(
            preset=task, data=str(tiles), backbone=str(backbone), method="pathotune",
            out=str(tmp_path / f"run-{Path(str(backbone)).stem}"), epochs=1, batch_size=6, seed=0,
            precision="fp32", device="cpu", weights=str(weights) if weights else None,
            sets=["prompt.tvp.tokens=2", "prompt.ivp.tokens=1", "train.val_fraction=0", "train.patience=null",
                  *(sets or [])],
        )
        summary = tune_run(resolve_config(opts))
        assert summary.epochs_run == 1 and Path(summary.prompts).is_file()
        return summary

    return run


def randomise_layer_scale(model: torch.nn.Module) -> None:
    """LayerScale starts at 1e-5, which hides a block; random gammas make feature comparisons meaningful."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(("gamma", "lambda1")):
                param.copy_(torch.rand_like(param) + 0.5)


@pytest.fixture
def scale_layers() -> Callable[[torch.nn.Module], None]:
    """``randomise_layer_scale`` as a fixture (helpers are not importable under importlib mode)."""
    return randomise_layer_scale


@pytest.fixture
def features_of() -> Callable[..., torch.Tensor]:
    """Features of images through a loaded backbone preset (``pathotune``'s own loading path)."""

    def compute(backbone_yaml: Path, images: torch.Tensor, weights: Path | None = None) -> torch.Tensor:
        from pathotune_cli.backbones import load_backbone
        from pathotune_cli.config import load_backbone_preset

        backbone = load_backbone(load_backbone_preset(backbone_yaml), weights)
        with torch.no_grad():
            return backbone(images)

    return compute
