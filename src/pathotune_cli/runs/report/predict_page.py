"""The predict report: a sortable, filterable table of slides, then each slide with its map and top tiles."""

from __future__ import annotations

from collections.abc import Callable

from pathotune_cli.runs.report.images import Overlay
from pathotune_cli.runs.report.page import esc, number, page, table
from pathotune_cli.runs.report.records import RunRecords, SlideRecord
from pathotune_cli.runs.report.slide_view import SlideView

TRUST_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("ood_fraction", "OOD share", "share of tiles unlike the training tiles (0-1)"),
    ("mean_set_size", "mean set size", "mean number of classes in a tile's prediction set"),
    ("tiles_damaged", "damaged tiles", "tiles the reader could not decode"),
    ("stain_distance", "stain distance", "distance of the slide's stain from the training stain"),
    ("modality_ok", "modality ok", "whether the slide looks like the modality the model was tuned on"),
)
"""Columns shown where ``summary.csv`` has them (other commands and versions add some)."""


def predict_page(records: RunRecords, views: dict[str, SlideView], classes: list[str]) -> str:
    """The whole predict report."""
    slides = records.slides
    failed = sum(s.row.get("status") == "failed" for s in slides)
    subtitle = (f"{len(slides)} slide{'' if len(slides) == 1 else 's'} from {records.folder}"
                + (f"; {failed} failed" if failed else "")
                + (f"; tile images in {records.images.name} (not shown)" if records.images else ""))
    body = [_slide_table(records, classes), '<section id="slides"><h2>Slides</h2>',
            *(_slide_card(s, views.get(s.stem), classes) for s in slides), "</section>"]
    return page(f"pathotune report: predict, {records.model.task or records.folder.name}", subtitle,
                records.model, body)


def top_class(row: dict[str, str], classes: list[str]) -> str:
    """The slide's label (slide-level), else its most frequent tile class ("" when it has no tiles)."""
    if row.get("label"):
        return row["label"]
    fractions = [(_float(row.get(f"fraction_{c}")), c) for c in classes]
    fractions = [(f, c) for f, c in fractions if f is not None]
    return max(fractions)[1] if fractions and max(fractions)[0] > 0 else ""


def _slide_table(records: RunRecords, classes: list[str]) -> str:
    have = {c for c in records.columns if any(s.row.get(c) not in (None, "") for s in records.slides)}
    what = "label" if "label" in have else "top class"  # a slide-level model labels the slide
    columns: list[tuple[str, Callable[[dict[str, str]], str]]] = [
        ("status", lambda r: esc(r.get("status", ""))),
        (what, lambda r: esc(top_class(r, classes))),
        ("tiles", lambda r: esc(r.get("tiles", ""))),
        ("tissue mm²", lambda r: number(r.get("tissue_area_mm2"), 2)),
    ]
    for c in classes:
        if f"prob_{c}" in have:
            columns.append((f"P({c})", lambda r, c=c: number(r.get(f"prob_{c}"))))
        if f"fraction_{c}" in have:
            columns.append((f"{c} %", lambda r, c=c: _percent(r.get(f"fraction_{c}"))))
        if f"area_mm2_{c}" in have:
            columns.append((f"{c} mm²", lambda r, c=c: number(r.get(f"area_mm2_{c}"), 2)))
    for key, label, _ in TRUST_COLUMNS:
        if key in have:
            columns.append((label, lambda r, key=key: number(r.get(key)) if key != "modality_ok" else esc(r.get(key))))
    if "prediction_set" in have:
        columns.append(("prediction set", lambda r: esc(r.get("prediction_set", ""))))
    columns.append(("error", lambda r: esc(r.get("error", ""))))
    rows = [[f'<a href="#slide-{esc(s.stem)}">{esc(s.row.get("slide", s.stem))}</a>',
             *(render(s.row) for _, render in columns)] for s in records.slides]
    attrs = [f'data-top="{esc(top_class(s.row, classes))}"' + (' class="failed"' if s.row.get("status") == "failed"
                                                                 else "") for s in records.slides]
    options = "".join(f'<option value="{esc(c)}">{esc(c)}</option>' for c in classes)
    legend = "".join(f"<li><b>{esc(label)}</b>: {esc(text)}</li>" for key, label, text in TRUST_COLUMNS if key in have)
    return (
        '<section id="table"><h2>Slides at a glance</h2>'
        '<div class="controls filter" data-table="slide-table">'
        '<label>Filter <input type="search" placeholder="slide name, class, status..."></label>'
        f'<label>{what} <select><option value="">any</option>{options}'
        '</select></label><span class="count" aria-live="polite"></span></div>'
        + table(["slide", *(label for label, _ in columns)], rows, table_id="slide-table", sortable=True,
                text_columns=3, row_attrs=attrs)
        + '<p class="note">Click a column to sort. % is the share of the slide\'s tiles predicted as that class; '
        "mm² is their area at level 0. Areas and shares count tiles, not cells.</p>"
        + (f"<ul class=\"note\">{legend}</ul>" if legend else "") + "</section>"
    )


