"""``pathotune report``: one self-contained HTML page for a predict or eval folder, from its records alone."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pathotune_cli.cli.options import JsonOpt
from pathotune_cli.cli.render import emit_json, info, user_errors


@user_errors
def report(
    folder: Annotated[Path, typer.Argument(help="The --out folder of `pathotune predict` or `pathotune eval`.")],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Where the page goes (default: FOLDER/report.html).",
                                  show_default=False),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Write one offline HTML page (report.html) of a predict or eval run, for a pathologist to open."""
    from pathotune_cli.runs.report import report_run

    result = report_run(folder, out)
    if json_out:
        emit_json(result.to_dict())
        return
    what = f"{result.slides} slide{'' if result.slides == 1 else 's'}" if result.kind == "predict" else "eval metrics"
    info(f"wrote {result.path} ({what}, {result.bytes / 1e6:.1f} MB, {result.seconds} s): open it in any browser")
