"""``python -m benchmarks --quick`` runs and writes a results file with every figure of the groups it ran.

Smoke-test sizes only: no timing is asserted here (the figures of a quick run mean nothing, and CI machines
are shared). The full run is ``python -m benchmarks``; its latest table is in BENCHMARKS.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ("startup", "reading", "precision")
FIELDS = (
    "key",
    "group",
    "title",
    "value",
    "unit",
    "baseline",
    "target",
    "op",
    "measure",
    "ratio",
    "passed",
    "note",
)


def _expected() -> dict[str, tuple[str, ...]]:
    sys.path.insert(0, str(ROOT))
    try:
        from benchmarks.runner import EXPECTED, GROUPS
    finally:
        sys.path.remove(str(ROOT))
    assert set(EXPECTED) == set(GROUPS)
    return EXPECTED


def test_quick_run_writes_every_key(tmp_path: Path) -> None:
    expected = _expected()
    out = tmp_path / "bench"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--only", ",".join(SMOKE), "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    document = json.loads((out / "results.json").read_text())
    assert document["quick"] is True
    assert document["skipped"] == [g for g in expected if g not in SMOKE]
    for key in ("cpu", "cores", "amx", "avx512_bf16", "torch"):
        assert key in document["hardware"]
    for group in SMOKE:
        assert document["groups"][group]["error"] is None, document["groups"][group]
        assert document["groups"][group]["missing"] == []
        for key in expected[group]:
            figure = document["figures"][key]
            assert set(FIELDS) <= set(figure), (key, sorted(figure))
            assert figure["value"] is not None or key == "tuning.precision", key
            if figure["target"] is not None:
                assert isinstance(figure["passed"], bool), key
    assert set(document["figures"]) == {k for g in SMOKE for k in expected[g]}
    assert "figure" in done.stdout and (
        "PASS" in done.stdout or "FAIL" in done.stdout
    )  # the table was printed
    assert (out / "results.md").read_text().startswith("| figure |")
