"""The WSInfer model folder: ``torchscript_model.pt`` and ``config.json`` (WSInfer's model-config spec 1.0).

WSInfer (and QuPath's WSInfer extension, which loads the same folder from ``<models dir>/local/<name>/``)
reads each tile at level 0, ``round(patch_size_pixels * spacing_um_px / slide mpp)`` pixels a side, then applies
the config's transforms, then the model, then a softmax it always applies. So the folder's model returns logits,
and its transforms are ``Resize`` to the task's tile size with PIL's bilinear filter, then ``ToTensor``: the pixels
``pathotune predict`` gives its model when it reads level 0 (``wsi.tiles.read_tile``), scaled to 0-1 the same
way. The backbone's own resize and normalisation stay inside the model, as in ``predict``.

The config's rules are WSInfer's (wsinfer-zoo's ``schemas/model-config.schema.json``, spec 1.0), restated here
so an export is checked without WSInfer installed.
"""

from __future__ import annotations

from typing import Any

from pathotune_cli.errors import PathotuneError

SPEC_VERSION = "1.0"
TRANSFORM_NAMES = ("Resize", "ToTensor", "Normalize")
"""The only transforms spec 1.0 allows."""
PIL_BILINEAR = 2
"""``PIL.Image.Resampling.BILINEAR``: WSInfer passes ``interpolation`` to torchvision, which needs PIL's int."""
PIXELS_NOTE = (
    "WSInfer reads level 0 and resizes each tile with PIL's bilinear filter to the tile size, exactly as "
    "`pathotune predict` does whenever it reads level 0 (no coarser pyramid level serves the task's mpp: a "
    "single-level slide, or a scan near the task's mpp): the same pixels, no interpolation difference. Where "
    "pathotune reads a coarser level instead (e.g. 0.5 µm/px tiles from a 0.25 µm/px scan with a 2x level), "
    "WSInfer downsamples level 0 and the pixels differ by what the scanner's pyramid differs from that "
    "downsample. QuPath's extension reads at the tile's downsample and resizes with its own smooth filter (its "
    "`interpolation` is ignored): close, not bit-identical."
)
QUPATH_NOTE = (
    "Copy this folder to <QuPath models dir>/local/<model name>/ (the models dir is the extension's "
    "`wsinfer.model.dir` preference, shown in its dialog); the folder's name is the model's name in the menu."
)


def wsinfer_config(classes: list[str], tile_mpp: float, tile_size: int, architecture: str) -> dict[str, Any]:
    """The ``config.json`` of a WSInfer model folder for tiles of ``tile_size`` px at ``tile_mpp`` µm/px."""
    config = {
        "spec_version": SPEC_VERSION,
        "architecture": architecture,
        "num_classes": len(classes),
        "class_names": list(classes),
        "patch_size_pixels": int(tile_size),
        "spacing_um_px": float(tile_mpp),
        "transform": [
            {"name": "Resize", "arguments": {"size": int(tile_size), "interpolation": PIL_BILINEAR}},
            {"name": "ToTensor"},
        ],
    }
    problems = config_problems(config)
    if problems:  # our own output: a bug, not the user's input
        raise PathotuneError(f"the WSInfer config would be invalid: {problems[0]}", "report it")
    return config


def config_problems(config: object) -> list[str]:
    """What makes ``config`` an invalid WSInfer model config (spec 1.0, as wsinfer-zoo 0.6 checks it).

    The schema's rules, plus wsinfer-zoo's ``len(class_names) == num_classes``, plus what the runtimes need:
    ``Resize`` with an int ``size`` (QuPath reads it as a number) and an int ``interpolation`` (torchvision
    refuses a string).

    Returns:
        One line per problem; empty when the config is valid.
    """
    if not isinstance(config, dict):
        return ["the config is not a JSON object"]
    required = ("spec_version", "architecture", "num_classes", "patch_size_pixels", "spacing_um_px", "class_names",
                "transform")
    problems = [f"'{key}' is missing" for key in required if key not in config]
    if problems:
        return problems
    if config["spec_version"] != SPEC_VERSION:
        problems.append(f"'spec_version' must be \"{SPEC_VERSION}\", got {config['spec_version']!r}")
    if not isinstance(config["architecture"], str):
        problems.append("'architecture' must be a string")
    for key in ("num_classes", "patch_size_pixels"):
        if not _is_int(config[key]) or config[key] < 1:
            problems.append(f"'{key}' must be an integer >= 1, got {config[key]!r}")
    spacing = config["spacing_um_px"]
    if isinstance(spacing, bool) or not isinstance(spacing, int | float) or spacing < 0:
        problems.append(f"'spacing_um_px' must be a number >= 0, got {spacing!r}")
    problems += _class_problems(config["class_names"], config["num_classes"])
    problems += _transform_problems(config["transform"])
    return problems


def _class_problems(names: object, count: object) -> list[str]:
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        return ["'class_names' must be a list of strings"]
    problems = []
    if len(set(names)) != len(names):
        problems.append("'class_names' must be unique")
    if _is_int(count) and len(names) != count:
        problems.append(f"'class_names' has {len(names)} names but 'num_classes' is {count}")
    return problems


def _transform_problems(transform: object) -> list[str]:
    if not isinstance(transform, list):
        return ["'transform' must be a list"]
    problems = []
    for i, step in enumerate(transform):
        if not isinstance(step, dict) or "name" not in step:
            problems.append(f"transform {i} must be an object with a 'name'")
            continue
        extra = sorted(set(step) - {"name", "arguments"})
        if extra:
            problems.append(f"transform {i} has {', '.join(extra)}; only 'name' and 'arguments' are allowed")
        if step["name"] not in TRANSFORM_NAMES:
            problems.append(f"transform {i} is {step['name']!r}; only {', '.join(TRANSFORM_NAMES)} are allowed")
        arguments = step.get("arguments", {})
        if not isinstance(arguments, dict):
            problems.append(f"transform {i}'s 'arguments' must be an object")
        elif step["name"] == "Resize":
            if not _is_int(arguments.get("size")):
                problems.append(f"transform {i} (Resize) needs an integer 'size'")
            if "interpolation" in arguments and not _is_int(arguments["interpolation"]):
                problems.append(f"transform {i} (Resize): 'interpolation' must be PIL's integer code (2 = bilinear)")
    return problems


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
