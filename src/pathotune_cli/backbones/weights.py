"""Where a backbone's weights come from, in one documented order, and never a silent download.

Order: an explicit ``--weights`` file or folder; the local weight map (``$PATHOTUNE_WEIGHTS`` or
``~/.config/pathotune/weights.yaml``, preset name to path); the Hugging Face cache; a download only when the
caller allows network access. A miss fails at once with the command that fetches the weights.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from pathotune_cli.config.lab import config_dir
from pathotune_cli.config.schema import BackbonePreset
from pathotune_cli.errors import BadInput, MissingWeights, first_line
from pathotune_cli.files import write_text

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt")
COMMON_FILES = (
    "model.safetensors",
    "open_clip_model.safetensors",
    "pytorch_model.bin",
    "open_clip_pytorch_model.bin",
)


@dataclass(frozen=True)
class WeightSource:
    """A resolved weight location: ``random`` (no file), or a local file and how it was found."""

    kind: str
    """``random``, ``explicit``, ``weight-map``, ``hf-cache`` or ``download``."""
    path: Path | None = None

    def describe(self) -> str:
        """One phrase for tables and run records."""
        return self.kind if self.path is None else f"{self.kind}: {self.path}"


def weight_map_path() -> Path:
    """The weight map file: ``$PATHOTUNE_WEIGHTS`` if set, else ``$XDG_CONFIG_HOME/pathotune/weights.yaml``
    (``~/.config/pathotune/weights.yaml`` when ``XDG_CONFIG_HOME`` is unset)."""
    env = os.environ.get("PATHOTUNE_WEIGHTS")
    return Path(env).expanduser() if env else config_dir() / "weights.yaml"


def read_weight_map() -> dict[str, str]:
    """Preset name to weight path, from the weight map; empty when there is none."""
    path = weight_map_path()
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError:
        raise BadInput(f"weight map {path} is not valid YAML", "fix it or remove it") from None
    if not isinstance(data, dict):
        raise BadInput(f"weight map {path} must map preset names to paths", "e.g. `uni: /models/uni.bin`")
    return {str(k): str(v) for k, v in data.items()}


def write_weight_map(entries: dict[str, str]) -> Path:
    """Replace the weight map with ``entries``, atomically (a temporary file in the same folder, then rename)."""
    text = "# pathotune weight map: backbone preset name -> weight file (written by `pathotune weights add`)\n"
    text += yaml.safe_dump(dict(sorted(entries.items())), sort_keys=False, allow_unicode=True)
    return write_text(weight_map_path(), text)


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the standard variables at call time."""
    env = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if env:
        return Path(env).expanduser()
    home = os.environ.get("HF_HOME")
    base = (
        Path(home).expanduser()
        if home
        else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "huggingface"
    )
    return base / "hub"


