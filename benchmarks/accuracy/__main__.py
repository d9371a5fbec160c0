"""``python -m benchmarks.accuracy``: the accuracy grid (backbones x methods x shots x seeds, with ablations),
every cell through the same code as ``pathotune tune`` and ``pathotune eval``; writes ``accuracy.csv``,
``ACCURACY.md`` and a few-shot curve per backbone.

    python -m benchmarks.accuracy --task crc --train NCT-CRC-HE-100K --test CRC-VAL-HE-7K \\
        --backbones uni,vit-b16-in21k --methods linear,vpt,pathotune,full --shots 1,2,4,8,16,all --seeds 5 --out A
    python -m benchmarks.accuracy --protocol pathotune-crc --train NCT-CRC-HE-100K --test CRC-VAL-HE-7K --out A
    python -m benchmarks.accuracy ... --ablate tvp,ttp,ivp --tokens 4,8,16,50      # the ablation arms, token counts

Rerun the same command to resume: finished cells are kept, killed or changed ones are redone. Exit status: 0
when every cell finished, 1 when one failed (the others still run), 2 on bad usage or missing weights or data.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.accuracy import cells as cellrun
from benchmarks.accuracy.grid import DEFAULT_METHODS, METHODS, Cell, GridSpec, Tally, expand, parse_counts, parse_list
from benchmarks.accuracy.protocol import Protocol, get_protocol, require_data, require_weights
from pathotune_cli.errors import BadInput, PathotuneError


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = _parser().parse_args(argv)
    started, cpu_started = time.perf_counter(), _cpu_seconds()
    try:
        spec, protocol = _spec(args)
        context, names = _preflight(spec, protocol)
        context["command"] = "python -m benchmarks.accuracy " + " ".join(sys.argv[1:] if argv is None else argv)
        grid = expand(spec, names)
        if args.list:
            return _list(spec, grid)
        tally = Tally() if args.report_only else _run_grid(spec, grid)
        context.update(failed=[(f"{c.backbone_name}/{c.variant}/shots-{c.shots_label}/seed-{c.seed}", e)
                               for c, e in tally.failed],
                       wall_s=time.perf_counter() - started, cpu_s=_cpu_seconds() - cpu_started)
        document = _write_report(spec, grid, context)
    except PathotuneError as exc:
        print(f"accuracy: {exc.one_line()}", file=sys.stderr)
        return exc.exit_code
    print(document)
    _log(f"{len(tally.ran)} ran, {len(tally.kept)} kept, {len(tally.failed)} failed; "
         f"wall {context['wall_s']:.0f} s, CPU {context['cpu_s']:.0f} s; {spec.out / 'ACCURACY.md'}")
    return 1 if tally.failed else 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.accuracy", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--protocol", help="a paper's grid as defaults (pathotune-crc, thunder-crc, thunder-mhist); "
                   "options given here win")
    p.add_argument("--task", help="task preset name or YAML (crc, kather2016, ...)")
    p.add_argument("--data-root", type=Path, help="with a thunder-* protocol: the dataset as downloaded, in its "
                   "published layout (read into OUT/data/train.csv and test.csv)")
    p.add_argument("--train", type=Path, help="training tiles: an ImageFolder tree or a CSV path,label[,split]")
    p.add_argument("--test", type=Path, help="test tiles, the same forms; every run is scored on them")
    p.add_argument("--val", type=Path, help="validation tiles for early stopping (default: a seeded 20%% of --train)")
    p.add_argument("--backbones", help="comma-separated backbone presets or YAML paths")
    p.add_argument("--methods", help=f"comma-separated, of {','.join(METHODS)} (default: linear,vpt,pathotune,full)")
    p.add_argument("--shots", help="shots per class, comma-separated; 'all' is every tile (default: all)")
    p.add_argument("--seeds", type=int, help="seeds per cell, 0..N-1 (default 5)")
    p.add_argument("--ablate", help="prompt kinds to ablate within pathotune, e.g. tvp,ttp,ivp: runs TVP only, "
                   "TVP+TTP, TVP+IVP and all three")
    p.add_argument("--tokens", help="TVP token counts for vpt and pathotune, e.g. 4,8,16,50 (default: ours, 8)")
    p.add_argument("--epochs", type=int, help="epochs per run (default: the run default, 20, early stopping)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="a run config override for every cell, as pathotune tune --set (repeatable)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap draws for every interval (default 1000)")
    p.add_argument("--precision", help="auto, fp32, bf16 or fp16 (default: the backbone's)")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument("--out", type=Path, help="the grid's folder: runs/, accuracy.csv, ACCURACY.md, curves")
    p.add_argument("--keep-checkpoints", action="store_true",
                   help="keep each finished run's resume checkpoint (default: deleted once the cell is finished)")
    p.add_argument("--list", action="store_true", help="list the cells and whether each is finished; run nothing")
    p.add_argument("--report-only", action="store_true", help="write the report from the finished cells only")
    return p


def _spec(args: argparse.Namespace) -> tuple[GridSpec, Protocol | None]:
    """The grid: a protocol's defaults, then the options given."""
    protocol = get_protocol(args.protocol) if args.protocol else None
    task = args.task or (protocol.task if protocol else None)
    if not task:
        raise BadInput("no task given", "pass --task NAME (see `pathotune presets list`) or --protocol NAME")
    backbones = parse_list(args.backbones, "--backbones") or (protocol.backbones if protocol else ())
    out = args.out or (Path(f"accuracy-{protocol.name}") if protocol else None)
    if out is None:
        raise BadInput("no output folder given", "pass --out DIR")
    if protocol is not None and protocol.layout and args.train is None and args.test is None:
        from benchmarks.accuracy.layouts import materialise

        train, test = materialise(protocol.layout, args.data_root, out / "data")
    else:
        train, test = require_data(args.train, args.test, protocol)
    return GridSpec(
        task=task, train=train, test=test, backbones=backbones, out=out,
        methods=parse_list(args.methods, "--methods") or (protocol.methods if protocol else DEFAULT_METHODS),
        shots=parse_counts(args.shots, "--shots", allow_all=True) or (protocol.shots if protocol else (None,)),
        seeds=args.seeds if args.seeds is not None else (protocol.seeds if protocol else 5),
        ablate=parse_list(args.ablate, "--ablate"), tokens=parse_counts(args.tokens, "--tokens") or (None,),
        val=args.val, epochs=args.epochs, sets=tuple(args.sets), bootstrap=args.bootstrap,
        precision=args.precision, device=args.device, protocol=protocol.name if protocol else None,
        keep_checkpoints=args.keep_checkpoints,
    ), protocol


