"""The WSInfer model config pathotune writes follows WSInfer's spec 1.0, and the rules restated here refuse what
WSInfer refuses: each broken config below was refused by wsinfer-zoo 0.6.3's ``ModelConfiguration.from_dict``,
except the string ``interpolation``, which its schema lets through and torchvision refuses when WSInfer runs.
tests/export/test_wsinfer_check.py runs wsinfer-zoo's own validator on a real export."""

from __future__ import annotations

import copy

import pytest

from pathotune_cli.runs.exports.wsinfer import config_problems, wsinfer_config

CLASSES = ["TUMOR", "STROMA", "COMPLEX"]


@pytest.fixture
def config() -> dict:
    return wsinfer_config(CLASSES, 0.495, 224, architecture="pathotune-pathotune-uni")


def test_config_is_spec_1_0_with_the_task_tiles_and_pil_bilinear_resize(config: dict) -> None:
    assert config == {
        "spec_version": "1.0", "architecture": "pathotune-pathotune-uni", "num_classes": 3, "class_names": CLASSES,
        "patch_size_pixels": 224, "spacing_um_px": 0.495,
        "transform": [{"name": "Resize", "arguments": {"size": 224, "interpolation": 2}}, {"name": "ToTensor"}],
    }
    assert config_problems(config) == []


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda c: c.pop("architecture"), "'architecture' is missing"),
        (lambda c: c.pop("spec_version"), "'spec_version' is missing"),
        (lambda c: c.update(spec_version="1.1"), "'spec_version' must be \"1.0\""),
        (lambda c: c.update(num_classes=4), "has 3 names but 'num_classes' is 4"),
        (lambda c: c.update(num_classes=0), "'num_classes' must be an integer >= 1"),
        (lambda c: c.update(patch_size_pixels=224.0), "'patch_size_pixels' must be an integer"),
        (lambda c: c.update(spacing_um_px=-1), "'spacing_um_px' must be a number >= 0"),
        (lambda c: c.update(class_names=["A", "A", "B"]), "must be unique"),
        (lambda c: c["transform"].append({"name": "CenterCrop", "arguments": {"size": 200}}), "'CenterCrop'"),
        (lambda c: c["transform"][0].update(args=c["transform"][0].pop("arguments")), "has args"),
        (lambda c: c["transform"][0]["arguments"].update(interpolation="bilinear"), "PIL's integer code"),
        (lambda c: c.update(transform={"name": "ToTensor"}), "'transform' must be a list"),
    ],
)
def test_rules_refuse_what_wsinfer_refuses(config: dict, change, problem: str) -> None:
    broken = copy.deepcopy(config)
    change(broken)
    problems = config_problems(broken)
    assert any(problem in line for line in problems), problems


def test_extra_top_level_keys_and_an_empty_transform_are_allowed(config: dict) -> None:
    assert config_problems({**config, "transform": [], "note": "x"}) == []
