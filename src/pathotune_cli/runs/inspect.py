"""``pathotune inspect`` as a function: what a prompt file holds, whether it is intact, whether it loads here.

Intact means the checksum matches, the header validates and every tensor has the shape the header implies. The
expected shapes come from the real ``PromptedModel`` built on the ``meta`` device (no memory, no weight file
read), so they can never drift from what ``load_prompted_model`` would build; the backbone's weights are never
loaded.
"""

from __future__ import annotations

import importlib
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pathotune_cli.config.schema import BackbonePreset
from pathotune_cli.engine.header import FrozenPart, PromptHeader
from pathotune_cli.errors import PathotuneError

if TYPE_CHECKING:
    import torch

    from pathotune_cli.backbones.base import Backbone
    from pathotune_cli.engine.promptfile import PromptFile


@dataclass(frozen=True)
class FileFacts:
    """The prompt file on disk: where, how big, its sha256, when it was last written."""

    path: str
    bytes: int
    sha256: str
    modified: str


@dataclass(frozen=True)
class Resolution:
    """Where a frozen part's weights come from on this machine (``ok``), or why they do not."""

    ok: bool
    source: str | None = None
    problem: str | None = None
    fix: str | None = None

    def to_dict(self) -> dict[str, object]:
        """As ``--json`` prints it: ``source`` when it resolves, else ``problem`` and ``fix``."""
        if self.ok:
            return {"ok": True, "source": self.source}
        return {"ok": False, "problem": self.problem, "fix": self.fix}


@dataclass(frozen=True)
class PartShown:
    """A frozen part (backbone or instance encoder) as shown: preset, fingerprint, weights, resolution here."""

    preset: str
    fingerprint: str
    weight_source: str | None
    random_weights: bool
    resolves: Resolution
    family: str | None = None
    """Family, model and weights are shown for the backbone only (``detail``)."""
    model: str | None = None
    weights: str | None = None
    detail: bool = False

    def to_dict(self) -> dict[str, object]:
        """As ``--json`` prints it."""
        shown: dict[str, object] = {"preset": self.preset, "fingerprint": self.fingerprint,
                                    "weight_source": self.weight_source, "random_weights": self.random_weights,
                                    "resolves": self.resolves.to_dict()}
        if self.detail:
            shown.update(family=self.family, model=self.model, weights=self.weights)
        return shown


@dataclass(frozen=True)
class TensorRow:
    """One tensor stored in the prompt file."""

    name: str
    shape: list[int]
    dtype: str
    numel: int


@dataclass(frozen=True)
class InspectResult:
    """A prompt file's header, tensors and integrity, and whether its frozen parts resolve here."""

    file: FileFacts
    header: PromptHeader
    backbone: PartShown
    instance_encoder: PartShown | None
    tensors: list[TensorRow] = field(default_factory=list)
    tensors_verified: bool = False
    tensors_not_verified_because: str | None = None

    @property
    def tensor_values(self) -> int:
        """Numbers stored in the file's tensors."""
        return sum(t.numel for t in self.tensors)

    def to_dict(self) -> dict[str, object]:
        """The document ``--json`` prints."""
        h = self.header
        return {
            "file": asdict(self.file), "format_version": h.format_version, "pathotune_version": h.pathotune_version,
            "created": h.created, "task": h.task.name,
            "classes": [{"name": c.name, "description": c.description} for c in h.task.classes],
            "method": h.method, "prompt": h.prompt.model_dump(mode="json"), "backbone": self.backbone.to_dict(),
            "instance_encoder": None if self.instance_encoder is None else self.instance_encoder.to_dict(),
            "text_encoder": h.text_encoder, "texts": h.texts,
            "tile": h.tile.model_dump(mode="json"), "preprocessing": h.preprocessing.model_dump(mode="json"),
            "trainable_parameters": h.trainable_parameters, "backbone_parameters": h.backbone_parameters,
            "metrics": h.metrics, "training": h.training,
            "trust": h.trust.model_dump(mode="json") if h.trust is not None else None,
            "stain": h.stain.model_dump(mode="json") if h.stain is not None else None,
            "stain_stats": h.stain_stats.model_dump(mode="json") if h.stain_stats is not None else None,
            "tensors": [asdict(t) for t in self.tensors],
            "tensor_values": self.tensor_values, "tensors_verified": self.tensors_verified,
            "tensors_not_verified_because": self.tensors_not_verified_because,
        }


