"""``pathotune doctor``: what is installed, which accelerator and precision, which backbone weights resolve."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from pathotune_cli.cli.options import JsonOpt
from pathotune_cli.cli.render import emit_json, error_line, key_values, table, user_errors

if TYPE_CHECKING:
    from pathotune_cli.runs.doctor import Accelerator, DoctorReport


@user_errors
def doctor(
    backbone: Annotated[
        list[str] | None,
        typer.Option(
            "--backbone", help="A backbone you mean to use (repeatable); exit 1 if anything it needs is missing."
        ),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Check this machine: versions, OpenSlide, accelerator and precision, Hugging Face cache, backbone weights."""
    from pathotune_cli.runs.doctor import doctor_report

    report = doctor_report(list(backbone or []))
    if json_out:
        emit_json(report.to_dict())
    else:
        _render(report)
    if report.problems:
        if not json_out:
            for line in report.problems:
                error_line(line)
        raise typer.Exit(1)


def _render(report: DoctorReport) -> None:
    hf, minilm, lab = report.huggingface, report.text_encoder_minilm, report.lab_defaults
    key_values("pathotune doctor", {
        **{name: version or "not installed" for name, version in report.versions.items()},
        "OpenSlide library": report.openslide_library or "not installed",
        **_accelerator(report.accelerator),
        "HF offline": "on" if hf.offline else "off (a cache miss may try the network)",
        "HF cache": f"{hf.cache}" + ("" if hf.cache_exists else " (does not exist yet)"),
        "free disk at HF cache": f"{hf.free_gib} GiB" if hf.free_gib is not None else "unknown",
        "weight map": report.weight_map.path + ("" if report.weight_map.exists else " (none yet)"),
        "text encoder minilm": minilm.source or "missing (pip install 'pathotune-cli[text]')",
        "lab defaults": lab.file,
        **{f"  {key}": value or "(not set)" for key, value in lab.values.items()},
    })
    table("slide formats", ["format", "names", "read by", "this install"], [
        (f.format, f.suffixes, f.reader, "reads it" if f.reads else f.add) for f in report.slide_formats
    ])
    requested = set(report.requested)
    table("backbone weights", ["preset", "weights", "gated"], [
        (("* " if w.preset in requested else "") + w.preset,
         f"found ({w.found_in})" if w.status == "found" else w.status,
         "yes" if w.gated else "no")
        for w in report.weights
    ])
    kernels = report.kernels
    rows = [(k.machine, k.backbone, f"{k.device} {k.precision}", k.pass_,
             f"{k.attention} attention, {k.weights} weights") for k in kernels.choices]
    table(f"kernels chosen by measurement ({kernels.cache})", ["machine", "backbone", "placement", "pass",
          "choice"], rows or [("(none yet: measured on first use)", "", "", "", "")])


def _accelerator(acc: Accelerator | None) -> dict[str, str]:
    if acc is None:
        return {}
    return {
        "accelerator": acc.device + (f" ({acc.gpu})" if acc.gpu else f" ({acc.cpu_threads} threads)"),
        "precision (auto)": f"{acc.precision}: {acc.reason}",
    }
