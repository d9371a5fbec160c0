"""The model card beside every export, as JSON for machines and Markdown for people.

It says what the model is for, what it takes, what it returns, what it was trained and measured on, and
where it must not be used. Everything in it comes from the prompt file's header, the run and eval records
beside it, and the export's own check; nothing is guessed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pathotune_cli import __version__
from pathotune_cli.engine.header import FrozenPart, PromptHeader
from pathotune_cli.errors import BadInput

CARD_FORMAT = "pathotune-model-card"
CARD_VERSION = 1
INTENDED_USE = (
    "Research use: classifying H&E tiles into the classes below, at the stated tile mpp and size, on slides "
    "stained and scanned like the training data. It is not a medical device and must not be used to make "
    "or support a diagnosis."
)
LIMITATIONS = (
    "Not a diagnostic device; no regulatory clearance. Outputs are tile-level class probabilities, "
    "not a diagnosis.",
    "Valid only at the stated tile mpp and size; tiles at other magnifications are out of distribution.",
    "Trained on the data summarised below; other stains, scanners, sites, tissues or preparations can lower "
    "accuracy without warning. Validate locally before any use.",
    "Every tile gets one of the listed classes; there is no 'other' or 'unknown' class. Probabilities are "
    "calibrated by the temperature below where the prompt file has one (fitted on its validation split: it "
    "changes no top class, and promises nothing on data unlike that split); else they are the raw softmax.",
    "Small validation and test sets give wide confidence intervals; read the intervals, not only the values.",
)


def build_card(
    header: PromptHeader,
    *,
    export: dict[str, object],
    input_spec: dict[str, object],
    output_spec: dict[str, object],
    prompts: dict[str, object],
    check: dict[str, object] | None,
    validation: dict[str, object] | None,
    evaluation: dict[str, object] | None,
    versions: dict[str, str],
    random_weights: str | None = None,
    wsinfer: dict[str, object] | None = None,
) -> dict[str, Any]:
    """The card as one JSON-ready dict, from a prompt file's header and what the export learned.

    ``wsinfer``: for a WSInfer model folder, its config, how its pixels compare with ``pathotune predict``'s,
    how QuPath loads it, and the ``--check-wsinfer`` comparison.
    """
    return {
        "format": CARD_FORMAT,
        "format_version": CARD_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "pathotune_version": __version__,
        "versions": versions,
        "model": export,
        "source_prompts": prompts,
        "task": _task_section(header),
        "classes": [
            {"index": i, "name": c.name, "description": c.description} for i, c in enumerate(header.task.classes)
        ],
        "input": input_spec,
        "output": output_spec,
        "preprocessing": _preprocessing_section(header, input_spec["size"], export["format"]),
        "tile": header.tile.model_dump(mode="json"),
        "backbone": {**_frozen_section(header.backbone), "parameters": header.backbone_parameters,
                     "random_weights": random_weights is not None},
        "instance_encoder": None if header.instance_encoder is None else _frozen_section(header.instance_encoder),
        "method": header.method,
        "prompt": header.prompt.model_dump(mode="json"),
        "text_encoder": header.text_encoder,
        "trainable_parameters": header.trainable_parameters,
        "training": _training_section(header.training or {}),
        "validation": validation,
        "evaluation": evaluation,
        "check": check,
        "wsinfer": wsinfer,
        "calibration": None if header.trust is None else {
            "temperature": header.trust.calibration.temperature, "fitted_on": header.trust.split,
            "ece_before": header.trust.calibration.ece_before, "ece_after": header.trust.calibration.ece_after,
        },
        "intended_use": INTENDED_USE,
        "limitations": ([f"RANDOM WEIGHTS: {random_weights}."] if random_weights else []) + list(LIMITATIONS),
    }


def _task_section(header: PromptHeader) -> dict[str, Any]:
    task = header.task
    return {"name": task.name, "description": task.description, "ordinal": task.ordinal, "source": task.source,
            "citation": task.citation}


def _preprocessing_section(header: PromptHeader, size: int, fmt: str) -> dict[str, Any]:
    pre = header.preprocessing
    steps = ["uint8: / 255 -> float32 in [0, 1]; float32 in [0, 1]: taken as it is"]
    if header.stain is not None:
        steps.append(f"{header.stain.method} stain normalisation per tile towards the reference fitted to "
                     f"{header.stain.reference} (do not normalise stain yourself)")
    if size != pre.input_size:
        steps.append(f"resize {size} -> {pre.input_size} (bicubic, antialiased), as `pathotune predict` does")
    steps.append(f"(x - mean) / std per channel, mean {list(pre.mean)}, std {list(pre.std)}")
    caller = (f"cut tiles at {header.tile.mpp} mpp and {header.tile.size} px, resize to {size} x {size} "
              "(bicubic), keep RGB order")
    if fmt == "wsinfer":
        caller = "nothing: WSInfer's transforms (config.json) give the model pathotune predict's pixels"
    return {"baked_in": True, "steps": steps, "mean": list(pre.mean), "std": list(pre.std), "caller_does": caller}


def _frozen_section(part: FrozenPart) -> dict[str, Any]:
    preset = part.preset
    return {"preset": preset.name, "family": preset.family, "model": preset.model, "weights": preset.weights,
            "fingerprint": part.fingerprint, "licence": preset.licence, "citation": preset.citation}


def _training_section(training: dict[str, object]) -> dict[str, Any]:
    keys = ("seed", "epochs_run", "best_epoch", "data", "config_digest")
    return {"class_counts": training.get("class_counts", {}), **{k: training.get(k) for k in keys}}


def validation_metrics(header: PromptHeader, prompts_path: Path) -> dict[str, Any] | None:
    """Validation metrics at save time; CIs from ``RUN/metrics.json`` when its values match the file's."""
    stored = {k: v for k, v in (header.metrics or {}).items() if k != "split" and v is not None}
    if not stored:
        return None
    run_metrics = prompts_path.parent / "metrics.json"
    try:
        doc = _read_json(run_metrics) if run_metrics.is_file() else None
    except BadInput:
        doc = None
    with_ci = (doc or {}).get("metrics") or {}
    if with_ci and all(_close(with_ci.get(k, {}).get("value"), v) for k, v in stored.items()):
        return {
            "split": "validation",
            "n": doc.get("n"),
            "source": str(run_metrics),
            "metrics": {k: _interval(with_ci[k]) for k in stored},
        }
    return {
        "split": "validation",
        "n": None,
        "source": str(prompts_path),
        "metrics": {k: {"value": v, "ci_low": None, "ci_high": None} for k, v in stored.items()},
    }


