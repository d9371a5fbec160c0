"""The eval report, all from ``metrics.json``.

Metrics with their intervals, the confusion matrix, calibration and its reliability diagram, prediction-set
coverage and per-class results; the model section says which data the model was tuned on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pathotune_cli.runs.report.images import picture_uri
from pathotune_cli.runs.report.page import esc, number, page, table
from pathotune_cli.runs.report.records import RunRecords

CHART_SIZE = 900
"""Long side of an eval chart in the report."""


def eval_page(records: RunRecords) -> str:
    """The whole eval report."""
    m = records.run
    unit = {"slide": "slides"}.get(str(m.get("level")), "tiles")
    subtitle = f"{m.get('n', '?')} {unit} of {m.get('data', '?')}, evaluated into {records.folder}"
    body = [
        _metrics(m), _per_class(m), _confusion(m), _calibration(records.folder, m), _conformal(m), _ood(m),
        _pictures(records.folder),
        '<section id="sites"><h2>Per site</h2><p class="note">The records hold no site of each '
        f"{unit[:-1]}: no per-site table.</p></section>",
    ]
    return page(f"pathotune report: eval, {m.get('task') or records.folder.name}", subtitle, records.model, body)


def interval(entry: dict[str, Any] | None) -> tuple[str, str]:
    """(value, "low - high") of a ``{value, ci_low, ci_high}`` entry."""
    entry = entry or {}
    low, high = entry.get("ci_low"), entry.get("ci_high")
    return number(entry.get("value")), ("n/a" if low is None or high is None else f"{number(low)} - {number(high)}")


def _metrics(m: dict[str, Any]) -> str:
    boot = m.get("bootstrap") or {}
    rows = [[esc(name.replace("_", " ")), *interval(entry)] for name, entry in (m.get("metrics") or {}).items()]
    counts = m.get("counts") or {}
    count_text = ", ".join(f"{esc(k)} {esc(v)}" for k, v in counts.items())
    return ('<section id="metrics"><h2>Metrics</h2>'
            + table(["metric", "value", "95% CI"], rows)
            + f'<p class="note">Intervals: percentile bootstrap, {esc(boot.get("resamples", "?"))} resamples '
            f"(seed {esc(boot.get('seed', '?'))}). Cohen's kappa weights: {esc(m.get('kappa_weights', 'none'))}. "
            + (f"Per class in the data: {count_text}." if count_text else "") + "</p></section>")


def _per_class(m: dict[str, Any]) -> str:
    rows = []
    for name, entry in (m.get("per_class") or {}).items():
        cells = [esc(name), esc(entry.get("support", ""))]
        for key in ("precision", "recall", "f1"):
            value, ci = interval(entry.get(key))
            cells += [value, ci]
        rows.append(cells)
    headers = ["class", "support", "precision", "95% CI", "recall", "95% CI", "F1", "95% CI"]
    return f'<section id="per-class"><h2>Per class</h2>{table(headers, rows)}</section>'


def _confusion(m: dict[str, Any]) -> str:
    classes = m.get("classes") or []
    matrix = m.get("confusion_matrix") or []
    rows = []
    for name, counts in zip(classes, matrix, strict=False):
        total = sum(counts) or 1
        cells = [esc(name)]
        for count in counts:
            share = count / total
            ink = "#fff" if share > 0.55 else "#000"
            cells.append(f'<span title="{100 * share:.1f}% of true {esc(name)}" style="display:block;'
                         f'background:rgb(0 114 178 / {share:.2f});color:{ink}">{count}</span>')
        rows.append(cells)
    headers = ["true \\ predicted", *classes]
    return ('<section id="confusion-matrix"><h2>Confusion matrix</h2>'
            + table(headers, rows).replace("<table>", '<table class="cm">')
            + '<p class="note">Counts; rows are the true class, columns the predicted one. Shading: share of the '
            "row (white 0%, dark blue 100%).</p></section>")


def _calibration(folder: Path, m: dict[str, Any]) -> str:
    cal = m.get("calibration") or {}
    rows = []
    for key, label in (("raw", "raw softmax"), ("calibrated", f"temperature {number(cal.get('temperature'))}")):
        part = cal.get(key)
        if part:
            for metric in ("ece", "brier"):
                rows.append([esc(label), esc(metric.upper() if metric == "ece" else "Brier"), *interval(part[metric])])
    used = cal.get("probabilities")
    said = ("The metrics above use the calibrated probabilities (temperature scaling fitted on the validation split)."
            if used == "calibrated" else
            "The metrics above use the raw softmax: these probabilities are not calibrated." if used else "")
    picture = ""
    png = folder / "reliability_diagram.png"
    if png.is_file():
        uri, _ = picture_uri(png, CHART_SIZE, photo=False)
        picture = (f'<figure><img class="picture" id="reliability-diagram" alt="reliability diagram" src="{uri}">'
                   "<figcaption>Reliability diagram: mean predicted probability of the top class against the share "
                   "that was right, per bin (both 0-1); the diagonal is perfect calibration.</figcaption></figure>")
    note = f'<p class="note">{esc(m["note"])}</p>' if m.get("note") else ""
    return ('<section id="calibration"><h2>Calibration</h2>'
            + (table(["probabilities", "measure", "value", "95% CI"], rows, text_columns=2) if rows else "")
            + f'<p class="note">{esc(said)} ECE over {esc((cal.get("raw") or {}).get("bins", "?"))} bins.</p>'
            + note + picture + "</section>")


def _conformal(m: dict[str, Any]) -> str:
    conformal = m.get("conformal")
    if not conformal:
        return ('<section id="coverage"><h2>Prediction-set coverage</h2><p class="note">No prediction sets: the '
                "prompt file holds no conformal quantiles.</p></section>")
    rows = []
    for q in conformal.get("levels") or []:
        low, high = q.get("coverage_ci_low"), q.get("coverage_ci_high")
        rows.append([number(q.get("alpha"), 2), number(q.get("target_coverage"), 2),
                     number(q.get("coverage")) if q.get("coverage") is not None else esc(q.get("reason", "n/a")),
                     "n/a" if low is None or high is None else f"{number(low)} - {number(high)}",
                     number(q.get("mean_set_size"), 2)])
    return ('<section id="coverage"><h2>Prediction-set coverage</h2>'
            + table(["alpha", "target coverage", "coverage", "95% CI (exact)", "mean set size"], rows, text_columns=0)
            + f'<p class="note">Split-conformal sets ({esc(conformal.get("score", ""))} score) from '
            f"{esc(conformal.get('calibration_images', '?'))} validation images; coverage is the share of "
            "evaluated images whose true class is in the set.</p></section>")


def _ood(m: dict[str, Any]) -> str:
    ood = m.get("ood")
    if not ood:
        return ""
    return ('<section id="ood"><h2>Out of distribution</h2><p>'
            f"{esc(ood.get('flagged'))} flagged ({number(ood.get('flagged_share'))} of the evaluated images); "
            f"threshold {number(ood.get('threshold'))} on the {esc(ood.get('score', ''))} score; on images like "
            f"the validation images, at most {number(ood.get('false_flag_bound'))} are flagged falsely.</p></section>")


def _pictures(folder: Path) -> str:
    figures = []
    for name, caption in (("confusion_matrix.png", "The confusion matrix as eval drew it."),
                          ("roc_curve.png", "ROC curves as eval drew them.")):
        if (folder / name).is_file():
            uri, _ = picture_uri(folder / name, CHART_SIZE, photo=False)
            figures.append(f'<figure><img class="picture" alt="{esc(name)}" src="{uri}">'
                           f"<figcaption>{esc(caption)}</figcaption></figure>")
    if not figures:
        return ""
    return f'<section id="charts"><h2>Charts</h2><div class="pair">{"".join(figures)}</div></section>'
