"""Settings of one tuning run: the method and its prompts, the training recipe, the data.

Every default here is ours (the paper gives no token counts, encoders or recipe), documented in README.md.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from pathotune_cli.config.schema import SLIDE_LEVEL, Aggregator, BackbonePreset, Strict, TaskPreset

ADDED_DEFAULTS: dict[str, object] = {
    "train.augment.hed": 0.0, "train.augment.stain_matrix": 0.0, "train.stain.method": "none",
    "train.stain.reference": None, "train.stain.reference_tiles": 64,
}
"""Settings added after runs existed, with their defaults: a run or checkpoint made without them resumes as one
made with the default (``runs.tune.config_digest``)."""
Method = Literal["linear", "vpt", "pathotune", "full", "lora", "prototypes", "knn", "zeroshot"]
TRAINING_FREE = ("prototypes", "knn", "zeroshot")
"""Methods fitted in one pass over the training tiles (or from text alone), without a gradient step."""
TEXT_FAMILIES = ("open_clip", "conch")
"""Backbone families with their own text tower (zero-shot classification)."""
LoRATarget = Literal["qkv", "proj", "mlp"]
LORA_DEFAULT_RANK = 16
"""Rank of ``--method lora`` when ``lora.rank`` is not set: THUNDER's (rank 16 on the attention's qkv)."""
Precision = Literal["auto", "fp32", "bf16", "fp16"]


class TVPSettings(Strict):
    """Task-specific visual prompts: learnable tokens of the backbone's width."""

    tokens: int = Field(8, ge=0, le=512)
    deep: bool = True
    """Shallow: tokens enter at the first block only. Deep: fresh tokens replace the previous block's."""
    depth: int | None = Field(None, ge=1)
    """With ``deep``, replace tokens only at the last ``depth`` blocks (None: every block)."""
    init_std: float = Field(0.02, gt=0)


class TTPSettings(Strict):
    """Task-specific textual prompts: the task's text, encoded once, projected to tokens."""

    tokens: int | None = Field(None, ge=0, le=256)
    """Token count; None means one token per text (the task text plus one per class); 0 switches TTP off
    (ours, for ablations: ``pathotune`` with TVP and IVP only)."""
    encoder: str | None = None
    """``self``, ``minilm`` or ``hash``; None takes the backbone preset's ``text_encoder``."""
    hidden: int = Field(256, ge=8)


class IVPSettings(Strict):
    """Instance-specific visual prompts: a frozen instance encoder, then a trainable Visual Refine Module."""

    tokens: int = Field(4, ge=0, le=256)
    """Token count; 0 switches IVP off (ours, for ablations: ``pathotune`` with TVP and TTP only)."""
    encoder: str = "self"
    """``self`` (the backbone without prompts) or another backbone preset name."""
    hidden: int = Field(256, ge=8)
    cache: bool = True
    """Encode each training image once per run (on the un-augmented tile) instead of once per step."""


class LoRASettings(Strict):
    """Low-rank adapters on the frozen backbone's linear layers (``--method lora``, or added to vpt/pathotune)."""

    rank: int | None = Field(None, ge=0, le=1024)
    """Adapter rank; None: 16 for ``--method lora`` and no adapters for other methods."""
    alpha: float | None = Field(None, gt=0)
    """Scale numerator: the update is ``alpha / rank * B A x``; None means alpha = rank (scale 1)."""
    dropout: float = Field(0.0, ge=0, lt=1)
    targets: list[LoRATarget] = Field(default_factory=lambda: ["qkv"])
    """``qkv`` (the attention's input projection), ``proj`` (its output projection), ``mlp`` (fc1 and fc2)."""


class KNNSettings(Strict):
    """``--method knn``: cosine k-nearest neighbours over the stored training features."""

    k: int = Field(20, ge=1, le=10_000)
    temperature: float = Field(0.07, gt=0)
    """Each neighbour votes ``exp(similarity / temperature)`` (DINO's weighted kNN; ours)."""


