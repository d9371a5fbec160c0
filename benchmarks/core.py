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


@dataclass
class Interleaved:
    """Rates (higher is faster) of two or more sides measured in turn, round by round."""

    rounds: dict[str, list[float]]
    """Each side's rate in every round, in the order measured."""
    remeasured: int = 0
    """Passes set aside because the ratio of their bests disagreed with their rounds' own ratios."""

    def best(self, side: str) -> float:
        """The fastest round of ``side`` (noise only ever slows a run down)."""
        return max(self.rounds[side])

    def ratio(self, a: str, b: str) -> float:
        """best(a) / best(b)."""
        return self.best(a) / self.best(b)

    def round_ratios(self, a: str, b: str) -> list[float]:
        """a / b within each round: both sides met the same moment of the machine."""
        return [x / y for x, y in zip(self.rounds[a], self.rounds[b], strict=False)]

    def drift(self, a: str, b: str) -> float:
        """How far the ratio of the bests is from the median ratio within rounds (0.1 = 10%).

        When the machine's speed moves during a measurement, one side's best can come from a fast moment and
        the other's from a slow one; the ratio within each round does not have that error.
        """
        import statistics

        within = statistics.median(self.round_ratios(a, b))
        return abs(self.ratio(a, b) / within - 1.0)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for a figure's ``extra``."""
        return {"rounds": {k: [round(v, 3) for v in vs] for k, vs in self.rounds.items()},
                "remeasured": self.remeasured}


def interleaved(sides: dict[str, Any], rounds: int, pairs: list[tuple[str, str]] | None = None,
                max_drift: float = 0.10, extra_passes: int = 2) -> Interleaved:
    """Measure every side once per round, A B A B ..., each call returning a rate.

    A pass is ``rounds`` rounds. When a pair in ``pairs`` drifted apart in it (``Interleaved.drift`` above
    ``max_drift``), both sides are measured again in a fresh pass, up to ``extra_passes`` times, and the pass
    whose pairs drifted least is the result (``remeasured`` counts the passes set aside).
    """

    def one_pass() -> Interleaved:
        result = Interleaved({name: [] for name in sides})
        for _ in range(rounds):
            for name, measure in sides.items():
                result.rounds[name].append(float(measure()))
        return result

    def worst(result: Interleaved) -> float:
        return max((result.drift(a, b) for a, b in pairs or []), default=0.0)

    passes = [one_pass()]
    while worst(passes[-1]) > max_drift and len(passes) <= extra_passes:
        log(f"sides of {pairs} drifted apart by {worst(passes[-1]):.0%}; measuring them again")
        passes.append(one_pass())
    best = min(passes, key=worst)
    best.remeasured = len(passes) - 1
    return best


def others_busy_cores(seconds: float = 1.0) -> float:
    """Cores kept busy by processes outside this process tree over ``seconds`` (from /proc), else -1.

    The 1-minute load average counts this run's own previous group for minutes after it ended; this
    counts only the others: all CPU time the kernel reports, less this process tree's.
    """
    try:
        tick = os.sysconf("SC_CLK_TCK")
        before_all, before_us = _busy_jiffies(), _tree_jiffies(os.getpid())
        time.sleep(seconds)
        after_all, after_us = _busy_jiffies(), _tree_jiffies(os.getpid())
    except (OSError, ValueError):
        return -1.0
    return max(0.0, ((after_all - before_all) - (after_us - before_us)) / tick / seconds)


def _busy_jiffies() -> int:
    with open("/proc/stat") as fh:
        fields = [int(v) for v in fh.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields[:8]) - idle


def _tree_jiffies(root: int) -> int:
    """utime + stime of ``root`` and its living descendants (children that ended are counted in cutime)."""
    total = 0
    parents: dict[int, int] = {}
    stats: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    rest = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry)] = int(rest[1])
            stats[int(entry)] = rest
    tree, todo = set(), [root]
    while todo:
        pid = todo.pop()
        tree.add(pid)
        todo += [child for child, parent in parents.items() if parent == pid and child not in tree]
    for pid in tree:
        rest = stats.get(pid)
        if rest:
            total += int(rest[11]) + int(rest[12]) + int(rest[13]) + int(rest[14])  # utime stime cutime cstime
    return total
