"""The two kinds of preset, as frozen pydantic models: a backbone and a task.

Presets are data (YAML under ``presets/backbones`` and ``presets/tasks``); these classes are their schema.
Cross-field rules sit beside the fields they join, each with its own message.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, Field, model_validator

Family = Literal["timm_vit", "open_clip", "pathoduet", "conch"]
Pool = Literal["token", "avg", "token+avg", "attn"]
Aggregator = Literal["abmil", "clam-sb", "mean"]
KeyLayout = Literal["timm", "hf_vit", "hf_dinov2", "pathoduet", "conch", "open_clip"]
SHA256_HEX = 64
LAYOUTS_OF_FAMILY: dict[str, tuple[str, ...]] = {
    "timm_vit": ("timm", "hf_vit", "hf_dinov2"),
    "open_clip": ("open_clip",),
    "pathoduet": ("pathoduet",),
    "conch": ("conch",),
}
"""The checkpoint key layouts each family's loader converts from."""


SLIDE_LEVEL = {"tile": False, "slide": True}
"""Whether a task's ``level`` predicts one label per slide (a MIL aggregator over its tiles)."""

class Strict(BaseModel, frozen=True, extra="forbid", allow_inf_nan=False):
    """Base for every config object: immutable, an unknown key is an error, not a silent default, and a number
    is finite (``--set train.lr=1e400`` is inf, refused here rather than training on it)."""


class BackbonePreset(Strict):
    """A frozen foundation model and everything needed to load and feed it."""

    name: str
    family: Family
    description: str = ""
    model: str
    """timm architecture name, or open_clip model name."""
    model_kwargs: dict = Field(default_factory=dict)
    """Extra keyword arguments for the model constructor (depth, img_size, reg_tokens, ...)."""
    weights: str = "random"
    """Where weights come from: ``random`` (tests and demo only), ``hf-hub:ORG/NAME``, ``open_clip:TAG``,
    or ``local``, meaning the user supplies a file (``--weights`` or the weight map)."""
    weight_files: list[str] = Field(default_factory=list)
    """File names inside the hub repository or the user's folder, in order of preference."""
    revision: str | None = None
    """The hub commit the weights were published at, where pinned; None means the repository's ``main``."""
    sha256: str | None = None
    """sha256 of ``weight_files[0]`` where the publisher shows it; None when unknown (never guessed)."""
    source: str = ""
    """Where the weights are published (a model page or repository URL), for people and the README."""
    key_layout: KeyLayout = "timm"
    """How the published checkpoint names its tensors; each layout has one pure converter to the model's keys.
    Defaults to the family's own layout (timm_vit: timm, open_clip: open_clip, pathoduet, conch)."""
    drop_keys: list[str] = Field(default_factory=list)
    """Training-only tensors the published checkpoint carries and inference never uses; dropped by exact name
    (or by prefix when the entry ends in ``.``). Any other key the model does not expect is an error."""
    text_tower: str = ""
    """The backbone's own text tower, described (empty where there is none)."""
    tokenizer_files: list[str] = Field(default_factory=list)
    """Tokenizer files the text tower needs, looked for beside the weight file (CONCH)."""
    input_size: int = 224
    patch_size: int = 16
    width: int
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    mpp: float | None = None
    """Microns per pixel the backbone was trained at, where known."""
    num_prefix_tokens: int = 1
    num_register_tokens: int = 0
    pool: Pool = "token"
    text_encoder: str = "hash"
    """Text encoder for textual prompts: ``self`` (the backbone's own text tower), ``minilm``, ``hash``."""
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    licence: str = "unknown"
    gated: bool = False
    citation: str = ""
    fetch: str = ""
    """The command, run on a machine with network, that downloads the weights."""

    @model_validator(mode="before")
    @classmethod
    def _default_layout(cls, data: object) -> object:
        if isinstance(data, dict) and "key_layout" not in data and isinstance(data.get("family"), str):
            layout = {"timm_vit": "timm"}.get(data["family"], data["family"])
            data = {**data, "key_layout": layout}
        return data

    @model_validator(mode="after")
    def _check(self) -> BackbonePreset:
        if self.input_size % self.patch_size:
            raise ValueError(
                f"input_size {self.input_size} is not a multiple of patch_size {self.patch_size}"
            )
        if self.num_register_tokens > self.num_prefix_tokens:
            raise ValueError(
                f"num_register_tokens {self.num_register_tokens} exceeds num_prefix_tokens "
                f"{self.num_prefix_tokens} (prefix tokens count the CLS token and the registers)"
            )
        if self.pool in ("token", "token+avg") and self.num_prefix_tokens == self.num_register_tokens:
            raise ValueError(f"pool '{self.pool}' reads a CLS token, but this backbone has none; use pool: avg")
        layouts = LAYOUTS_OF_FAMILY[self.family]
        if self.key_layout not in layouts:
            raise ValueError(
                f"family {self.family} reads key_layout {' or '.join(layouts)}, not '{self.key_layout}'"
            )
        if self.pool == "attn" and self.family != "conch":
            raise ValueError("pool 'attn' is the attentional pooler of family conch; use token, avg or token+avg")
        if self.sha256 is not None and (
            len(self.sha256) != SHA256_HEX or any(c not in "0123456789abcdef" for c in self.sha256)
        ):
            raise ValueError(f"sha256 must be 64 lowercase hex digits or null; got {self.sha256!r}")
        return self