def evaluation_metrics(
    prompts_path: Path, explicit: str | Path | None, warn: Callable[[str], None]
) -> dict[str, Any] | None:
    """Metrics with 95% CIs from ``pathotune eval``: ``--metrics FILE``, else ``eval/metrics.json``.

    Raises:
        BadInput: ``--metrics`` names a file that is missing or is not an eval metrics file.
    """
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file():
            raise BadInput(
                f"--metrics {path} does not exist", "pass the metrics.json that `pathotune eval` wrote"
            )
        doc = _read_json(path)
        if not isinstance(doc, dict) or not isinstance(doc.get("metrics"), dict):
            raise BadInput(
                f"--metrics {path} is not a metrics file of `pathotune eval`", "pass its eval/metrics.json"
            )
    else:
        path = prompts_path.parent / "eval" / "metrics.json"
        if not path.is_file():
            return None
        try:
            doc = _read_json(path)
        except BadInput:
            doc = None
        if not isinstance(doc, dict) or not isinstance(doc.get("metrics"), dict):
            warn(f"{path} is not an eval metrics file; the card has no evaluation section")
            return None
        named = Path(str(doc.get("prompts", "")))
        if not (named.is_file() and named.resolve() == prompts_path.resolve()):
            warn(
                f"{path} was made from another prompt file ({named}); pass --metrics {path} to use it anyway"
            )
            return None
    return {
        "source": str(path),
        "data": doc.get("data"),
        "n": doc.get("n"),
        "counts": doc.get("counts"),
        "metrics": {k: _interval(v) for k, v in doc["metrics"].items() if isinstance(v, dict)},
        "bootstrap": doc.get("bootstrap"),
        "tuning_overlap": doc.get("tuning_overlap"),
    }


