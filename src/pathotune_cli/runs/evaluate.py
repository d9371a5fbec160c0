"""``pathotune eval`` as a plain function: a prompt file against labelled tiles, with honest intervals."""

from __future__ import annotations

import json
from pathlib import Path

from pathotune_cli.errors import BadInput
from pathotune_cli.events import Reporter, ignore, note
from pathotune_cli.runs.results import EvalOptions, EvalResult


def eval_run(opts: EvalOptions, report: Reporter = ignore) -> EvalResult:
    """Evaluate ``opts.prompts`` on ``opts.data``; writes metrics JSON, predictions CSV, confusion and reliability PNGs.

    The level is read once, from the prompt file's header: tiles (``runs.tile_level.evaluate``) or slides
    (``runs.slide_level.evaluate``).

    Raises:
        BadInput: a damaged prompt file, another backbone's weights, bad data, or an output folder that cannot
            be made (found before any inference).
    """
    from pathotune_cli.engine.promptfile import read_prompt_file
    from pathotune_cli.files import prepare_output_folder, remove_stale_temporaries
    from pathotune_cli.runs.slide_level.evaluate import eval_slides
    from pathotune_cli.runs.tile_level.evaluate import eval_tiles

    level = read_prompt_file(opts.prompts).header.level
    out = prepare_output_folder(opts.out_folder, "--out")  # before any inference: a bad --out fails at once
    remove_stale_temporaries(out)
    never_silently_replace(out, opts, report)
    levels = {"tile": eval_tiles, "slide": eval_slides}
    result = levels[level](opts, report)
    if opts.report:  # one offline page from what the evaluation wrote (runs.report)
        from pathotune_cli.runs.report import write_report_quietly

        write_report_quietly(result.out, report)
    return result


def never_silently_replace(out: Path, opts: EvalOptions, report: Reporter = ignore) -> None:
    """An evaluation folder holds one evaluation; another prompt file's or other data's goes only with ``--force``.

    The same evaluation run again replaces the old one, and says so.

    Raises:
        BadInput: ``out`` holds the evaluation of another prompt file or other data, and no ``--force``.
    """
    try:
        before = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if not isinstance(before, dict):
        return
    same = (_same_path(before.get("prompts"), opts.prompts) and _same_path(before.get("data"), opts.data))
    if same or opts.force:
        note(report, f"replacing the earlier evaluation in {out}" + ("" if same else " (--force)"))
        return
    raise BadInput(
        f"{out} holds the evaluation of {Path(str(before.get('prompts'))).name} on {before.get('data')}; "
        f"this one is of {Path(opts.prompts).name} on {opts.data}",
        "pass another --out (each evaluation in its own folder), or --force to replace it",
    )


def _same_path(recorded: object, given: Path) -> bool:
    return isinstance(recorded, str) and Path(recorded).resolve() == Path(given).resolve()
