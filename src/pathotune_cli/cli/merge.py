"""``pathotune merge OUT``: rebuild a folder's summary from its per-slide records, and say where its slides stand."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pathotune_cli.cli.options import JsonOpt
from pathotune_cli.cli.render import emit_json, info, table, user_errors, warn


@user_errors
def merge(
    out: Annotated[Path, typer.Argument(help="The --out folder of tile, predict or features (shards and all).")],
    json_out: JsonOpt = False,
) -> None:
    """Rebuild summary.csv / manifest.csv from the per-slide records; count done, failed, in progress, pending."""
    from pathotune_cli.runs.per_slide.merge import merge_run

    result = merge_run(out)
    if json_out:
        emit_json(result.to_dict())
        return
    table(f"slides in {result.out}", ["command", "summary", "done", "failed", "in progress", "pending"],
          [(c.command, c.summary.name, c.ok, c.failed, len(c.in_progress),
            "unknown" if c.missing is None else len(c.missing)) for c in result.commands])
    for count in result.commands:
        if count.missing:
            info(f"{count.command}: pending (listed by a run, no record yet; --resume does them): "
                 f"{', '.join(count.missing[:10])}"
                 + (f" and {len(count.missing) - 10} more" if len(count.missing) > 10 else ""))
        if count.in_progress:
            info(f"{count.command}: in progress elsewhere: {', '.join(count.in_progress[:10])}")
        if count.stale_locks:
            warn(f"{count.command}: {len(count.stale_locks)} lock(s) of processes that are gone "
                 f"(e.g. {count.stale_locks[0]}); the next run takes them over")
        if count.missing is None:
            info(f"{count.command}: no run record lists the slides, so pending ones cannot be counted")