def _preflight(spec: GridSpec, protocol: Protocol | None) -> tuple[dict[str, Any], dict[str, str]]:
    """Everything that can fail before the first cell: presets, --set keys, weights, the data itself."""
    from pathotune_cli import __version__
    from pathotune_cli.config import load_task_preset
    from pathotune_cli.runs.tune import resolve_config
    from pathotune_cli.training.data import discover

    task = load_task_preset(spec.task)
    if task.level != "tile":
        raise BadInput(f"task '{task.name}' is slide-level", "the recipe compares tile-level tasks (crc, kather2016)")
    configs = {}
    for backbone in spec.backbones:  # pathotune with every prompt: the widest settings any cell uses
        probe = Cell(backbone, "pathotune", "tvp+ttp+ivp", spec.tokens[0], spec.shots[0], 0)
        configs[backbone] = resolve_config(cellrun.tune_options(spec, probe, spec.out / "runs" / "preflight"))
    names = {backbone: config.backbone.name for backbone, config in configs.items()}
    weights = require_weights(configs)
    random = sorted(name for name, where in weights.items() if where == "random")
    for name in random:
        _log(f"warning: backbone '{name}' has random weights: {RANDOM_NOTE}")
    train, test = discover(spec.train, task), discover(spec.test, task)
    overlap = len({p.resolve() for p in train.paths} & {p.resolve() for p in test.paths})
    if overlap:
        _log(f"warning: {overlap} of the {len(test)} test tiles are also training tiles: scores are not held-out")
    context = {
        "train_tiles": len(train), "test_tiles": len(test), "overlap": overlap, "weights": weights,
        "random": random, "version": __version__, "commit": _commit(), "cpu": _cpu_model(),
        "references": list(protocol.references) if protocol else [],
    }
    return context, names


RANDOM_NOTE = "checks the recipe, says nothing about the methods"


def _run_grid(spec: GridSpec, grid: list[Cell]) -> Tally:
    """Run every cell that is not finished; a failed cell is reported and the others go on."""
    from pathotune_cli.runs.tune import resolve_config

    tally = Tally()
    report = cellrun.warnings_once(lambda text: _log(f"warning: {text}"))
    for i, cell in enumerate(grid, start=1):
        folder = cell.folder(spec.out)
        config = resolve_config(cellrun.tune_options(spec, cell, folder))
        key = cellrun.cell_key(spec, cell, config)
        done, why = cellrun.finished(folder, key)
        name = f"[{i}/{len(grid)}] {cell.backbone_name} {cell.variant} shots {cell.shots_label} seed {cell.seed}"
        if done:
            tally.kept.append(cell)
            continue
        t = time.perf_counter()
        try:
            record = cellrun.run_cell(spec, cell, config, key, folder, report)
        except Exception as exc:  # one cell's failure is reported; the grid goes on
            message = exc.one_line() if isinstance(exc, PathotuneError) else f"{type(exc).__name__}: {exc}"
            tally.failed.append((cell, message))
            _log(f"{name}: FAILED ({why}): {message}")
            continue
        tally.ran.append(cell)
        score = record["tune"]["seconds"]
        _log(f"{name}: {why} -> done in {time.perf_counter() - t:.1f} s (tuning {score:.1f} s)")
    return tally


def _write_report(spec: GridSpec, grid: list[Cell], context: dict[str, Any]) -> str:
    """accuracy.csv, ACCURACY.md and the curves, from every finished cell of the grid."""
    from benchmarks.accuracy.report import markdown, save_curves
    from benchmarks.accuracy.results import differences, load_results, rows, write_csv
    from pathotune_cli.files import write_text

    results = load_results(spec.out, grid)
    per_run, per_group = differences(spec, results)
    spec.out.mkdir(parents=True, exist_ok=True)
    write_csv(spec.out / "accuracy.csv", rows(results, per_run))
    save_curves(spec.out, results)
    document = markdown(spec, results, per_group, context)
    write_text(spec.out / "ACCURACY.md", document)
    return document


def _list(spec: GridSpec, grid: list[Cell]) -> int:
    from pathotune_cli.runs.tune import resolve_config

    for cell in grid:
        folder = cell.folder(spec.out)
        key = cellrun.cell_key(spec, cell, resolve_config(cellrun.tune_options(spec, cell, folder)))
        print(f"{cellrun.finished(folder, key)[1]:>26}  {folder}")
    return 0


def _log(message: str) -> None:
    print(f"[accuracy {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime + children.ru_utime + children.ru_stime


def _commit() -> str:
    try:
        root = Path(__file__).resolve().parents[2]
        done = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=5)
        return done.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _cpu_model() -> str:
    from benchmarks.core import lscpu_model

    return lscpu_model()


if __name__ == "__main__":
    sys.exit(main())
