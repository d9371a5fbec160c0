"""Shared test fixtures: the real data beside the checkout, tiny presets, and a quiet offline environment."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from testdata import KATHER, SHARED_DATA, require_data
from testdata import tiny_preset as _tiny_preset

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Measured kernel choices and fingerprints go to a cache of this test session, not the user's home
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="pathotune-test-cache-")


@pytest.fixture(autouse=True)
def _isolated_weight_map(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads or writes the user's own weight map."""
    monkeypatch.setenv("PATHOTUNE_WEIGHTS", str(tmp_path_factory.mktemp("cfg") / "weights.yaml"))


@pytest.fixture
def kather_dir() -> Path:
    """The 76 real Kather 2016 patches, 8 class folders."""
    return require_data(KATHER)


@pytest.fixture
def shared_data() -> Path:
    """``../shared/data``."""
    return require_data(SHARED_DATA)


LAYOUTS = {
    "cls": {},
    "registers": dict(
        name="test-registers",
        model_kwargs={"depth": 2, "embed_dim": 64, "num_heads": 2, "reg_tokens": 4, "init_values": 1e-5},
        num_prefix_tokens=5, num_register_tokens=4, pool="token+avg",
    ),
    "no_cls": dict(
        name="test-nocls",
        model_kwargs={"depth": 2, "embed_dim": 64, "num_heads": 2, "class_token": False, "no_embed_class": True},
        num_prefix_tokens=0, pool="avg",
    ),
    "patch14": dict(
        name="test-patch14", model="vit_small_patch14_dinov2",
        model_kwargs={"depth": 2, "embed_dim": 64, "num_heads": 2}, input_size=56, patch_size=14,
    ),
}


@pytest.fixture
def tiny_preset():
    """Factory for small random timm presets: ``tiny_preset(**LAYOUTS['registers'])``."""
    return _tiny_preset


@pytest.fixture
def demo_task():
    """The demo task preset."""
    from pathotune_cli.config import load_task_preset

    return load_task_preset("demo")


@pytest.fixture
def layouts() -> dict:
    """Token layouts of real backbone families, as ``tiny_preset`` overrides."""
    return LAYOUTS


@pytest.fixture
def data_file():
    """Factory: ``data_file("slides/cmu-1-small-region.svs")`` -> path under ``../shared/data`` (required)."""
    return lambda relative: require_data(SHARED_DATA / relative)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tuning run folder (tiny-random at 64 px, one epoch on 16 demo tiles): its prompt file is
    ``tiny_run / "prompts.safetensors"``, its training tiles ``tiny_run.parent / "tiles"``. Do not write into it."""
    from pathotune_cli.demo_data import write_demo_tiles
    from pathotune_cli.runs.tune import TuneOptions, resolve_config, tune_run

    root = tmp_path_factory.mktemp("tiny-run")
    data = write_demo_tiles(root / "tiles", per_class=4, size=64, seed=0)
    config = resolve_config(TuneOptions(
        preset="demo", data=str(data), backbone="tiny-random", out=str(root / "run"), epochs=1, seed=0,
        precision="fp32", sets=["train.batch_size=8", "backbone.input_size=64"],
    ))
    return tune_run(config).run
