"""What every measurement returns, and the small helpers they share.

A ``Figure`` is one judged line of the table: a value, the baseline measured in the same run, their ratio and
the target the ratio (or the value, for absolute limits such as start-up time and memory) must meet.
``Info`` lines carry the raw rates behind the ratios, and context; they are never judged.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Figure:
    """One judged figure."""

    key: str
    """Stable id, e.g. ``reading.predict_vs_openslide``; the JSON is keyed by it."""
    group: str
    title: str
    value: float | None
    unit: str
    baseline: float | None = None
    baseline_title: str = ""
    target: float | None = None
    op: str = ">="
    """How ``measure`` compares with ``target``: ``>=`` or ``<=``."""
    measure: str = "ratio"
    """What the target applies to: ``ratio`` (value / baseline) or ``value``."""
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        """value / baseline, where both exist."""
        if self.value is None or not self.baseline:
            return None
        return self.value / self.baseline

    @property
    def judged(self) -> float | None:
        """The number the target applies to."""
        return self.ratio if self.measure == "ratio" else self.value

    @property
    def passed(self) -> bool | None:
        """True or False against the target; None where there is no target or nothing was measured."""
        if self.target is None:
            return None
        got = self.judged
        if got is None:
            return False
        return got >= self.target if self.op == ">=" else got <= self.target

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the JSON file."""
        data = asdict(self)
        data.update(ratio=self.ratio, passed=self.passed)
        return data


def info(
    key: str, group: str, title: str, value: float | None, unit: str, note: str = "", **extra: Any
) -> Figure:
    """A line of context: a raw rate or size, never judged."""
    return Figure(key, group, title, value, unit, note=note, extra=extra)


class Timer:
    """``with Timer() as t: ...``; then ``t.seconds``."""

    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start


def hardware() -> dict[str, Any]:
    """The machine the numbers came from: CPU model, cores, bf16 support, library versions."""
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    data: dict[str, Any] = {
        "cpu": lscpu_model(),
        "cores": os.cpu_count(),
        "amx": "amx_tile" in flags,
        "avx512_bf16": "avx512_bf16" in flags,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    from importlib import metadata

    for name in ("torch", "timm", "tifffile", "imagecodecs", "openslide-python", "openslide-bin", "numpy"):
        try:
            data[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            data[name] = None
    try:
        data["load_average"] = os.getloadavg()
    except OSError:
        pass
    return data


def lscpu_model() -> str:
    """``lscpu``'s model name, or the platform's processor string."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return platform.processor()
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def log(message: str) -> None:
    """Progress on stderr (the table goes to stdout)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
