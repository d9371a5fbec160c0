"""``pathotune tune --sweep KEY=V1,V2 ...``: every combination trained, the best kept by a named validation metric.

Each member is an ordinary tuning run in ``RUN/sweep/NN`` (its own config, history, metrics and prompt file),
made from the same options plus its ``--set KEY=VALUE`` assignments. The metric is the run's ``train.monitor``
(balanced accuracy unless set), read at each member's best epoch. The best member's prompt file is copied to
``RUN/prompts.safetensors``, and ``RUN/sweep.csv`` lists every member: its values, its metric, its time.
Members run one after another, each with its own frozen forward (sharing it across the grid, as THUNDER does for
LoRA members over one batch, is not done here).
"""

from __future__ import annotations

import itertools
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pathotune_cli.errors import BadInput
from pathotune_cli.events import Reporter, ignore, note
from pathotune_cli.runs.run_folder import PROMPTS_NAME
from pathotune_cli.runs.tune import TuneOptions, TuneResult, resolve_config, tune_run

SWEEP_CSV = "sweep.csv"
LOWER_IS_BETTER = ("loss",)


@dataclass(frozen=True)
class SweepMember:
    """One combination: its assignments, where it ran, its metric and its time."""

    index: int
    values: dict[str, str]
    run: Path
    metric: float | None
    seconds: float
    best: bool = False


@dataclass(frozen=True)
class SweepResult:
    """What a sweep made: the best member's tuning result (its prompt file copied to the run), and every member."""

    run: Path
    prompts: Path
    metric: str
    members: list[SweepMember]
    best: TuneResult

    def to_dict(self) -> dict[str, Any]:
        """The sweep as plain data, for ``--json``."""
        return {
            "run": str(self.run), "prompts": str(self.prompts), "metric": self.metric,
            "sweep_csv": str(self.run / SWEEP_CSV), "best": self.best.to_dict(),
            "members": [{"member": m.index, **m.values, "run": str(m.run), self.metric: m.metric,
                         "seconds": m.seconds, "best": m.best} for m in self.members],
        }


def parse_sweeps(specs: list[str]) -> list[tuple[str, list[str]]]:
    """``["train.lr=1e-4,1e-3", ...]`` to ``[("train.lr", ["1e-4", "1e-3"]), ...]``; commas inside brackets stay.

    Raises:
        BadInput: not ``KEY=V1,V2``, an empty value, or a key swept twice.
    """
    sweeps: list[tuple[str, list[str]]] = []
    for spec in specs:
        key, _, raw = spec.partition("=")
        values = _split_values(raw)
        if not key.strip() or not values or any(not v for v in values):
            raise BadInput(f"--sweep '{spec}' is not KEY=V1,V2,...", "write e.g. --sweep train.lr=1e-4,3e-4,1e-3")
        if key.strip() in {k for k, _ in sweeps}:
            raise BadInput(f"--sweep key '{key.strip()}' is given twice", "list all its values in one --sweep")
        sweeps.append((key.strip(), values))
    return sweeps


def sweep_run(opts: TuneOptions, specs: list[str], *, force: bool = False, allow_download: bool = False,
              report: Reporter = ignore) -> SweepResult:
    """Tune every combination of ``specs`` under ``opts``, keep the best by the validation metric.

    Raises:
        BadInput: a bad ``--sweep``, a member's bad settings (checked for every member before any trains), a run
            folder holding a finished sweep (without ``force``), or a run without a validation split.
    """
    sweeps = parse_sweeps(specs)
    first = resolve_config(opts)
    run = Path(first.out)
    if (run / SWEEP_CSV).exists() and not force:
        raise BadInput(f"{run} holds a finished sweep", "pass --force to sweep again in it, or another --out")
    combos = [dict(zip([k for k, _ in sweeps], values, strict=True))
              for values in itertools.product(*[v for _, v in sweeps])]
    configs = [resolve_config(replace(opts, out=run / "sweep" / f"{i:02d}", sets=(*opts.sets, *_sets(combo))))
               for i, combo in enumerate(combos, 1)]
    metric = first.train.monitor
    members: list[SweepMember] = []
    results: list[TuneResult] = []
    for i, (combo, config) in enumerate(zip(combos, configs, strict=True), 1):
        note(report, f"sweep member {i}/{len(combos)}: {', '.join(f'{k}={v}' for k, v in combo.items())}")
        result = tune_run(config, force=force, allow_download=allow_download, report=report)
        value = _metric_at_best(result, metric)
        if value is None:
            raise BadInput("a sweep picks its best member by a validation metric, and this run has no validation "
                           "split", "keep train.val_fraction above 0, or pass --val-data")
        members.append(SweepMember(i, combo, result.run, value, result.seconds))
        results.append(result)
    best = _best(members, metric)
    members = [replace(m, best=m.index == best) for m in members]
    prompts = _keep_best(run, results[best - 1].prompts)
    _write_csv(run / SWEEP_CSV, members, [k for k, _ in sweeps], metric)
    note(report, f"best by validation {metric}: member {best} ({members[best - 1].metric:.4f})")
    return SweepResult(run, prompts, f"val_{metric}", members, results[best - 1])


def _split_values(raw: str) -> list[str]:
    values, depth, current = [], 0, ""
    for char in raw:
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "," and depth == 0:
            values.append(current.strip())
            current = ""
        else:
            current += char
    values.append(current.strip())
    return values if raw.strip() else []


def _sets(combo: dict[str, str]) -> tuple[str, ...]:
    return tuple(f"{key}={value}" for key, value in combo.items())


def _metric_at_best(result: TuneResult, monitor: str) -> float | None:
    """The monitored validation value at the member's best epoch (None without validation)."""
    rows = [r for r in result.history if r.get("epoch") == result.best_epoch]
    value = rows[0].get(f"val_{monitor}") if rows else None
    return None if value is None else float(value)


def _best(members: list[SweepMember], monitor: str) -> int:
    """The best member's index; ties go to the earlier member."""
    sign = -1.0 if monitor in LOWER_IS_BETTER else 1.0
    return max(members, key=lambda m: (sign * float(m.metric or 0.0), -m.index)).index


def _keep_best(run: Path, prompts: Path) -> Path:
    """Copy the best member's prompt file to ``RUN/prompts.safetensors`` (under a temporary name, then renamed)."""
    from pathotune_cli.files import atomic_write

    return atomic_write(run / PROMPTS_NAME, lambda temp: shutil.copyfile(prompts, temp))


def _write_csv(path: Path, members: list[SweepMember], keys: list[str], monitor: str) -> None:
    from pathotune_cli.files import write_csv

    write_csv(path, ["member", *keys, f"val_{monitor}", "seconds", "best", "run"],
              ([m.index, *[m.values[k] for k in keys], m.metric, m.seconds, m.best, m.run.name] for m in members))