def card_markdown(card: dict[str, object]) -> str:
    """The card for people: one page of Markdown, section by section."""
    sections = (_md_head, _md_use, _md_classes, _md_io, _md_wsinfer, _md_model, _md_training, _md_metrics,
                _md_check)
    lines = [line for section in sections for line in section(card)]
    lines += ["## Versions", "", ", ".join(f"{k} {v}" for k, v in card["versions"].items()), ""]
    return "\n".join(lines)


def _md_head(card: dict[str, object]) -> list[str]:
    model, bb = card["model"], card["backbone"]
    return [
        f"# Model card: {card['task']['name']} ({card['method']} on {bb['preset']})",
        "",
        f"`{Path(model['file']).name}` ({model['format']}, {model['bytes'] / 1024**2:.1f} MiB, "
        f"sha256 `{model['sha256'][:16]}...`), exported by pathotune {card['pathotune_version']} on "
        f"{card['created']} from `{Path(card['source_prompts']['path']).name}` "
        f"(sha256 `{card['source_prompts']['sha256'][:16]}...`).",
        "",
        *([f"**{card['limitations'][0]}**", ""] if bb.get("random_weights") else []),
    ]


def _md_use(card: dict[str, object]) -> list[str]:
    return ["## Intended use", "", card["intended_use"], "", "## Limitations", "",
            *[f"- {item}" for item in card["limitations"]], ""]


def _md_classes(card: dict[str, object]) -> list[str]:
    return ["## Classes", "", "| index | class | description |", "|---|---|---|",
            *[f"| {c['index']} | {c['name']} | {c['description']} |" for c in card["classes"]], ""]


def _md_io(card: dict[str, object]) -> list[str]:
    inp, out, tile, pre = card["input"], card["output"], card["tile"], card["preprocessing"]
    u8, f32 = inp["conventions"]
    return [
        "## Input and output",
        "",
        f"- Input: {inp['channels']} tiles, shape {_shape(inp['shape'])} ({inp['layout']}), the batch axis dynamic, "
        f"in either convention, with the same probabilities: **{u8['dtype']} RGB {u8['range'][0]}-{u8['range'][1]}** "
        f"(input `{u8['input']}`) or **{f32['dtype']} RGB {f32['range'][0]}-{f32['range'][1]}** (input "
        f"`{f32['input']}`; every value within [{f32['accepted'][0]}, {f32['accepted'][1]}], no NaN).",
        f"- Refused with an error that says what is expected: {inp['refused']}.",
        f"- Call: `{inp['call']}`.",
        f"- Tiles: cut at {tile.get('mpp')} µm/px, {tile.get('size')} px; the caller does: {pre['caller_does']}. "
        "Do not normalise: scaling and normalisation are inside the model.",
        f"- Inside the model: {'; '.join(pre['steps'])}.",
        f"- Output `{out['name']}`: {out['dtype']}, shape {_shape(out['shape'])}, {out['meaning']}.",
        "",
    ]


def _md_wsinfer(card: dict[str, object]) -> list[str]:
    ws = card.get("wsinfer")
    if not ws:
        return []
    transform = ws["config"]["transform"]
    steps = ", ".join(t["name"] + (f"({t['arguments']})" if t.get("arguments") else "") for t in transform)
    lines = ["## WSInfer and QuPath", "",
             f"- `config.json`: WSInfer model config spec {ws['config']['spec_version']}, "
             f"{ws['config']['patch_size_pixels']} px at {ws['config']['spacing_um_px']} µm/px, transforms {steps}.",
             f"- Pixels: {ws['pixels']}", f"- QuPath: {ws['qupath']}"]
    check = ws.get("check")
    if check:
        lines.append(f"- Checked with WSInfer {check.get('wsinfer_version')} on `{Path(check['slide']).name}`: "
                     f"the top class agrees with `pathotune predict` on {check['top_class_agreement']:.1%} of "
                     f"{check['shared_tiles']} shared tiles, max |dp| {check['max_abs_dp']:.2e} "
                     f"(needs {check['min_agreement']:.0%} and {check['max_allowed_dp']}).")
    return lines + [""]


