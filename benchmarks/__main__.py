"""``python -m benchmarks``: measure pathotune against its limits and its peers; print a table, write JSON.

    python -m benchmarks                         # everything (~5-8 minutes on 2 cores)
    python -m benchmarks --only reading,tuning   # a subset
    python -m benchmarks --quick                 # smoke-test sizes (targets are not meaningful)
    python -m benchmarks --out DIR               # results.json and results.md go there

Exit status: 0 when every judged figure passes, 1 when one fails or a group errors (with ``--quick``, only
errors count), 2 on bad usage.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.runner import GROUPS, group_main, run_all


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    p.add_argument("--only", help=f"comma-separated groups to run (of {', '.join(GROUPS)})")
    p.add_argument(
        "--quick", action="store_true", help="small sizes, for a smoke test; targets are not meaningful"
    )
    p.add_argument(
        "--out", type=Path, help="folder for results.json and results.md (default: a new temp folder)"
    )
    p.add_argument("--json-out", type=Path, help="write the JSON here instead of OUT/results.json")
    p.add_argument("--seed", type=int, default=0, help="seed of every generated input")
    p.add_argument("--keep", action="store_true", help="keep the generated slides and outputs under OUT/work")
    p.add_argument("--group", help=argparse.SUPPRESS)  # internal: run one group in this process
    p.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = _parser().parse_args(argv)
    if args.group:
        return group_main(args.group, args.work, args.result, args.quick, args.seed)
    groups = list(GROUPS)
    if args.only:
        groups = [g.strip() for g in args.only.split(",") if g.strip()]
        unknown = [g for g in groups if g not in GROUPS]
        if unknown:
            print(f"unknown group(s) {', '.join(unknown)}; choose from {', '.join(GROUPS)}", file=sys.stderr)
            return 2
        groups = [g for g in GROUPS if g in groups]  # always in the canonical order
    out = args.out or Path(tempfile.mkdtemp(prefix=f"pathotune-bench-{time.strftime('%Y%m%d-%H%M%S')}-"))
    document_path = args.json_out or out / "results.json"

    from benchmarks.report import markdown, render_rich

    document = run_all(groups, out, args.quick, args.seed, args.keep, document_path)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(markdown(document))
    render_rich(document)
    print(f"JSON: {document_path}\nMarkdown: {out / 'results.md'}")
    errors = any(g["error"] for g in document["groups"].values())
    if errors or (not args.quick and not document["all_passed"]):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
