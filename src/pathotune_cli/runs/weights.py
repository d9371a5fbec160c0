"""``pathotune weights list|add`` as plain functions: where each backbone's weights are, and recording a file.

``list`` only resolves paths (no torch, no hashing), so it answers in well under a second per preset.
``add`` checks a file against the architecture built on the meta device (no memory, no init), checks its
sha256 where the publisher shows one, and records it in the weight map with an atomic write.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

from pathotune_cli.backbones.weights import (
    fetch_command,
    read_weight_map,
    resolve_weights,
    weight_map_path,
    write_weight_map,
)
from pathotune_cli.config import list_presets, load_backbone_preset
from pathotune_cli.config.schema import BackbonePreset
from pathotune_cli.errors import BadInput, PathotuneError
from pathotune_cli.files import sha256_file


@dataclass(frozen=True)
class WeightStatus:
    """Where one backbone preset's weights resolve here, or why not (a row of ``weights list`` and ``doctor``)."""

    preset: str
    family: str
    status: str
    """found, random, missing or broken."""
    found_in: str | None
    path: str | None
    licence: str
    gated: bool
    fetch: str | None
    """The command that downloads the weights (None for random weights)."""
    problem: str | None

    def to_dict(self) -> dict[str, object]:
        """The row ``--json`` prints."""
        return asdict(self)


@dataclass(frozen=True)
class WeightsAdded:
    """A weight file checked against its preset and recorded in the weight map."""

    preset: str
    path: str
    tensors: int
    sha256: str
    sha256_check: str
    weight_map: str
    replaced: str | None
    """The file the weight map named before, when it named another."""

    def to_dict(self) -> dict[str, object]:
        """The document ``--json`` prints."""
        return asdict(self)


@dataclass(frozen=True)
class WeightMapSummary:
    """The weight map's location, whether it exists and how many presets it names."""

    path: str
    exists: bool
    entries: int

    def to_dict(self) -> dict[str, object]:
        """The document ``--json`` prints (inside ``doctor``'s)."""
        return asdict(self)


def list_weights(names: list[str] | None = None) -> list[WeightStatus]:
    """One row per backbone preset: where its weights resolve (or why not), licence, gated, fetch command."""
    rows = []
    for name in names or list_presets("backbones"):
        preset = load_backbone_preset(name)
        rows.append(weight_status(preset))
    return rows


def weight_status(preset: BackbonePreset) -> WeightStatus:
    """Where ``preset``'s weights resolve, through the one resolution function, without loading anything."""
    row = WeightStatus(
        preset=preset.name,
        family=preset.family,
        status="missing",
        found_in=None,
        path=None,
        licence=preset.licence,
        gated=preset.gated,
        fetch=fetch_command(preset) if preset.weights != "random" else None,
        problem=None,
    )
    try:
        source = resolve_weights(preset)
    except PathotuneError as exc:  # a miss, or a weight-map entry that points nowhere
        broken = "does not exist" in exc.problem or "holds no weight file" in exc.problem
        return replace(row, problem=exc.problem, status="broken" if broken else "missing")
    return replace(
        row,
        status="random" if source.kind == "random" else "found",
        found_in=source.kind,
        path=str(source.path) if source.path is not None else None,
    )


def add_weights(name: str, file: str | Path) -> WeightsAdded:
    """Check ``file`` against backbone ``name`` and record it in the weight map.

    Raises:
        BadInput: unknown preset, a preset with random weights, a file whose keys or shapes do not fit the
            architecture (naming them), or a sha256 that differs from the published one.
    """
    from pathotune_cli.backbones import adapter_class
    from pathotune_cli.backbones.weights import pick_weight_file

    preset = load_backbone_preset(name)
    if preset.weights == "random":
        raise BadInput(
            f"backbone '{preset.name}' uses random weights and takes no weight file",
            "choose another preset",
        )
    path = pick_weight_file(Path(file).expanduser(), preset, "weights add").resolve()
    tensors = adapter_class(preset).check_weight_file(preset, path)
    digest = sha256_file(path)
    if preset.sha256 is not None and digest != preset.sha256:
        raise BadInput(
            f"{path} has sha256 {digest}, but {preset.name}'s published file has {preset.sha256}",
            f"download it again with `{fetch_command(preset)}`",
        )
    entries = read_weight_map()
    previous = entries.get(preset.name)
    entries[preset.name] = str(path)
    written = write_weight_map(entries)
    return WeightsAdded(
        preset=preset.name,
        path=str(path),
        tensors=tensors,
        sha256=digest,
        sha256_check="matches the published hash" if preset.sha256 else "no published hash to compare",
        weight_map=str(written),
        replaced=previous if previous and previous != str(path) else None,
    )


def weight_map_summary() -> WeightMapSummary:
    """The weight map's location and whether it exists (for `doctor`)."""
    path = weight_map_path()
    return WeightMapSummary(str(path), path.is_file(), len(read_weight_map()) if path.is_file() else 0)
