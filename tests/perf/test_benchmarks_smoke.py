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
            peer = key.startswith("reading.hs2p_")  # hs2p runs where it is installed (make bench), else None
            assert figure["value"] is not None or key == "tuning.precision" or peer, key
            if figure["target"] is not None:
                assert isinstance(figure["passed"], bool), key
    assert set(document["figures"]) == {k for g in SMOKE for k in expected[g]}
    assert "figure" in done.stdout and (
        "PASS" in done.stdout or "FAIL" in done.stdout
    )  # the table was printed
    markdown = (out / "results.md").read_text()
    assert markdown.startswith(f"CPU: {document['hardware']['cpu']}") and markdown.count("| figure |") == 1
    assert all("others_busy_cores_before" in g for g in document["groups"].values())
    assert isinstance(document["kernels"], list)  # what kernel calibration chose in the run (the precision group)
    assert any(row["placement"].startswith("cpu") for row in document["kernels"])


def test_interleaved_sides_are_measured_in_turn_and_a_drifting_pair_again() -> None:
    sys.path.insert(0, str(ROOT))
    try:
        from benchmarks.core import interleaved
    finally:
        sys.path.remove(str(ROOT))
    calls: list[str] = []
    # first pass: a=10,b=5 then a=2,b=10 (the machine slowed for a): bests 10/10 = 1 while each round says 2 and
    # 0.2; second pass: 10/5 twice, no drift. The second pass is the result.
    speed = iter([10.0, 5.0, 2.0, 10.0, 10.0, 5.0, 10.0, 5.0])

    def side(name: str):
        return lambda: calls.append(name) or next(speed)

    result = interleaved({"a": side("a"), "b": side("b")}, rounds=2, pairs=[("a", "b")], max_drift=0.05)
    assert calls == ["a", "b"] * 4  # in turn, and measured again after the drifting pass
    assert result.remeasured == 1
    assert result.rounds == {"a": [10.0, 10.0], "b": [5.0, 5.0]} and result.ratio("a", "b") == 2.0