class PromptSettings(Strict):
    """Which parts train, and the shape of each prompt."""

    method: Method = "pathotune"
    tvp: TVPSettings = Field(default_factory=TVPSettings)
    ttp: TTPSettings = Field(default_factory=TTPSettings)
    ivp: IVPSettings = Field(default_factory=IVPSettings)
    pool: Literal["token", "avg", "token+avg"] | None = None
    """Head input; None takes the backbone preset's ``pool``."""
    lora: LoRASettings = Field(default_factory=LoRASettings)
    knn: KNNSettings = Field(default_factory=KNNSettings)

    @property
    def lora_rank(self) -> int:
        """The adapters' rank in this model; 0: no adapters."""
        if self.method == "lora":
            return LORA_DEFAULT_RANK if self.lora.rank is None else self.lora.rank
        return self.lora.rank or 0

    @property
    def training_free(self) -> bool:
        """Whether the method fits without a gradient step (prototypes, knn, zeroshot)."""
        return self.method in TRAINING_FREE

    @property
    def uses_ttp(self) -> bool:
        """Whether the model has textual prompts: method ``pathotune`` and ``ttp.tokens`` not 0."""
        return self.method == "pathotune" and self.ttp.tokens != 0

    @property
    def uses_ivp(self) -> bool:
        """Whether the model has instance prompts: method ``pathotune`` and ``ivp.tokens`` not 0."""
        return self.method == "pathotune" and self.ivp.tokens != 0

    @model_validator(mode="after")
    def _check(self) -> PromptSettings:
        if self.method == "vpt" and self.tvp.tokens == 0:
            raise ValueError("method 'vpt' needs tvp.tokens > 0")
        if self.method == "lora" and self.lora_rank == 0:
            raise ValueError("method 'lora' needs lora.rank > 0 (e.g. --set lora.rank=16)")
        if self.lora.rank and self.method in ("full", *TRAINING_FREE):
            raise ValueError(f"lora.rank is for methods lora, linear, vpt and pathotune; method '{self.method}' "
                             f"{'trains every weight already' if self.method == 'full' else 'trains nothing'}")
        if not self.lora.targets:
            raise ValueError("lora.targets needs at least one of qkv, proj, mlp")
        return self


class AugmentSettings(Strict):
    """H&E-appropriate augmentation: orientation carries no meaning, stain varies a little."""

    flips: bool = True
    rot90: bool = True
    brightness: float = Field(0.1, ge=0, le=1)
    contrast: float = Field(0.1, ge=0, le=1)
    saturation: float = Field(0.1, ge=0, le=1)
    hue: float = Field(0.02, ge=0, le=0.5)
    hed: float = Field(0.0, ge=0, le=0.5)
    """HED-space jitter (Tellez et al. 2018): each stain's concentration scaled by 1 + U(-hed, hed) and shifted by
    U(-hed, hed) times its mean; 0 switches it off. Ours: off by default, 0.05 a mild setting."""
    stain_matrix: float = Field(0.0, ge=0, le=0.5)
    """Stain-matrix perturbation: each entry of the H&E optical-density vectors multiplied by 1 + U(-s, s), the
    vectors renormalised; 0 switches it off. Ours: off by default, 0.05 a mild setting."""


class StainSettings(Strict):
    """Stain normalisation stored in the prompt file and applied inside the model's forward."""

    method: Literal["none", "macenko", "reinhard"] = "none"
    """``macenko`` (stain vectors and concentrations), ``reinhard`` (LAB mean and spread) or ``none``."""
    reference: str | None = None
    """An image or a folder of images to fit to; None: a seeded sample of the training tiles."""
    reference_tiles: int = Field(64, ge=1, le=4096)
    """Training tiles in the default reference's montage (ours)."""


class TrainSettings(Strict):
    """The training recipe."""

    epochs: int = Field(20, ge=1, le=10_000)
    batch_size: int = Field(32, ge=1, le=4096)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    warmup_epochs: float = Field(1.0, ge=0)
    schedule: Literal["cosine", "constant"] = "cosine"
    class_weights: bool = True
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    val_fraction: float = Field(0.2, ge=0, lt=1)
    patience: int | None = Field(5, ge=1)
    """Stop when the monitored metric has not improved for this many epochs; None never stops early."""
    monitor: Literal["balanced_accuracy", "accuracy", "macro_f1", "loss"] = "balanced_accuracy"
    shots: int | None = Field(None, ge=1)
    """Few-shot: at most this many training images per class, sampled with the seed."""
    augment: AugmentSettings = Field(default_factory=AugmentSettings)
    stain: StainSettings = Field(default_factory=StainSettings)
    """``--stain`` / ``train.stain.method``: normalisation fitted at tune, stored in the prompt file."""
    grad_clip: float | None = Field(1.0, gt=0)


