"""The page every report shares: head with the inlined style and script, the research-use banner, the model.

Everything is escaped here (``esc``); nothing on the page loads from anywhere else: no fonts, no scripts, no
images outside data URIs, and a Content-Security-Policy that forbids the browser to fetch at all.
"""

from __future__ import annotations

import html
import time
from collections.abc import Iterable, Sequence
from importlib import resources

from pathotune_cli import __version__
from pathotune_cli.runs.report.records import ModelInfo

CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
       "base-uri 'none'; form-action 'none'")
"""The page may load nothing: images are data URIs, style and script are inline."""
_LEFT = ' class="text"'
RESEARCH_USE = ("Research use only. Not a medical device: these outputs are not a diagnosis and must not be used "
                "to make or support one. Validate locally before any use.")


def esc(value: object) -> str:
    """``value`` as text safe inside HTML (and inside attribute values)."""
    return html.escape("" if value is None else str(value), quote=True)


def static(name: str) -> str:
    """A file of ``runs/report/static`` (the page's CSS and JavaScript)."""
    return resources.files("pathotune_cli.runs.report").joinpath("static", name).read_text(encoding="utf-8")


def page(title: str, subtitle: str, model: ModelInfo, body: Iterable[str]) -> str:
    """The whole document: ``body`` parts after the banner and the model section."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{esc(CSP)}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title><style>{static('report.css')}</style></head>",
        "<body><header>",
        f"<h1>{esc(title)}</h1><p class=\"sub\">{esc(subtitle)}</p>",
        f'<div class="banner" role="note" id="research-use">{esc(RESEARCH_USE)}</div>',
        random_weights_warning(model),
        "</header><main>",
        model_section(model),
        *body,
        "</main>",
        f"<footer>Written by pathotune {esc(__version__)} on {esc(time.strftime('%Y-%m-%d %H:%M'))} from the "
        "run's records alone (no model was run). Opens offline; loads nothing from the network.</footer>",
        f"<script>{static('report.js')}</script></body></html>",
    ]
    return "\n".join(p for p in parts if p)


def random_weights_warning(model: ModelInfo) -> str:
    """The red warning when the model ran on random weights (or when the records cannot tell)."""
    if model.random_weights:
        return ('<div class="random" role="alert" id="random-weights">Random weights: the backbone of this model '
                f"({esc(model.backbone)}) has random weights. For tests and demos only; its outputs mean nothing "
                "about tissue.</div>")
    return ""


def model_section(model: ModelInfo) -> str:
    """The model facts: task, backbone and licence, method, prompt file and hash, precision, calibration."""
    random = ("yes" if model.random_weights else "no") if model.random_weights is not None else "unknown"
    trained = model.trained_on
    data = _counts(trained.get("class_counts"))
    facts = [
        ("task", f"{esc(model.task)} ({esc(model.level)}-level)" if model.task else "not recorded"),
        ("classes", esc(", ".join(model.classes)) or "not recorded"),
        ("backbone", esc(model.backbone or "not recorded")),
        ("backbone licence", esc(model.licence or "not recorded")),
        ("random weights", f'<span class="warn">{random}</span>' if model.random_weights else random),
        ("method", esc(model.method or "not recorded")),
        ("tile", esc(model.tile or "not recorded")),
        ("prompt file", f"<code>{esc(model.prompts or 'not recorded')}</code>"),
        ("prompt file sha256", f"<code>{esc(model.prompts_sha256 or 'not recorded')}</code>"),
        ("backbone fingerprint", f"<code>{esc(model.fingerprint or 'not recorded')}</code>"),
        ("precision", esc(model.precision or "not recorded")),
        ("probabilities", esc(model.calibration or "not recorded")),
        ("tuned on", _trained(trained, data)),
        ("facts from", esc(model.source)),
    ]
    rows = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts)
    return f'<section id="model"><h2>Model</h2><dl class="facts">{rows}</dl></section>'


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], *, table_id: str = "", sortable: bool = False,
          text_columns: int = 1, row_attrs: Sequence[str] | None = None) -> str:
    """An HTML table; cells are given already escaped. ``text_columns`` first columns align left."""
    def head(i: int, h: str) -> str:
        label = f"<button type=button>{esc(h)}</button>" if sortable else esc(h)
        return f'<th{_LEFT if i < text_columns else ""} scope="col">{label}</th>'

    body = []
    for n, row in enumerate(rows):
        attrs = f" {row_attrs[n]}" if row_attrs else ""
        cells = "".join(f"<td{_LEFT if i < text_columns else ''}>{c}</td>" for i, c in enumerate(row))
        body.append(f"<tr{attrs}>{cells}</tr>")
    ident = f' id="{esc(table_id)}"' if table_id else ""
    cls = ' class="sortable"' if sortable else ""
    return (f'<div class="scroll"><table{ident}{cls}><thead><tr>{"".join(head(i, h) for i, h in enumerate(headers))}'
            f"</tr></thead><tbody>{''.join(body)}</tbody></table></div>")


def number(value: object, digits: int = 3) -> str:
    """A number cell's text: fixed digits, or the value as it is when it is not a number ("" stays "")."""
    try:
        return f"{float(value):.{digits}f}"  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return esc(value)


def _counts(counts: object) -> str:
    """``{split: {class: n}}`` or ``{class: n}`` as text."""
    if not isinstance(counts, dict):
        return esc(counts or "")
    if all(isinstance(v, dict) for v in counts.values()):
        return "; ".join(f"{esc(split)}: {_counts(inner)}" for split, inner in counts.items())
    return ", ".join(f"{esc(k)} {esc(v)}" for k, v in counts.items())


def _trained(trained: dict[str, object], counts: str) -> str:
    if not trained:
        return "not recorded"
    data = trained.get("data")
    parts = [f"<code>{esc(data)}</code>" if data else "", f"tiles per class: {counts}" if counts else "",
             f"{esc(trained.get('epochs_run'))} epochs" if trained.get("epochs_run") else "",
             f"seed {esc(trained.get('seed'))}" if trained.get("seed") is not None else ""]
    return "; ".join(p for p in parts if p)