def hf_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` is set (any value but empty, 0 or false)."""
    return _hf_offline()


def hub_location(preset: BackbonePreset) -> str:
    """``repo file`` on the Hugging Face hub, or the preset's source for local weights; for messages."""
    repo, files = _hub_files(preset)
    if repo is None:
        return preset.source or "the publisher's download page"
    return f"{repo}/{files[0]}" if files else repo


def fetch_command(preset: BackbonePreset) -> str:
    """The command that downloads this preset's weights on a machine with network."""
    if preset.fetch:
        return preset.fetch
    if preset.weights.startswith("hf-hub:"):
        repo = preset.weights.removeprefix("hf-hub:")
        files = " ".join(preset.weight_files[:1])
        revision = f" --revision {preset.revision}" if preset.revision else ""
        return f"hf download {repo} {files}{revision}".strip()
    if preset.weights.startswith("open_clip:"):
        repo, filename = _open_clip_hub_file(preset)
        return f"hf download {repo} {filename}" if repo else "see the open_clip pretrained table"
    return f"pathotune weights add {preset.name} FILE"


def resolve_weights(
    preset: BackbonePreset, explicit: str | Path | None = None, allow_download: bool = False
) -> WeightSource:
    """Find the weights for ``preset``, in the documented order.

    Raises:
        MissingWeights: nothing found; the message names the preset and the command that fetches it.
    """
    if explicit is not None:
        return WeightSource("explicit", pick_weight_file(Path(explicit).expanduser(), preset, "--weights"))
    mapped = read_weight_map().get(preset.name)
    if mapped:
        return WeightSource("weight-map", pick_weight_file(Path(mapped).expanduser(), preset, str(weight_map_path())))
    if preset.weights == "random":
        return WeightSource("random")
    cached = _from_hf_cache(preset)
    if cached is not None:
        return WeightSource("hf-cache", cached)
    if allow_download and not _hf_offline():
        return WeightSource("download", _download(preset))
    if preset.weights == "local":
        how = f"download {' or '.join(preset.weight_files) or 'the weight file'} ({fetch_command(preset)}), then "
        where = "no --weights, no entry in " + str(weight_map_path())
    else:
        how = f"fetch them with `{fetch_command(preset)}` on a machine with network, then "
        where = f"no --weights, no entry in {weight_map_path()}, not in the Hugging Face cache {hf_cache_dir()}"
        if preset.revision and _from_hf_cache(preset, pinned=False) is not None:
            where += f"; the cache holds another revision, not the pinned commit {preset.revision[:12]}"
    raise MissingWeights(
        f"weights for backbone '{preset.name}' ({hub_location(preset)}) were not found ({where})",
        f"{how}pass --weights FILE or run `pathotune weights add {preset.name} FILE`",
    )


def _hf_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0", "false", "False")


def pick_weight_file(path: Path, preset: BackbonePreset, where: str) -> Path:
    """``path`` itself, or the preset's weight file inside the folder ``path`` (``where`` names the source)."""
    if path.is_file():
        return path
    if path.is_dir():
        for name in [*preset.weight_files, *COMMON_FILES]:
            if (path / name).is_file():
                return path / name
        found = sorted(p for p in path.iterdir() if p.suffix in WEIGHT_SUFFIXES)
        if len(found) == 1:
            return found[0]
        raise BadInput(
            f"{where}: folder {path} holds no weight file for '{preset.name}'",
            f"point at the file itself (one of {', '.join(WEIGHT_SUFFIXES)})",
        )
    raise BadInput(f"{where}: weight path {path} does not exist", "check the path")


def _hub_files(preset: BackbonePreset) -> tuple[str | None, list[str]]:
    if preset.weights.startswith("hf-hub:"):
        return preset.weights.removeprefix("hf-hub:"), list(preset.weight_files or ["model.safetensors"])
    if preset.weights.startswith("open_clip:"):
        repo, filename = _open_clip_hub_file(preset)
        return repo, [filename] if filename else []
    return None, []


def _open_clip_hub_file(preset: BackbonePreset) -> tuple[str | None, str]:
    from open_clip import get_pretrained_cfg

    cfg = get_pretrained_cfg(preset.model, preset.weights.removeprefix("open_clip:")) or {}
    repo = (cfg.get("hf_hub") or "").rstrip("/") or None
    filename = preset.weight_files[0] if preset.weight_files else "open_clip_model.safetensors"
    return repo, filename


def _from_hf_cache(preset: BackbonePreset, pinned: bool = True) -> Path | None:
    """The cached weight file at the preset's revision (``main`` where none is pinned); with ``pinned=False``,
    at ``main`` whatever the preset pins (only to say that the cache holds other weights)."""
    repo, files = _hub_files(preset)
    if repo is None:
        return None
    from huggingface_hub import try_to_load_from_cache

    cache = hf_cache_dir()
    # a pinned preset reads only its pinned commit: a file cached from `main` may be other weights
    for filename in files:
        revision = preset.revision if pinned else None
        hit = try_to_load_from_cache(repo, filename, cache_dir=cache, revision=revision)
        if isinstance(hit, str):
            return Path(hit)
    return None


def _download(preset: BackbonePreset) -> Path:
    repo, files = _hub_files(preset)
    if repo is None or not files:
        raise MissingWeights(f"backbone '{preset.name}' has no download source", "pass --weights FILE")
    import logging

    from huggingface_hub import hf_hub_download

    quiet = [logging.getLogger(name) for name in ("huggingface_hub", "urllib3", "requests", "httpx")]
    levels = [logger.level for logger in quiet]
    for logger in quiet:  # one line for the user, not the client's retries
        logger.setLevel(logging.CRITICAL)
    try:
        return Path(hf_hub_download(repo, files[0], revision=preset.revision, cache_dir=hf_cache_dir()))
    except Exception as exc:  # offline, a proxy, a gated repository: the client raises many types
        reason = first_line(exc, 300).split(". ")[0].rstrip(".")  # the client's first sentence
        raise MissingWeights(
            f"could not download the weights of backbone '{preset.name}' ({repo}/{files[0]}): "
            f"{type(exc).__name__}: {reason}",
            f"check the network (or accept the model's licence on the Hub and log in with `hf auth login`); "
            f"offline, fetch them with `{fetch_command(preset)}` on a machine with network, then pass --weights FILE "
            f"or run `pathotune weights add {preset.name} FILE`",
        ) from None
    finally:
        for logger, level in zip(quiet, levels, strict=True):
            logger.setLevel(level)
