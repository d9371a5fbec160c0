"""Protocol presets (a paper's grid as defaults of the recipe) and the checks that run before any cell.

A preset names the task, the backbones and the grid, says where its data come from, and carries reference
numbers from the literature, which ``ACCURACY.md`` prints beside ours and labels as theirs. Nothing here runs
on random weights unless a random backbone was named: every backbone's weights (and the instance encoder's,
where ``--set prompt.ivp.encoder`` names one) must resolve before the first cell starts, and the data must be
there, or the run stops with one line that says what is missing and how to get it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pathotune_cli.errors import BadInput, MissingWeights

PATHODUET_README = "PathoDuet README (github.com/openmedlab/PathoDuet, 'Ours-p2')"
PATHODUET_NOTE = (
    "Theirs: the linear-evaluation and full-fine-tuning tables of PathoDuet's README (its ViT-B/16 'p2' checkpoint, "
    "its own recipe, every training tile). The README lists NCT-CRC-HE and CRC (Kather) as its patch "
    "classification data; the tables name neither the dataset, the split nor how F1 is averaged (read here as "
    "NCT-CRC-HE). Ours: pathoduet-he with every training tile (shots all), mean ± sd over seeds, macro F1."
)
NCT_CRC = "https://zenodo.org/records/1214456"


@dataclass(frozen=True)
class Protocol:
    """A grid from the literature, as defaults of the recipe (any option given on the command line wins)."""

    name: str
    task: str
    backbones: tuple[str, ...]
    methods: tuple[str, ...]
    shots: tuple[int | None, ...]
    seeds: int
    train_hint: str
    test_hint: str
    references: tuple[dict[str, Any], ...] = field(default_factory=tuple)
    layout: str | None = None
    """A published dataset layout (``benchmarks.accuracy.layouts``) read from ``--data-root`` into train/test."""


PROTOCOLS = {
    "pathotune-crc": Protocol(
        name="pathotune-crc",
        task="crc",
        backbones=("pathoduet-he", "vit-b16-in21k", "uni"),
        methods=("linear", "vpt", "pathotune", "full"),
        shots=(1, 2, 4, 8, 16, None),
        seeds=5,
        train_hint=f"NCT-CRC-HE-100K (NCT-CRC-HE-100K.zip from {NCT_CRC}, unzipped: one folder per class)",
        test_hint=f"CRC-VAL-HE-7K (CRC-VAL-HE-7K.zip from {NCT_CRC}, unzipped: one folder per class)",
        references=(
            {"source": PATHODUET_README, "their_backbone": "PathoDuet ViT-B/16", "backbone": "pathoduet-he",
             "method": "linear", "accuracy": 0.9639, "f1": 0.9496, "note": PATHODUET_NOTE},
            {"source": PATHODUET_README, "their_backbone": "PathoDuet ViT-B/16", "backbone": "pathoduet-he",
             "method": "full", "accuracy": 0.9731, "f1": 0.9636, "note": PATHODUET_NOTE},
        ),
    ),
    **{f"thunder-{name}": Protocol(
        name=f"thunder-{name}", task=name, backbones=("uni", "virchow2", "dinov2-vitl14", "vit-b16-in21k"),
        methods=("linear", "prototypes", "knn", "lora"), shots=(1, 2, 4, 8, 16, None), seeds=5,
        train_hint=f"--data-root DIR in {name}'s published layout", test_hint="its canonical test split",
        layout=name,
    ) for name in ("crc", "mhist")},
}
"""THUNDER-style grids (linear, SimpleShot, kNN and LoRA; THUNDER, NeurIPS 2025 datasets and benchmarks) on the
public datasets whose published layout and canonical split ``layouts`` reads. No reference numbers: THUNDER's
leaderboard averages over its 16 datasets, not per dataset."""


def get_protocol(name: str) -> Protocol:
    """A preset by name.

    Raises:
        BadInput: an unknown name (the known ones listed).
    """
    if name not in PROTOCOLS:
        raise BadInput(f"unknown --protocol '{name}'", f"choose from {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


def require_data(train: Path | None, test: Path | None, protocol: Protocol | None) -> tuple[Path, Path]:
    """Both data paths, given and present.

    Raises:
        BadInput: one is not given or not there; for a protocol, the fix says where its data come from.
    """
    missing = []
    for option, path, hint in (("--train", train, protocol and protocol.train_hint),
                               ("--test", test, protocol and protocol.test_hint)):
        if path is None or not Path(path).exists():
            what = "not given" if path is None else f"{path} does not exist"
            missing.append(f"{option} {what}" + (f" (needs {hint})" if hint else ""))
    if missing:
        raise BadInput("data missing: " + "; ".join(missing), "pass --train DIR|CSV and --test DIR|CSV")
    return Path(str(train)), Path(str(test))


def require_weights(configs: dict[str, Any]) -> dict[str, str]:
    """Where each backbone's weights (and a named instance encoder's) come from, before any cell runs.

    Args:
        configs: One resolved ``RunConfig`` per backbone (any cell's: the weights do not depend on the method).

    Returns:
        Backbone name -> a description of its weight source (``random weights`` for a random preset).

    Raises:
        MissingWeights: one line naming every backbone whose weights are missing and the command that fetches each.
    """
    from pathotune_cli.backbones import resolve_weights
    from pathotune_cli.config import load_backbone_preset

    found: dict[str, str] = {}
    missing: list[str] = []
    for config in configs.values():
        presets = [(config.backbone, config.weights)]
        if config.prompt.ivp.encoder != "self":
            presets.append((load_backbone_preset(config.prompt.ivp.encoder), None))
        for preset, weights in presets:
            try:
                found[preset.name] = resolve_weights(preset, weights, False).describe()
            except MissingWeights as exc:
                missing.append(f"{preset.name}: {exc.fix}")
    if missing:
        names = ", ".join(item.split(":", 1)[0] for item in missing)
        raise MissingWeights(f"weights missing for {names} (the recipe never runs on random weights unasked)",
                             " | ".join(missing))
    return found