class MILSettings(Strict):
    """Multiple-instance learning for slide-level tasks: how tiles become one prediction per slide.

    Our defaults: CLAM-SB's sizes (512-256 gated attention, dropout 0.25, 8 tiles each way for its instance
    loss, bag loss weight 0.7) and gated ABMIL with the same widths; Adam at 2e-4 with weight decay 1e-5 as in
    CLAM's published commands; 512 tiles sampled per slide per step when prompts train end to end (STAMP's bag
    size), in chunks of 64 tiles so memory is bounded by the chunk, not the slide.
    """

    aggregator: Aggregator | None = None
    """``abmil``, ``clam-sb`` or ``mean``; None takes the task preset's."""
    hidden: int = Field(512, ge=8)
    attention: int = Field(256, ge=8)
    dropout: float = Field(0.25, ge=0, lt=1)
    k_sample: int = Field(8, ge=1)
    """CLAM-SB: tiles taken from each end of the attention ranking for the instance loss."""
    bag_weight: float = Field(0.7, ge=0, le=1)
    """CLAM-SB: weight of the slide loss against the instance loss."""
    lr: float = Field(2e-4, gt=0)
    weight_decay: float = Field(1e-5, ge=0)
    tiles_per_slide: int = Field(512, ge=1)
    """End to end: at most this many tiles per slide per step, sampled with the seed."""
    chunk: int = Field(64, ge=1)
    """End to end: tiles per forward chunk; memory is bounded by one chunk's activations."""
    prompt_lr: float | None = Field(None, gt=0)
    """End to end: learning rate of the prompts (None: ``train.lr``)."""
    slides_per_step: int = Field(1, ge=1, le=4096)
    """Slides whose gradients are averaged into one optimiser step; under ``torchrun`` they are shared among the
    ranks, so set it to the number of ranks (or a multiple) to keep every rank busy."""


class KernelSpec(Strict):
    """Kernels a frozen backbone runs with; ``auto``: measured on this machine (``backbones.kernels``)."""

    attention: Literal["auto", "fused", "plain"] = "auto"
    weights: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """``bf16`` / ``fp16``: frozen Linear weights stored in that dtype (only under the same autocast precision;
    under another precision the pin is refused)."""

    def precision_mismatch(self, precision: str) -> tuple[str, str] | None:
        """(problem, fix) when frozen weights are pinned to a dtype that ``precision``'s autocast does not compute
        in (``auto`` precision is not known yet: None), else None."""
        if self.weights in ("auto", "fp32") or precision in ("auto", self.weights):
            return None
        return (f"kernels weights={self.weights} store the frozen weights for {self.weights} autocast, and this "
                f"run's precision is {precision}", f"add --precision {self.weights}, or pin weights=fp32 or auto")

    @classmethod
    def parse(cls, spec: str | None) -> KernelSpec:
        """``auto``, ``plain``, ``fused``, ``bf16``, ``fp16``, ``fp32``, or ``attention=plain,weights=bf16``.

        Raises:
            ValueError: an unknown name or value, naming the allowed ones.
        """
        values: dict[str, str] = {}
        for part in [p.strip() for p in (spec or "auto").split(",") if p.strip()]:
            key, _, value = part.partition("=")
            if not value:  # a bare value names its key
                key, value = ("attention" if key in ("fused", "plain") else "weights" if key in ("fp32", "bf16", "fp16")
                              else key), key
            if value == "auto" or key == "auto":
                continue
            allowed = {"attention": ("fused", "plain"), "weights": ("fp32", "bf16", "fp16")}.get(key, ())
            if value not in allowed:
                raise ValueError(f"kernels '{part}': use attention=fused|plain and weights=fp32|bf16|fp16 (or auto)")
            values[key] = value
        return cls(**values)