def inspect_run(prompts: str | Path) -> InspectResult:
    """Summarise and verify a prompt file.

    Raises:
        BadInput: missing or truncated file, a checksum that does not match, a header that does not validate, or
            a tensor that is missing, unexpected or of the wrong shape.
    """
    from pathotune_cli.engine.promptfile import check_tensors, read_prompt_file
    from pathotune_cli.files import sha256_file

    file = read_prompt_file(prompts)
    header = file.header
    expected, skipped = expected_tensors(file)
    if expected is not None:
        check_tensors(file, expected)
    tensors = [
        TensorRow(name=name, shape=list(t.shape), dtype=str(t.dtype).removeprefix("torch."), numel=t.numel())
        for name, t in sorted(file.tensors.items())
    ]
    stat = file.path.stat()
    return InspectResult(
        file=FileFacts(path=str(file.path), bytes=stat.st_size, sha256=sha256_file(file.path),
                       modified=time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(stat.st_mtime))),
        header=header,
        backbone=_part(header.backbone, detail=True),
        instance_encoder=None if header.instance_encoder is None else _part(header.instance_encoder),
        tensors=tensors, tensors_verified=expected is not None, tensors_not_verified_because=skipped,
    )


def expected_tensors(file: PromptFile) -> tuple[dict[str, torch.Tensor] | None, str | None]:
    """The tensors ``load_prompted_model`` would expect, as shapes on the ``meta`` device, with no weights.

    Returns:
        ``(tensors, None)``, or ``(None, reason)`` where this build cannot construct the backbone's family.
    """
    import torch

    from pathotune_cli.engine.load import stored_text_embeddings
    from pathotune_cli.engine.model import PromptedModel

    header = file.header
    try:
        bb, device = _skeleton(header.backbone.preset)
        inst = _skeleton(header.instance_encoder.preset)[0] if header.instance_encoder is not None else None
    except _FamilyMissing as exc:
        return None, str(exc)
    slide = header.mil is not None
    stored = stored_text_embeddings(file, prefix="tiles." if slide else "")
    embeddings = None if stored is None else torch.empty(*stored.shape, device=device)
    with torch.device(device):
        text = file.tensors.get("head.text")  # zeroshot: the stored class texts
        text = None if text is None else torch.empty(*text.shape, device=device)
        model = PromptedModel(bb, header.prompt, 1 if slide else len(header.classes), embeddings, inst, text)
        model.resize_for(file.tensors)
        if slide:
            from pathotune_cli.engine.slide_model import make_slide_model

            model = make_slide_model(model, len(header.classes), header.mil, str(header.mil.aggregator))
    if not slide:
        from pathotune_cli.engine.load import stored_stain

        model.stain = stored_stain(file)
    return model.trained_state(), None


class _FamilyMissing(Exception):
    pass


def _skeleton(preset: BackbonePreset) -> tuple[Backbone, str]:
    """A backbone with the preset's shapes and no weights: on ``meta``, else random-initialised on the CPU."""
    import torch

    from pathotune_cli.backbones import FAMILIES, WeightSource

    module_name, _, class_name = FAMILIES[preset.family].partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError):
        raise _FamilyMissing(f"backbone family '{preset.family}' is not in this build") from None
    try:
        with torch.device("meta"):
            return cls(preset, WeightSource("random")), "meta"
    except (NotImplementedError, RuntimeError):  # a constructor that copies tensor data, which meta cannot do
        pass  # built on the CPU below, with random weights
    with torch.random.fork_rng():
        return cls(preset, WeightSource("random")), "cpu"


def _part(part: FrozenPart, detail: bool = False) -> PartShown:
    """A frozen part as shown: preset, fingerprint, random weights, and where its weights resolve here."""
    preset = part.preset
    return PartShown(preset=preset.name, fingerprint=part.fingerprint, weight_source=part.weight_source,
                     random_weights=part.random_weights, resolves=_resolves(preset),
                     family=preset.family if detail else None, model=preset.model if detail else None,
                     weights=preset.weights if detail else None, detail=detail)


def _resolves(preset: BackbonePreset) -> Resolution:
    """Where this preset's weights come from on this machine, or why they do not."""
    from pathotune_cli.backbones import resolve_weights

    try:
        return Resolution(ok=True, source=resolve_weights(preset).describe())
    except PathotuneError as exc:  # MissingWeights, or a weight map that points nowhere
        return Resolution(ok=False, problem=exc.problem, fix=exc.fix)
