"""``pathotune inspect``: what a prompt file holds, whether it is intact, whether its backbone is here."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pathotune_cli.cli.options import JsonOpt, PromptsArg, PromptsOpt, choose_prompts
from pathotune_cli.cli.render import emit_json, key_values, table, user_errors, warn

if TYPE_CHECKING:
    from pathotune_cli.runs.inspect import InspectResult, Resolution


@user_errors
def inspect(prompts: PromptsArg = None, prompts_opt: PromptsOpt = None, json_out: JsonOpt = False) -> None:
    """Show a prompt file's metadata and tensors, check them against each other, say whether it loads here."""
    from pathotune_cli.runs.inspect import inspect_run

    prompts, _ = choose_prompts(prompts_opt, [prompts] if prompts else [])
    result = inspect_run(prompts)
    if json_out:
        emit_json(result.to_dict())
        return
    f, bb = result.file, result.backbone
    key_values(f"prompt file {f.path}", _items(result))
    table("tensors", ["name", "shape", "dtype"], [(t.name, tuple(t.shape), t.dtype) for t in result.tensors])
    if bb.random_weights:
        warn(f"backbone '{bb.preset}' has random weights: for tests and demos only, not for diagnostic use")
    if not result.tensors_verified:
        warn(f"tensor shapes not verified: {result.tensors_not_verified_because}")


def _items(result: InspectResult) -> dict[str, str]:
    """The key-value lines shown for a prompt file, in order."""
    header, bb, inst, f = result.header, result.backbone, result.instance_encoder, result.file
    items = {
        "file": f"{f.path} ({f.bytes / 1024:.0f} KiB)",
        "sha256": f.sha256,
        "task": f"{header.task.name}: {', '.join(header.classes)}",
        "method": f"{header.method} ({header.trainable_parameters:,} trainable parameters)",
        "backbone": f"{bb.preset} ({bb.model}), fingerprint {bb.fingerprint}"
        + (", RANDOM WEIGHTS" if bb.random_weights else ""),
        "backbone here": _resolution(bb.resolves),
    }
    if inst is not None:
        items.update({"instance encoder": f"{inst.preset}, fingerprint {inst.fingerprint}",
                      "instance encoder here": _resolution(inst.resolves)})
    items.update({"text encoder": f"{header.text_encoder} ({len(header.texts)} stored texts)",
                  "tile": f"{header.tile.mpp} mpp, {header.tile.size} px"})
    metrics = {k: v for k, v in (header.metrics or {}).items() if k != "split" and v is not None}
    if metrics:
        split = (header.metrics or {}).get("split", "")
        shown = ", ".join(f"{k} {v:.3f}" for k, v in metrics.items())
        items.update({f"metrics ({split})" if split else "metrics": shown})
    written = f"pathotune {header.pathotune_version}, format {header.format_version}" + (
        f", {header.created}" if header.created else f", modified {f.modified}"
    )
    tensors = (
        f"{len(result.tensors)} ({result.tensor_values:,} values), shapes match the metadata, checksum matches"
        if result.tensors_verified
        else f"not verified: {result.tensors_not_verified_because}"
    )
    stain = (f"{header.stain.method} inside the model, fitted to {header.stain.reference}"
             if header.stain is not None else "none (tiles go in as scanned)")
    items.update({"trust": _trust(header.trust), "stain": stain, "written by": written, "tensors": tensors})
    return items


def _trust(trust: object) -> str:
    if trust is None:
        return "none (raw softmax probabilities, no prediction sets or OOD flags)"
    cal, levels = trust.calibration, trust.conformal.levels
    sets = ", ".join(f"{q.alpha:g}" for q in levels if q.quantile is not None) or "none"
    ood = f"threshold {trust.ood.threshold:.3g}" if trust.ood is not None else "none"
    return (f"temperature {cal.temperature:.3g} (validation ECE {cal.ece_before:.3f} -> {cal.ece_after:.3f}); "
            f"prediction sets at alpha {sets}; OOD flag {ood}")


def _resolution(resolves: Resolution) -> str:
    if resolves.ok:
        return f"resolves ({resolves.source})"
    return f"missing: {resolves.fix}" if resolves.fix else f"missing: {resolves.problem}"
