"""A scratch WSInfer 0.6.1 environment for the tests that run WSInfer itself: built once, cached, never a dependency.

The environment reuses this interpreter's torch, torchvision, numpy and openslide through a ``.pth`` file that
names this interpreter's site-packages, so ``pip install wsinfer==0.6.1 'zarr<3'`` (WSInfer 0.6.1 imports
``zarr.storage.KVStore``, gone in zarr 3) adds only WSInfer's own packages (about 10 s with a warm pip cache).
It lives under ``~/.cache/pathotune-tests/``, keyed by the Python version and the site-packages it points at,
and is complete only once its marker file exists. Offline, WSInfer's CLI reads a model-zoo registry when it is
imported; ``wsinfer_home`` is a HOME that holds a valid one, so the user's own ``~/.wsinfer-zoo`` is left alone.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

WSINFER_VERSION = "0.6.1"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pathotune-tests"
REGISTRY = {"models": {"x": {"description": "x", "hf_repo_id": "a/b", "hf_revision": "main"}}}
_MARKER = ".pathotune-complete"


def _venv_dir() -> Path:
    site = sysconfig.get_paths()["purelib"]
    key = hashlib.sha256(f"{sys.version}|{site}".encode()).hexdigest()[:10]
    return CACHE / f"wsinfer-{WSINFER_VERSION}-py{sys.version_info[0]}{sys.version_info[1]}-{key}"


def wsinfer_executable() -> Path:
    """``bin/wsinfer`` of the cached environment, built first when it is missing or was left half-built."""
    venv = _venv_dir()
    exe = venv / "bin" / "wsinfer"
    venv.parent.mkdir(parents=True, exist_ok=True)
    with (venv.parent / f"{venv.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test runs at once: one builds, the other waits and reuses it
        if (venv / _MARKER).is_file() and exe.is_file():
            return exe
        shutil.rmtree(venv, ignore_errors=True)
        _run([sys._base_executable, "-m", "venv", str(venv)], "create the WSInfer venv")
        site = next((venv / "lib").glob("python*/site-packages"))
        (site / "_pathotune_torch.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
        _run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", f"wsinfer=={WSINFER_VERSION}", "zarr<3"],
             "pip install WSInfer (the package index must be reachable)")
        (venv / _MARKER).write_text("ok\n")
    return exe


def wsinfer_python() -> Path:
    """The environment's interpreter (for wsinfer-zoo's own config validation)."""
    return wsinfer_executable().parent / "python"


def wsinfer_home() -> Path:
    """A HOME for WSInfer runs whose ``.wsinfer-zoo/wsinfer-zoo-registry.json`` lets its CLI start offline."""
    home = CACHE / "wsinfer-home"
    registry = home / ".wsinfer-zoo" / "wsinfer-zoo-registry.json"
    registry.parent.mkdir(parents=True, exist_ok=True)
    if not registry.is_file():
        registry.write_text(json.dumps(REGISTRY))
    return home


def _run(command: list[str], what: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        pytest.fail(f"could not {what}: {(done.stderr or done.stdout).strip()[-800:]}")
