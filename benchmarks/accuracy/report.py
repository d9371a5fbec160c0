"""``ACCURACY.md`` and the few-shot curves: per backbone and method, mean ± sd over seeds, and the paired
difference to linear probing with its interval.

The curves are drawn on a ``Figure`` bound to the Agg canvas (as ``training/plots.py`` does) and written with
``files.atomic_write``.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.accuracy.grid import ARM_SETS, METHODS, GridSpec
from benchmarks.accuracy.results import BASELINE, Result

RANDOM_BANNER = "random weights, plumbing only: checks the recipe, says nothing about the methods"


def markdown(spec: GridSpec, results: list[Result], per_group: dict[tuple, dict], context: dict[str, Any]) -> str:
    """The whole ``ACCURACY.md``."""
    lines = [f"# Accuracy: task `{spec.task}`" + (f" (protocol `{spec.protocol}`)" if spec.protocol else ""), ""]
    if context.get("random"):
        lines += [f"> **{RANDOM_BANNER}** ({', '.join(context['random'])}).", ""]
    lines += _preamble(spec, results, context)
    by_backbone: dict[str, list[Result]] = defaultdict(list)
    for result in results:
        by_backbone[result.cell.backbone_name].append(result)
    for backbone, mine in by_backbone.items():
        lines += [f"## {backbone}", "", f"Weights: {context.get('weights', {}).get(backbone, 'unknown')}.", ""]
        lines += [f"![few-shot curve]({curve_name(backbone)})", ""]
        lines += _table(mine, per_group)
    if context.get("references"):
        lines += _references(results, context["references"])
    if context.get("failed"):
        lines += ["## Failed cells", ""] + [f"- `{cell}`: {error}" for cell, error in context["failed"]] + [""]
    return "\n".join(lines)


def curve_name(backbone: str) -> str:
    """The few-shot curve's file name for a backbone."""
    return f"curve-{backbone}.png"


def save_curves(out: Path, results: list[Result]) -> list[Path]:
    """One PNG per backbone: balanced accuracy (mean ± sd over seeds) against shots, a line per method variant."""
    by_backbone: dict[str, list[Result]] = defaultdict(list)
    for result in results:
        by_backbone[result.cell.backbone_name].append(result)
    return [_curve(out / curve_name(name), name, mine) for name, mine in by_backbone.items()]


def _preamble(spec: GridSpec, results: list[Result], context: dict[str, Any]) -> list[str]:
    overlap = context.get("overlap", 0)
    test_note = (f"; **{overlap} of the {context.get('test_tiles')} test tiles are also training tiles** (the same "
                 "files): these scores are not held-out" if overlap else "; no test tile is a training tile")
    shots = ", ".join("all" if s is None else str(s) for s in spec.shots)
    tokens = ", ".join("default" if t is None else str(t) for t in spec.tokens)
    arms = ", ".join(spec.arms) or "none"
    return [
        f"- Train: `{spec.train}` ({context.get('train_tiles')} tiles); test: `{spec.test}` "
        f"({context.get('test_tiles')} tiles){test_note}.",
        f"- Grid: methods {', '.join(spec.methods)}; ablation arms {arms}; TVP tokens {tokens}; shots {shots}; "
        f"{spec.seeds} seed(s); epochs {spec.epochs or 'the default'}; --set {' '.join(spec.sets) or 'none'}.",
        f"- {len(results)} runs finished" + (f", {len(context['failed'])} failed" if context.get("failed") else "")
        + f". Command: `{context.get('command', '')}`.",
        f"- pathotune {context.get('version', '?')}, commit {context.get('commit', '?')}, "
        f"{context.get('cpu', '?')}; wall {context.get('wall_s', 0):.0f} s, CPU {context.get('cpu_s', 0):.0f} s "
        "in this invocation (kept cells cost nothing).",
        "- Each score: mean ± sd over seeds, on the test tiles. Δ vs linear: the mean over seeds of (method − linear "
        "probe) with the same backbone, shots and seed, and its 95% paired bootstrap interval: each of "
        f"{spec.bootstrap} draws resamples the test tile indices once and applies them to both methods' "
        "predictions of every seed. Trainable parameters and tuning seconds: mean over seeds.",
        "",
    ]


def _table(results: list[Result], per_group: dict[tuple, dict]) -> list[str]:
    header = ("| shots | method | TVP tokens | seeds | balanced accuracy | macro F1 | AUROC | Δ bal. acc. vs linear "
              "| Δ macro F1 vs linear | Δ AUROC vs linear | trainable parameters | tuning s |")
    lines = [header, "|" + "---|" * 4 + "---:|" * 8]
    groups: dict[tuple, list[Result]] = defaultdict(list)
    for result in results:
        groups[result.group].append(result)
    order = sorted(groups, key=lambda g: (_shots_order(g[2]), _method_order(groups[g][0])))
    for group in order:
        mine = groups[group]
        first = mine[0]
        diff = per_group.get(group)
        deltas = [_delta(diff, m) if first.cell.method != BASELINE else "(baseline)"
                  for m in ("balanced_accuracy", "macro_f1", "macro_auroc")]
        tokens = first.record.get("tvp_tokens")
        trainable = np.mean([r.record["tune"]["trainable_parameters"] for r in mine])
        seconds = np.mean([r.record["tune"]["seconds"] for r in mine])
        lines.append(
            f"| {first.cell.shots_label} | {first.cell.title} | {'' if tokens is None else tokens} | {len(mine)} | "
            + " | ".join(_mean_sd([r.score(m)["value"] for r in mine])
                         for m in ("balanced_accuracy", "macro_f1", "macro_auroc"))
            + f" | {' | '.join(deltas)} | {trainable:,.0f} | {seconds:.1f} |"
        )
    return lines + [""]