class ClassSpec(Strict):
    """One class of a task: its name, the one-line description that feeds the textual prompts, aliases."""

    name: str
    description: str
    label: str | None = None
    """A readable phrase for the task text where the name is an abbreviation (``ADI`` -> ``adipose tissue``)."""
    aliases: list[str] = Field(default_factory=list)


class TileSpec(Strict):
    """The physical resolution and size of the tiles a task is defined on."""

    mpp: float = Field(0.5, gt=0.01, le=64)
    size: int = Field(224, ge=16, le=4096)


class TaskPreset(Strict):
    """A lab task: its classes, the text that describes it, and the tiles it works on."""

    name: str
    description: str = ""
    template: str = "an H&E-stained tissue patch; classes: {classes}"
    """Task-level text for the textual prompts; ``{classes}`` becomes the comma-joined class names."""
    class_template: str = "{description}"
    """Per-class text; ``{name}`` and ``{description}`` are filled in."""
    classes: list[ClassSpec]
    ordinal: bool = False
    """Classes are ordered grades: Cohen's kappa is quadratic-weighted."""
    level: Literal["tile", "slide"] = "tile"
    """``tile``: one label per tile (an ImageFolder or tile CSV). ``slide``: one label per slide (a slides CSV),
    learnt by multiple-instance learning over the slide's tiles."""
    aggregator: Aggregator = "abmil"
    """For slide-level tasks, our recommended MIL aggregator (``mil.aggregator`` overrides it)."""
    tile: TileSpec = Field(default_factory=TileSpec)
    recommended_backbone: str = "uni"
    """Our choice of backbone for the task: what ``tune`` uses when neither ``--backbone`` nor the lab default
    (``pathotune config set backbone``) names one. Always a real model; random weights run only when named."""
    source: str = ""
    citation: str = ""

    @model_validator(mode="after")
    def _check(self) -> TaskPreset:
        _check_template("template", self.template, ("classes",))
        _check_template("class_template", self.class_template, ("name", "description"))
        if len(self.classes) < 2:
            raise ValueError(f"a task needs at least 2 classes, got {len(self.classes)}")
        seen: dict[str, int] = {}
        for index, spec in enumerate(self.classes):
            if not normalise_class_name(spec.name):
                raise ValueError(f"class {index + 1} has the name {spec.name!r}, which has no letter or digit")
            for key in dict.fromkeys([spec.name, *spec.aliases]):
                norm = normalise_class_name(key)
                if not norm:
                    continue
                if norm in seen and seen[norm] != index:
                    other = self.classes[seen[norm]].name
                    what = "class name" if key == spec.name and norm == normalise_class_name(other) else "name or alias"
                    raise ValueError(
                        f"{what} '{key}' of class {index + 1} is taken by class {seen[norm] + 1} ('{other}'): "
                        "class names and aliases must differ (case and separators aside)"
                    )
                seen[norm] = index
        return self

    @property
    def class_names(self) -> list[str]:
        """Class names in label order."""
        return [c.name for c in self.classes]

    def texts(self) -> list[str]:
        """The task's textual prompts: the task text, then one text per class."""
        labels = (c.label or c.name.replace("_", " ").lower() for c in self.classes)
        task_text = self.template.format(classes=", ".join(labels))
        return [task_text] + [self.class_template.format(name=c.name, description=c.description) for c in self.classes]


def _check_template(key: str, template: str, fields: tuple[str, ...]) -> None:
    """A text template may name only ``fields``, each as ``{field}``; ``{{`` and ``}}`` are literal braces."""
    import string

    allowed = " and ".join("{" + f + "}" for f in fields)
    try:
        named = [field for _, field, _spec, _conv in string.Formatter().parse(template) if field is not None]
    except ValueError as exc:
        raise ValueError(f"{key} {template!r} is not a text template ({exc}); write {{{{ for a literal brace") from None
    wrong = [f for f in named if f not in fields]
    if wrong:
        raise ValueError(f"{key} {template!r} names {{{wrong[0]}}}; it may name only {allowed}")
    try:
        template.format(**{f: "text" for f in fields})
    except (KeyError, IndexError, ValueError, AttributeError, TypeError) as exc:
        raise ValueError(f"{key} {template!r} does not format ({type(exc).__name__}); name only {allowed}") from None


def normalise_class_name(name: str) -> str:
    """Forgive case and separators: ``Adipose-Tissue``, ``adipose_tissue`` and ``ADIPOSE TISSUE`` match."""
    return "".join(ch for ch in name.lower() if ch.isalnum())


def class_matcher(task: TaskPreset) -> Callable[[str], int | None]:
    """Map a folder, label or QuPath class name to a class index, forgiving case and separators, honouring aliases."""
    table: dict[str, int] = {}
    for i, spec in enumerate(task.classes):
        for key in [spec.name, *spec.aliases]:
            table[normalise_class_name(key)] = i
    return lambda name: table.get(normalise_class_name(name))