def _md_model(card: dict[str, object]) -> list[str]:
    bb = card["backbone"]
    lines = [
        "## Model",
        "",
        f"- Backbone: preset `{bb['preset']}` ({bb['family']}, `{bb['model']}`), weights `{bb['weights']}`, "
        f"fingerprint `{bb['fingerprint']}`, licence {bb['licence']}; frozen.",
    ]
    if card["instance_encoder"]:
        ie = card["instance_encoder"]
        lines.append(f"- Instance encoder: preset `{ie['preset']}`, fingerprint `{ie['fingerprint']}`; frozen.")
    share = (f" ({card['trainable_parameters'] / bb['parameters']:.2%} of the backbone's {bb['parameters']:,})"
             if bb.get("parameters") else "")
    return lines + [
        f"- Method: `{card['method']}`; {card['trainable_parameters']:,} trainable parameters{share}.",
        f"- Text encoder for the textual prompts: `{card['text_encoder']}` "
        "(its embeddings are stored; none runs at inference).",
        "",
    ]


def _md_training(card: dict[str, object]) -> list[str]:
    training = card["training"]
    counts = training["class_counts"]
    lines = ["## Training data", ""]
    if counts:
        splits = list(counts)
        lines += ["| class | " + " | ".join(splits) + " |", "|---|" + "---|" * len(splits)]
        lines += [f"| {c['name']} | " + " | ".join(str(counts[s].get(c["name"], 0)) for s in splits) + " |"
                  for c in card["classes"]]
        lines.append("")
    return lines + [
        f"Seed {training['seed']}, {training['epochs_run']} epochs (best {training['best_epoch']}), "
        f"data `{training['data']}`.",
        "",
    ]


def _md_metrics(card: dict[str, object]) -> list[str]:
    lines: list[str] = []
    for title, section in (("Validation metrics", card["validation"]), ("Evaluation metrics", card["evaluation"])):
        lines += [f"## {title}", ""]
        if not section:
            hint = ": run `pathotune eval PROMPTS --data DIR`, then export again." if title.startswith("Eval") else "."
            lines += [f"None recorded{hint}", ""]
            continue
        lines += [f"From `{section['source']}`" + (f", {section['n']} items" if section.get("n") else "")
                  + (f" of `{section['data']}`" if section.get("data") else "") + ".", ""]
        if "tuning_overlap" in section:
            lines += [_overlap_line(section["tuning_overlap"]), ""]
        lines += ["| metric | value | 95% CI |", "|---|---|---|"]
        for name, m in section["metrics"].items():
            ci = "n/a" if m["ci_low"] is None else f"{_f(m['ci_low'])} - {_f(m['ci_high'])}"
            lines.append(f"| {name} | {_f(m['value'])} | {ci} |")
        lines.append("")
    return lines


def _overlap_line(overlap: object) -> str:
    """Whether the evaluation data was used in tuning, as the eval recorded it."""
    if not isinstance(overlap, dict):
        return "Whether this data was used in tuning: unknown (no data manifest beside the prompt file)."
    used = int(overlap.get("train", 0)) + int(overlap.get("val", 0))
    if not used:
        return f"None of these {overlap.get('items')} items was used in tuning (compared by content)."
    return (f"**{used} of these {overlap.get('items')} items were used in tuning** ({overlap.get('train', 0)} in "
            f"training, {overlap.get('val', 0)} in validation): these metrics overstate how the model does on new "
            "data.")


def _md_check(card: dict[str, object]) -> list[str]:
    check, model = card["check"], card["model"]
    if not check:
        return ["## Export check", "", "Not run (--no-check).", ""]
    return ["## Export check", "",
            f"{model['runtime']} against PyTorch on {check['tiles']} tiles ({check['synthetic_tiles']} synthetic, "
            f"{check['real_tiles']} real), given as uint8 and as float32: largest probability difference "
            f"{check['max_abs_diff']:.2e} (allowed {check['tolerance']:.0e}). Refused, as it must: "
            f"{', '.join(check.get('refuses', []))}.", ""]


def _interval(m: dict[str, object]) -> dict[str, Any]:
    return {"value": m.get("value"), "ci_low": m.get("ci_low"), "ci_high": m.get("ci_high")}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        raise BadInput(
            f"{path} does not parse as JSON", "re-run `pathotune eval`, or pass another --metrics"
        ) from None


def _close(a: object, b: object) -> bool:
    try:
        return abs(float(a) - float(b)) <= 1e-9
    except (TypeError, ValueError):
        return False


def _f(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _shape(shape: list[object]) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"