def _slide_card(slide: SlideRecord, view: SlideView | None, classes: list[str]) -> str:
    row = slide.row
    head = (f'<section class="slide" id="slide-{esc(slide.stem)}"><h3>{esc(row.get("slide", slide.stem))}</h3>'
            f'<p class="sub">{esc(row.get("status", ""))}; {esc(row.get("tiles", "0"))} tiles'
            + (f"; top class {esc(top_class(row, classes))}" if top_class(row, classes) else "")
            + (f'; <span class="warn">{esc(row.get("error"))}</span>' if row.get("error") else "") + "</p>")
    if view is None:
        return head + "</section>"
    parts = [head, '<div class="pair">']
    if view.thumbnail:
        parts.append(_viewer(view))
    if view.map_picture:
        parts.append(f'<figure><img class="picture map" alt="map of {esc(slide.stem)} as predict drew it" '
                     f'src="{view.map_picture}"><figcaption>The map as <code>predict</code> drew it '
                     "(its legend on the right).</figcaption></figure>")
    if view.top_tiles:
        parts.append(f'<figure><img class="picture top" alt="most attended tiles of {esc(slide.stem)}" '
                     f'src="{view.top_tiles}"><figcaption>The most attended tiles, as <code>predict</code> '
                     "picked them.</figcaption></figure>")
    parts.append("</div>")
    if view.note:
        parts.append(f'<p class="note">{esc(view.note)}</p>')
    if view.explained:
        parts.append(_explained(view))
    return "".join(parts) + "</section>"


def _viewer(view: SlideView) -> str:
    stem = esc(view.stem)
    first = view.overlays[0].key if view.overlays else "none"
    choices = [("none", "slide only")] + [(o.key, o.label) for o in view.overlays]
    radios = "".join(
        f'<label><input type="radio" class="map-choice" name="map-{stem}" value="{esc(k)}"'
        f'{" checked" if k == first else ""}> {esc(label)}</label>' for k, label in choices)
    layers = "".join(f'<img class="overlay" data-key="{esc(o.key)}" alt="{esc(o.label)} map" src="{o.uri}" '
                     f'style="{o.place.style()}"{"" if o.key == first else " hidden"}>' for o in view.overlays)
    legends = "".join(_legend(o, o.key != first) for o in view.overlays)
    return (
        '<figure class="view"><div class="controls">' + radios
        + '<label>opacity <input type="range" class="opacity" min="0" max="100" value="60"></label>'
        '<span class="zoom"><button type="button" class="in" aria-label="zoom in">+</button> '
        '<button type="button" class="out" aria-label="zoom out">&minus;</button> '
        '<button type="button" class="reset">fit</button></span></div>'
        f'<div class="viewer" tabindex="0" aria-label="slide {stem}: wheel or + and - to zoom, drag to pan">'
        f'<div class="stage"><img class="thumb" alt="thumbnail of {stem}" src="{view.thumbnail}" '
        f'width="{view.size[0]}" height="{view.size[1]}">{layers}</div></div>{legends}'
        "<figcaption>The slide's thumbnail with a map over it; zoom magnifies the thumbnail (the report holds no "
        "more detail than it).</figcaption></figure>"
    )


def _legend(overlay: Overlay, hidden: bool) -> str:
    entries = "".join(f'<span><span class="swatch" style="background:{c}"></span>{esc(t)}</span>'
                      for t, c in overlay.legend)
    return (f'<div class="legend" data-key="{esc(overlay.key)}"{" hidden" if hidden else ""}>'
            f"<b>{esc(overlay.unit)}:</b> {entries}</div>")


def _explained(view: SlideView) -> str:
    figures = "".join(
        f'<figure><img alt="explained tile {esc(t.name)}" src="{t.uri}"><figcaption>{esc(t.cls)}, '
        f"p = {number(t.probability)}</figcaption></figure>" for t in view.explained)
    return f'<h3>Top tiles per class, explained</h3><div class="tiles">{figures}</div>'


def _percent(value: str | None) -> str:
    number_ = _float(value)
    return "" if number_ is None else f"{100 * number_:.1f}"


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None