class RuntimeSettings(Strict):
    """How a run executes, not what it computes: left out of the resume digest."""

    kernels: KernelSpec = Field(default_factory=KernelSpec)
    """``--set runtime.kernels=plain,bf16`` (a ``KernelSpec.parse`` string) or ``runtime.kernels.attention=...``."""

    @field_validator("kernels", mode="before")
    @classmethod
    def _parse_string(cls, value: object) -> object:
        return KernelSpec.parse(value) if isinstance(value, str) else value


class RunConfig(Strict):
    """Everything a tuning run needs, resolved: written to ``RUN/config.yaml`` and readable back."""

    task: TaskPreset
    backbone: BackbonePreset
    prompt: PromptSettings = Field(default_factory=PromptSettings)
    train: TrainSettings = Field(default_factory=TrainSettings)
    mil: MILSettings = Field(default_factory=MILSettings)
    """Slide-level tasks only."""
    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)
    data: str | None = None
    """An ImageFolder tree or a CSV with path,label[,split]; only ``zeroshot`` runs without it."""
    val_data: str | None = None
    weights: str | None = None
    """Explicit backbone weight file or folder."""
    out: str = "runs/tune"
    seed: int = 0
    precision: Precision = "auto"
    device: str = "auto"
    features: str | None = None
    """Slide-level tasks: a folder of per-slide feature ``.h5`` files to reuse (ours, TRIDENT's or CLAM's)."""
    tile_prompts: str | None = None
    """Slide-level tasks, two-stage: a tile-level prompt file whose prompted features feed the aggregator."""
    folds: int | None = Field(None, ge=2, le=20)
    """Slide-level tasks: patient-grouped stratified K-fold cross-validation (one model per fold)."""
    skip_bad_slides: bool = False
    """Slide-level tasks: list unreadable slides and go on without them (else they stop the run)."""
    default_mpp: float | None = Field(None, gt=0.0, le=16.0)
    """Slide-level tasks: mpp for slides whose metadata and CSV row give none (as ``tile`` and ``predict``)."""

    @model_validator(mode="after")
    def _stored_weights_match_precision(self) -> RunConfig:
        """A pin of stored bf16/fp16 weights under another explicit precision is refused before the run starts
        (under ``auto`` it is checked once the precision is known, ``backbones.kernels.candidates``)."""
        mismatch = self.runtime.kernels.precision_mismatch(
            self.precision if self.precision != "auto" else self.backbone.precision)
        if mismatch:
            raise ValueError("; ".join(mismatch))
        return self

    @model_validator(mode="after")
    def _slide_only(self) -> RunConfig:
        if not SLIDE_LEVEL[self.task.level]:
            used = [k for k in ("features", "tile_prompts", "folds", "default_mpp") if getattr(self, k) is not None]
            if used:
                raise ValueError(f"'{used[0]}' is for slide-level tasks; task '{self.task.name}' is tile-level")
        elif self.prompt.method == "full" or self.prompt.method in ("lora", *TRAINING_FREE) or self.prompt.lora.rank:
            raise ValueError(f"method '{self.prompt.method}'{' with lora' if self.prompt.lora.rank else ''} is not "
                             "offered for slide-level tasks; use pathotune, vpt or linear")
        elif self.train.stain.method != "none":
            raise ValueError("stain normalisation (--stain) is for tile-level tasks; tune the tile prompts with "
                             "--stain first, or leave it out")
        return self

    @model_validator(mode="after")
    def _zeroshot_needs_text(self) -> RunConfig:
        if self.prompt.method == "zeroshot" and self.backbone.family not in TEXT_FAMILIES:
            raise ValueError(f"method 'zeroshot' needs a backbone with a text tower; '{self.backbone.name}' "
                             f"({self.backbone.family}) has none: use clip-vit-b16, quiltnet-b32 or conch")
        if self.prompt.method == "lora" and self.backbone.family == "open_clip":
            raise ValueError(f"method 'lora' adapts timm-style blocks; '{self.backbone.name}' is an open_clip tower "
                             "(nn.MultiheadAttention): use vpt or linear on it, or lora on a timm backbone")
        return self

    @model_validator(mode="after")
    def _data_given(self) -> RunConfig:
        if not self.data and self.prompt.method != "zeroshot":
            raise ValueError("no training data given: pass --data DIR|CSV (only --method zeroshot runs without it)")
        return self