def _references(results: list[Result], references: list[dict[str, Any]]) -> list[str]:
    lines = ["## Reference numbers (theirs, not measured here)", "",
             "| source | their backbone | method | their accuracy | their F1 | ours: accuracy | ours: macro F1 |",
             "|---|---|---|---:|---:|---:|---:|"]
    for ref in references:
        mine = [r for r in results if r.cell.backbone_name == ref["backbone"] and r.cell.method == ref["method"]
                and r.cell.shots is None]
        ours_acc = _mean_sd([r.score("accuracy")["value"] for r in mine]) if mine else "not run"
        ours_f1 = _mean_sd([r.score("macro_f1")["value"] for r in mine]) if mine else "not run"
        lines.append(f"| {ref['source']} | {ref['their_backbone']} | {ref['method']} | {ref['accuracy']:.4f} | "
                     f"{ref['f1']:.4f} | {ours_acc} | {ours_f1} |")
    notes = sorted({ref["note"] for ref in references if ref.get("note")})
    return lines + [""] + [f"- {note}" for note in notes] + [""]


def _curve(path: Path, backbone: str, results: list[Result]) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from pathotune_cli.files import atomic_write

    shots = sorted({r.cell.shots_label for r in results}, key=_shots_order)
    fig = Figure(figsize=(8.5, 4.5), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    variants: dict[str, list[Result]] = defaultdict(list)
    for result in results:
        variants[result.cell.variant].append(result)
    ordered = sorted(variants.values(), key=lambda rs: _method_order(rs[0]))
    titles = list(dict.fromkeys(rs[0].cell.title for rs in ordered))  # one colour per method and ablation arm
    tokens_seen = list(dict.fromkeys(rs[0].record.get("tvp_tokens") for rs in ordered))
    for n, mine in enumerate(ordered):
        tokens = mine[0].record.get("tvp_tokens")
        xs, means, sds = _curve_points(mine, shots)
        dodge = (n - (len(ordered) - 1) / 2) * 0.12 / max(1, len(ordered))
        label = mine[0].cell.title + (f", {tokens} TVP tokens" if tokens is not None else "")
        ax.errorbar([x + dodge for x in xs], means, yerr=sds, marker="o", markersize=4, capsize=3, label=label,
                    color=f"C{titles.index(mine[0].cell.title) % 10}",
                    linestyle=_LINESTYLES[tokens_seen.index(tokens) % len(_LINESTYLES)])
    ax.set_xticks(range(len(shots)), labels=shots)
    ax.set_xlabel("shots per class")
    ax.set_ylabel("balanced accuracy (mean ± sd over seeds)")
    ax.set_ylim(-0.02, 1.02)
    random = any(r.record["tune"].get("random_weights") for r in results)
    ax.set_title(backbone + (f" ({RANDOM_BANNER})" if random else ""), fontsize=9 if random else 11)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return atomic_write(path, lambda temp: fig.savefig(temp, format="png"))


_LINESTYLES = ("-", "--", ":", "-.")


def _curve_points(results: list[Result], shots: list[str]) -> tuple[list[int], list[float], list[float]]:
    """x positions (index into ``shots``), mean and sd of balanced accuracy over seeds."""
    xs, means, sds = [], [], []
    for i, label in enumerate(shots):
        values = [r.score("balanced_accuracy")["value"] for r in results if r.cell.shots_label == label]
        values = [v for v in values if v is not None]
        if values:
            xs.append(i)
            means.append(float(np.mean(values)))
            sds.append(float(np.std(values, ddof=1)) if len(values) > 1 else 0.0)
    return xs, means, sds


def _mean_sd(values: list[float | None]) -> str:
    got = [v for v in values if v is not None]
    if not got:
        return "–"
    if len(got) == 1:
        return f"{got[0]:.3f}"
    return f"{np.mean(got):.3f} ± {np.std(got, ddof=1):.3f}"


def _delta(diff: dict | None, metric: str) -> str:
    if not diff or diff[metric]["value"] is None:
        return "–"
    d = diff[metric]
    if d["ci_low"] is None:
        return f"{d['value']:+.3f}"
    return f"{d['value']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]"


def _shots_order(label: str) -> float:
    return float("inf") if label == "all" else float(label)


def _method_order(result: Result) -> tuple[int, int, int]:
    """linear, vpt, the ablation arms (TVP, TVP+TTP, TVP+IVP), pathotune, full; then by TVP tokens."""
    cell = result.cell
    rank = {m: i for i, m in enumerate(METHODS)}[cell.method]
    arm = list(ARM_SETS).index(cell.ablation) if cell.ablation in ARM_SETS else 0
    return rank, arm, cell.tokens or 0
