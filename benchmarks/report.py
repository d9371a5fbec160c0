"""The results document as a rich table (terminal) and as a Markdown table (BENCHMARKS.md)."""

from __future__ import annotations

from typing import Any

from benchmarks.runner import EXPECTED, GROUPS


def _num(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    v = float(value)
    if unit == "share":
        return f"{v:.1%}"
    if abs(v) >= 100:
        text = f"{v:,.0f}"
    elif abs(v) >= 10:
        text = f"{v:.1f}"
    elif v == int(v) and unit in ("modules", "tiles", "grey levels"):
        text = f"{int(v)}"
    else:
        text = f"{v:.3g}" if abs(v) >= 0.001 or v == 0 else f"{v:.2e}"
    return f"{text} {unit}".strip() if unit and unit not in ("share",) else text


def _target(fig: dict[str, Any]) -> str:
    target = fig.get("target")
    if target is None:
        return ""
    what = "ratio" if fig.get("measure", "ratio") == "ratio" else "value"
    shown = f"{target:.0%}" if fig.get("unit") == "share" else f"{target:g}"
    return f"{what} {fig.get('op', '>=')} {shown}"


def _result(fig: dict[str, Any]) -> str:
    passed = fig.get("passed")
    return "" if passed is None else ("PASS" if passed else "FAIL")


def _ratio(fig: dict[str, Any]) -> str:
    ratio = fig.get("ratio")
    return "" if ratio is None else f"{ratio:.2f}x"


def rows(document: dict[str, Any], include_info: bool = True) -> list[dict[str, Any]]:
    """Figures in table order: by group, judged before context, in the order each group declares."""
    figures = document["figures"]
    out = []
    for group in GROUPS:
        for key in EXPECTED[group]:
            fig = figures.get(key)
            if fig is None or (not include_info and fig.get("passed") is None):
                continue
            out.append(fig)
    return out


def render_rich(document: dict[str, Any]) -> None:
    """Print the table to stdout."""
    from rich.console import Console
    from rich.table import Table

    hw = document["hardware"]
    title = (
        f"pathotune benchmarks{' (--quick: smoke sizes, targets not meaningful)' if document['quick'] else ''}\n"
        f"{hw.get('cpu')} · {hw.get('cores')} cores · AMX {'yes' if hw.get('amx') else 'no'} · "
        f"AVX512-BF16 {'yes' if hw.get('avx512_bf16') else 'no'} · torch {hw.get('torch')}"
    )
    table = Table(title=title, show_lines=False, expand=False)
    for name, justify in (
        ("figure", "left"),
        ("value", "right"),
        ("baseline (same run)", "right"),
        ("ratio", "right"),
        ("target", "left"),
        ("", "left"),
        ("note", "left"),
    ):
        table.add_column(name, justify=justify, overflow="fold")
    group = None
    for fig in rows(document):
        if fig.get("group") != group:
            if group is not None:
                table.add_section()
            group = fig.get("group")
        judged = fig.get("passed") is not None
        style = "" if judged else "dim"
        result = _result(fig)
        mark = {"PASS": "[green]PASS[/green]", "FAIL": "[bold red]FAIL[/bold red]"}.get(result, "")
        baseline = ""
        if fig.get("baseline") is not None:
            baseline = f"{_num(fig['baseline'], fig.get('unit', ''))}"
        table.add_row(
            fig.get("title", fig["key"]),
            _num(fig.get("value"), fig.get("unit", "")),
            baseline,
            _ratio(fig),
            _target(fig),
            mark,
            fig.get("note", ""),
            style=style,
        )
    console = Console(width=200)
    console.print(table)
    for line in kernel_lines(document):
        console.print(line)
    for line in quiet_lines(document):
        console.print(line)
    errors = {g: v["error"] for g, v in document["groups"].items() if v.get("error")}
    for g, err in errors.items():
        console.print(f"[bold red]group {g} failed:[/bold red] {err}")
    console.print(
        f"{document['passed']} passed, {document['failed']} failed"
        f"{', skipped: ' + ', '.join(document['skipped']) if document['skipped'] else ''}"
        f" · {document['seconds']:.0f} s in all ("
        + ", ".join(f"{g} {v['seconds']:.0f} s" for g, v in document["groups"].items())
        + ")"
    )


def kernel_lines(document: dict[str, Any]) -> list[str]:
    """What kernel calibration chose in this run, one line per backbone and placement."""
    return [f"kernels: {row['backbone']} {row['placement']}: {row['choice']['attention']} attention, "
            f"{row['choice']['weights']} weights (timed: "
            + ", ".join(f"{k} {v * 1e3:.0f} ms" for k, v in row.get("seconds", {}).items()) + ")"
            for row in document.get("kernels", [])]


def quiet_lines(document: dict[str, Any]) -> list[str]:
    """The load before each group: the 1-minute load average and the cores other processes kept busy."""
    return ["machine before each group: " + "; ".join(
        f"{g} load {v.get('load_before', '?')}, others {v.get('others_busy_cores_before', '?')} cores"
        for g, v in document["groups"].items())]


def markdown(document: dict[str, Any]) -> str:
    """The table as Markdown (judged figures and their context lines), then the CPU, kernels and load."""
    hw = document["hardware"]
    lines = [
        f"CPU: {hw.get('cpu')} ({hw.get('cores')} cores, AMX {'yes' if hw.get('amx') else 'no'}, "
        f"AVX512-BF16 {'yes' if hw.get('avx512_bf16') else 'no'}), torch {hw.get('torch')}",
        "",
        "| figure | value | baseline (same run) | ratio | target | result |",
        "|---|---:|---:|---:|---|---|",
    ]
    for fig in rows(document):
        judged = fig.get("passed") is not None
        name = fig.get("title", fig["key"])
        if not judged:
            name = f"<sub>{name}</sub>"
        baseline = _num(fig["baseline"], fig.get("unit", "")) if fig.get("baseline") is not None else ""
        result = {"PASS": "**PASS**", "FAIL": "**FAIL**"}.get(_result(fig), "")
        note = fig.get("note", "")
        value = _num(fig.get("value"), fig.get("unit", ""))
        if note and not judged:
            value = f"{value} <sub>({note})</sub>"
        cells = [name, value, baseline, _ratio(fig), _target(fig), result]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    lines += ["", *[f"- {line}" for line in kernel_lines(document) + quiet_lines(document)]]
    return "\n".join(lines) + "\n"
