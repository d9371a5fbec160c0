"""The prompt file's metadata as one frozen, validated type: everything needed to rebuild and to trust a model.

``read_prompt_file`` is the one place that turns a file's JSON header into a ``PromptHeader``; every command that
loads prompts (``eval``, ``predict``, ``export``, ``inspect``, the model card) reads its typed fields instead of
walking dictionaries. A header that does not validate, or whose parts disagree (its class list and its task), is
a damaged or altered file: one line, exit 2.

Format versions: 1 (pathotune 0.1 before the header type: no ``weight_source``), 2 (no stain section) and 3
(now: ``stain`` and ``stain_stats``, both optional) are read; a newer one is refused by name.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from pathotune_cli.config.run import KNNSettings, LoRASettings, MILSettings, PromptSettings
from pathotune_cli.config.schema import SLIDE_LEVEL, BackbonePreset, Strict, TaskPreset, TileSpec
from pathotune_cli.engine.stain_stats import StainStats
from pathotune_cli.engine.trust import TrustStats

FORMAT = "pathotune-prompts"
FORMAT_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
WeightSourceKind = Literal["random", "explicit", "weight-map", "hf-cache", "download"]
TileSource = Literal["backbone", "prompts", "end-to-end"]
"""How a slide-level file's tile features are made: the bare backbone, a tile-level prompt file tuned on the
lab's tiles (two-stage), or prompts tuned with the aggregator from slide labels (end to end)."""


class FrozenPart(Strict):
    """A frozen model a prompt file depends on: its preset, and the fingerprint of the weights it was tuned on."""

    preset: BackbonePreset
    fingerprint: str
    weight_source: WeightSourceKind | None = None
    """How the weights were found when the file was made (None in format 1 files)."""

    @property
    def random_weights(self) -> bool:
        """Whether the model was tuned on random weights (format 1 files: when the preset says so)."""
        return (self.weight_source or self.preset.weights) == "random"


class Preprocessing(Strict):
    """What the model expects: RGB floats in [0, 1]; it resizes and normalises itself."""

    input: str = "RGB float in [0, 1], (B, 3, H, W); the model resizes and normalises itself"
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


class StainSpec(Strict):
    """The stain normalisation inside the model (``engine.stain``); its reference tensors are ``stain.*``."""

    method: Literal["macenko", "reinhard"]
    reference: str
    """What it was fitted to: training tiles (how many, which seed) or the user's image or folder."""
    library: str
    """The library that fitted it (the module applying it is checked against it in the tests)."""
    tensors: list[str]
    """Names of the reference tensors, without the ``stain.`` prefix."""


class PromptHeader(Strict):
    """The JSON metadata inside a prompt file's safetensors header."""

    format: Literal["pathotune-prompts"] = FORMAT
    format_version: int = FORMAT_VERSION
    pathotune_version: str
    created: str = ""
    backbone: FrozenPart
    instance_encoder: FrozenPart | None = None
    task: TaskPreset
    classes: list[str]
    prompt: PromptSettings
    method: str
    text_encoder: str | None = None
    texts: list[str] = Field(default_factory=list)
    preprocessing: Preprocessing
    tile: TileSpec
    trainable_parameters: int
    backbone_parameters: int
    metrics: dict[str, Any] | None = None
    """Validation metrics at save time (``split`` and metric values)."""
    training: dict[str, Any] | None = None
    """Seed, epochs, class counts, data, config digest."""
    level: Literal["tile", "slide"] = "tile"
    """``slide``: the file holds a tile encoder (``tiles.*`` tensors) and a MIL aggregator (``mil.*``)."""
    mil: MILSettings | None = None
    """Slide-level files: the aggregator's settings (its ``aggregator`` resolved)."""
    tile_source: TileSource | None = None
    """Slide-level files: where the tile features come from."""
    source_prompts: dict[str, Any] | None = None
    """Two-stage slide-level files: the tile-level prompt file the tile encoder came from (path, sha256, task)."""
    trust: TrustStats | None = None
    """Temperature, conformal quantiles and OOD statistics from the validation split (``engine.trust``); None in
    files made before it existed or tuned without validation: their probabilities are the raw softmax."""
    stain: StainSpec | None = None
    """Stain normalisation applied inside the model (``--stain``); None: the tiles go in as they are."""
    stain_stats: StainStats | None = None
    """The training tiles' stain statistics and the distance past which a slide is not what the model knows
    (``engine.stain_stats``); None in files made before it existed."""

    @model_validator(mode="after")
    def _parts_agree(self) -> PromptHeader:
        if self.classes != self.task.class_names:
            raise ValueError("its class list does not match its task's classes")
        if self.method != self.prompt.method:
            raise ValueError(f"method '{self.method}' differs from its prompt settings ('{self.prompt.method}')")
        if SLIDE_LEVEL[self.level] != (self.mil is not None and self.tile_source is not None):
            raise ValueError("a slide-level file needs its mil settings and tile source, and only it has them")
        ood = self.trust.ood if self.trust is not None else None
        if ood is not None and not set(ood.classes) <= set(self.classes):
            raise ValueError("its OOD statistics name classes the task does not have")
        return self

    @property
    def random_weights(self) -> bool:
        """Whether any frozen part ran on random weights."""
        return self.backbone.random_weights or bool(self.instance_encoder and self.instance_encoder.random_weights)

    def to_json(self) -> dict[str, Any]:
        """The header as JSON-ready data.

        ``prompt.lora`` and ``prompt.knn`` are written only where they are not the defaults, so a file of the
        methods before them stays readable by the pathotune before them.
        """
        data = self.model_dump(mode="json")
        for key, default in (("lora", LoRASettings()), ("knn", KNNSettings())):
            if data["prompt"].get(key) == default.model_dump(mode="json"):
                data["prompt"].pop(key)
        return data
