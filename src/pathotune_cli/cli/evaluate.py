"""``pathotune eval``: metrics with bootstrap confidence intervals for a prompt file on labelled tiles."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from pathotune_cli.cli.options import (
    DefaultMppOpt,
    DeviceOpt,
    JsonOpt,
    KernelsOpt,
    PrecisionOpt,
    PromptsArg,
    PromptsOpt,
    ReportOpt,
    UncalibratedOpt,
    WeightsOpt,
    choose_prompts,
)
from pathotune_cli.cli.progress import ProgressDisplay
from pathotune_cli.cli.render import emit_json, info, table, user_errors
from pathotune_cli.errors import BadInput

if TYPE_CHECKING:
    from pathotune_cli.runs.results import Metric
    from pathotune_cli.runs.trust.view import TrustView


@user_errors
def evaluate(
    prompts: PromptsArg = None,
    data: Annotated[
        Path | None, typer.Option("--data", help="ImageFolder tree, CSV with path,label, or labels.csv.")
    ] = None,
    prompts_opt: PromptsOpt = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Output folder (default: beside the prompts, eval/).")
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Images per batch.")] = 64,
    bootstrap: Annotated[int, typer.Option("--bootstrap", min=0, help="Bootstrap resamples for the 95% CIs.")] = 1000,
    seed: Annotated[int, typer.Option("--seed", help="Bootstrap seed.")] = 0,
    precision: PrecisionOpt = "auto",
    device: DeviceOpt = "auto",
    weights: WeightsOpt = None,
    kernels: KernelsOpt = "auto",
    uncalibrated: UncalibratedOpt = False,
    default_mpp: DefaultMppOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an evaluation of another prompt file or other "
                                        "data in the output folder.")] = False,
    write_report: ReportOpt = True,
    robustness: Annotated[bool, typer.Option(
        "--robustness", help="Score again under stain, JPEG, blur and resolution shifts (and per site/centre "
        "column): a table in metrics.json and robustness.png.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Evaluate a prompt file on labelled tiles: accuracy, balanced accuracy, F1, AUROC, kappa, with 95% CIs."""
    from pathotune_cli.runs.evaluate import EvalOptions, eval_run
    from pathotune_cli.runs.trust.view import TrustView

    if data is None:
        raise BadInput("no data to evaluate on", "pass --data DIR|CSV (an ImageFolder tree or a CSV with path,label)")
    prompts, _ = choose_prompts(prompts_opt, [prompts] if prompts else [])
    opts = EvalOptions(prompts=prompts, data=data, out=out, batch_size=batch_size, seed=seed, bootstrap=bootstrap,
                       precision=precision, device=device, weights=weights, uncalibrated=uncalibrated,
                       kernels=kernels, default_mpp=default_mpp, force=force, report=write_report,
                       robustness=robustness)
    with ProgressDisplay() as progress:
        result = eval_run(opts, report=progress)
    if json_out:
        emit_json(result.to_dict())
        return
    table(
        f"{result.task}: {result.n} {result.unit} "
        f"({result.method} on {result.backbone})",
        ["metric", "value", "95% CI"],
        [(row.name, _f(row.metric.value), _ci(row.metric)) for row in result.metric_rows()],
    )
    table(
        "per class",
        ["class", "support", "precision", "recall", "f1"],
        [(c.name, c.support, _f(c.precision.value), _f(c.recall.value), _f(c.f1.value)) for c in result.class_rows()],
    )
    _render_trust(TrustView.of(result.trust))
    if result.robustness is not None:
        _render_robustness(result.robustness)
    page = ", report.html (open it in any browser)" if write_report and (result.out / "report.html").is_file() else ""
    robust = ", robustness.png" if result.robustness is not None else ""
    info(f"wrote {result.out}/metrics.json, predictions.csv, confusion_matrix.png, reliability_diagram.png"
         f"{robust}{page}")

def _render_robustness(doc: dict) -> None:
    table("robustness (accuracy under controlled shifts, mildest first)",
          ["shift", "accuracy", "95% CI", "drop", "inside unshifted CI", "changed"],
          [(r["shift"], _f(r["accuracy"]["value"]), f"{_f(r['accuracy']['ci_low'])} - {_f(r['accuracy']['ci_high'])}",
            _f(r["accuracy_drop"]), "yes" if r["within_unshifted_ci"] else "no", f"{r['changed_predictions']:.0%}")
           for r in doc["shifts"]])
    if doc.get("sites"):
        sites = doc["sites"]
        table("per site", ["site", "tiles", "accuracy"],
              [(s, v["n"], _f(v["accuracy"]["value"])) for s, v in sites["per_site"].items()])
        info(f"accuracy spread between sites: {_f(sites['accuracy_spread'])} (worst: {sites['worst_site']})")
    info(doc["meaning"])


def _render_trust(trust: TrustView) -> None:
    cal = trust.calibration
    rows = [(label, measure, _f(m.value), _ci(m)) for label, measure, m in cal.rows()] if cal is not None else []
    if cal is not None and rows:
        table(f"calibration (ECE over {cal.bins} bins; metrics above use {cal.probabilities} "
              "probabilities)", ["probabilities", "measure", "value", "95% CI"], rows)
    conformal = trust.conformal
    if conformal:
        table(f"conformal prediction sets ({conformal.score} score, {conformal.calibration_images} "
              "validation tiles)", ["alpha", "target", "coverage", "95% CI", "mean set size"],
              [(f"{q.alpha:g}", _f(q.target_coverage), _f(q.coverage) if q.coverage is not None
                else q.reason, f"{_f(q.coverage_ci_low)} - {_f(q.coverage_ci_high)}",
                _f(q.mean_set_size)) for q in conformal.levels])
    ood = trust.ood
    if ood:
        info(f"OOD: {ood.flagged} tiles flagged ({_f(ood.flagged_share)}; threshold {_f(ood.threshold)}, "
             f"false flags at most {_f(ood.false_flag_bound)} on tiles like the validation tiles)")


def _ci(metric: Metric) -> str:
    return f"{_f(metric.ci_low)} - {_f(metric.ci_high)}"


def _f(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
