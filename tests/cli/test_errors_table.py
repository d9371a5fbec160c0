"""ERRORS.md, row by row: every bad input gets its one line and its exit code, and never "internal error".

Each row of the table in ERRORS.md has an id; ``CASES`` below holds, under the same id, how to make that bad
input and the command line that meets it. The expected line and exit code are read from ERRORS.md itself, so
the table cannot drift from what pathotune prints (``…`` in a line stands for any text, such as a path).
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from pathotune_cli.cli.app import app

ROOT = Path(__file__).resolve().parents[2]
TABLE = ROOT / "ERRORS.md"
TUNE = ["tune", "--preset", "demo", "--backbone", "tiny-random", "--epochs", "1", "--precision", "fp32",
        "--set", "backbone.input_size=64", "--set", "train.batch_size=8"]


@dataclass
class Row:
    """One row of ERRORS.md."""

    id: str
    line: str
    exit: int

    @property
    def pattern(self) -> re.Pattern[str]:
        """The line as a regular expression: ``…`` matches anything."""
        return re.compile(".*?".join(re.escape(part) for part in self.line.split("…")) + "$")


def read_table() -> dict[str, Row]:
    """The rows of ERRORS.md's table: ``| id | input | command | `` line `` | exit |``."""
    rows: dict[str, Row] = {}
    for text in TABLE.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", text.strip())[1:-1]]
        if len(cells) != 5 or not re.fullmatch(r"`[a-z0-9-]+`", cells[0]):
            continue
        line = cells[3].removeprefix("``").removesuffix("``").strip().replace("\\|", "|")
        rows[cells[0].strip("`")] = Row(cells[0].strip("`"), line, int(cells[4]))
    return rows


@dataclass
class Ctx:
    """What a case needs: a scratch folder, a finished tiny run, a small slide, and monkeypatch."""

    tmp: Path
    run: Path
    slide: Path
    monkeypatch: pytest.MonkeyPatch

    @property
    def prompts(self) -> Path:
        return self.run / "prompts.safetensors"

    @property
    def tiles(self) -> Path:
        return self.run.parent / "tiles"

    def file(self, name: str, content: str | bytes = "x") -> Path:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        return path

    def tile_copy(self, name: str, classes: dict[str, int] | None = None) -> Path:
        """A copy of the run's tiles, ``classes`` mapping a folder name to how many of its tiles to keep."""
        folder = self.tmp / name
        for source in sorted(self.tiles.iterdir()):
            keep = (classes or {}).get(source.name, 4)
            if not keep:
                continue
            target = folder / source.name
            target.mkdir(parents=True)
            for tile in sorted(source.glob("*.png"))[:keep]:
                shutil.copy(tile, target / tile.name)
        return folder

    def bomb(self, folder: Path | None = None) -> Path:
        from testdata import forged_png

        where = folder if folder is not None else self.tmp
        where.mkdir(parents=True, exist_ok=True)
        return forged_png(where / "bomb.png", 100_000, 100_000)

    def task_yaml(self, classes: str) -> Path:
        return self.file("task.yaml", f"name: mytask\nclasses:\n{classes}")

    def fail_writes_under(self, folder: Path, code: int = errno.ENOSPC) -> None:
        """Files that ``files.atomic_write`` creates under ``folder`` write to /dev/full (``code`` ENOSPC) or
        cannot be created (other codes), as on a full disk, a read-only disk, or without permission."""
        import pathotune_cli.files as files

        real = os.open

        def fake(path: object, flags: int, mode: int = 0o777, *args: object, **kwargs: object) -> int:
            name = os.fspath(path)  # type: ignore[arg-type]
            if name.startswith(str(folder)) and flags & os.O_CREAT:
                if code != errno.ENOSPC:
                    raise OSError(code, os.strerror(code), name)
                if ".probe" not in name:
                    return real("/dev/full", os.O_WRONLY)
            return real(path, flags, mode, *args, **kwargs)  # type: ignore[arg-type]

        self.monkeypatch.setattr(files.os, "open", fake)


def _unfinished_run(c: Ctx) -> list[str]:
    out = c.tmp / "R"
    out.mkdir()
    (out / "run.json").write_text(json.dumps({"status": "failed", "error": "no space left on the device holding x"}))
    return [*TUNE, "--data", str(c.tiles), "--out", str(out)]


def _resume_with_other_settings(c: Ctx) -> list[str]:
    out = c.tmp / "R"
    shutil.copytree(c.run, out)
    return [*TUNE, "--data", str(c.tiles), "--out", str(out), "--resume", "--epochs", "3"]


def _flipped_byte(c: Ctx) -> list[str]:
    raw = bytearray(c.prompts.read_bytes())
    raw[raw.index(b"purple") if b"purple" in raw else 200] ^= 0x01
    return ["inspect", str(c.file("tampered.safetensors", bytes(raw)))]


def _other_backbone(c: Ctx) -> list[str]:
    from safetensors.torch import save_file

    from pathotune_cli.backbones import load_backbone
    from pathotune_cli.config import load_backbone_preset

    other = load_backbone(load_backbone_preset("tiny-random"))
    save_file({k: v * 1.01 for k, v in other.vit.state_dict().items()}, str(c.tmp / "other.safetensors"))
    return ["eval", str(c.prompts), "--data", str(c.tiles), "--weights", str(c.tmp / "other.safetensors")]


def _truncated_weights(c: Ctx) -> list[str]:
    import torch

    torch.save({"w": torch.zeros(64, 64)}, c.tmp / "w.bin")
    data = (c.tmp / "w.bin").read_bytes()
    return ["eval", str(c.prompts), "--data", str(c.tiles), "--weights",
            str(c.file("cut.bin", data[: len(data) // 2]))]


def _full_disk_tune(c: Ctx) -> list[str]:
    import safetensors.torch
    from safetensors import SafetensorError

    def full(*args: object, **kwargs: object) -> None:  # the words safetensors uses on a full disk
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    c.monkeypatch.setattr(safetensors.torch, "save_file", full)
    return [*TUNE, "--data", str(c.tiles), "--out", str(c.tmp / "R")]


def _full_disk_predict(c: Ctx) -> list[str]:
    import pathotune_cli.wsi.thumbnail as thumbnail

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    c.monkeypatch.setattr(thumbnail, "save_png", full)
    return ["predict", str(c.prompts), str(c.slide), "--out", str(c.tmp / "P")]


def _full_disk(command: Callable[[Ctx], list[str]], folder: str) -> Callable[[Ctx], list[str]]:
    def case(c: Ctx) -> list[str]:
        c.fail_writes_under(c.tmp / folder)
        return command(c)

    return case


def _refused_location(code: int, command: Callable[[Ctx], list[str]], folder: str) -> Callable[[Ctx], list[str]]:
    def case(c: Ctx) -> list[str]:
        c.fail_writes_under(c.tmp / folder, code)
        return command(c)

    return case


def _float_tile(folder: Path) -> Path:
    Image.fromarray(np.zeros((64, 64), np.float32)).save(folder / "measured.tif")
    return folder / "measured.tif"


def _blank_png(path: Path) -> Path:
    Image.fromarray(np.full((64, 64, 3), 245, np.uint8)).save(path)
    return path


def _dark_tiles(folder: Path) -> Path:
    """Tiles of a dark, fluorescence-like image: black with a few dim red nuclei."""
    rng = np.random.default_rng(0)
    for name in ("tumor", "stroma"):
        (folder / name).mkdir(parents=True)
        for i in range(4):
            tile = np.zeros((64, 64, 3), np.uint8)
            tile[..., 0] = (rng.random((64, 64)) > 0.8) * rng.integers(40, 120, (64, 64))
            Image.fromarray(tile).save(folder / name / f"{i}.png")
    return folder


def _renamed(folder: Path, name: str) -> Path:
    return folder.rename(folder.with_name(name))


def _tune_on(c: Ctx, made: object, data: Path | None = None) -> list[str]:
    """``tune`` on the copy of the tiles in ``c.tmp / "D"`` (which ``made`` altered)."""
    return [*TUNE, "--data", str(data if data is not None else c.tmp / "D"), "--out", str(c.tmp / "R")]


_LABELS_HEADER = "slide,x,y,label,patch_size_level0,tile_size,target_mpp,level,read_size"


def _csv(c: Ctx, text: str) -> Path:
    return c.file("data.csv", text)


def _coords_of_another_scale(c: Ctx) -> list[str]:
    from pathotune_cli.runs.slide_level.demo import write_planted_slides
    from pathotune_cli.runs.tile import TileConfig, tile_run

    slide = write_planted_slides(c.tmp / "slides", seed=1, count=1, size=(448, 448))[0]
    tile_run(TileConfig(slides=(slide,), out=c.tmp / "T", target_mpp=1.0, tile_size=112))
    return ["predict", str(c.prompts), str(slide), "--coords", str(c.tmp / "T"), "--out", str(c.tmp / "P")]


def _folder_of_another_model(c: Ctx) -> list[str]:
    record = {"version": 1, "key": {"input": {}, "settings": {"prompts_sha256": "0" * 64}}, "row": {"status": "ok"}}
    c.file("P/x.predict.json", json.dumps(record))
    return ["predict", str(c.prompts), str(c.slide), "--out", str(c.tmp / "P")]


def _folder_of_another_evaluation(c: Ctx) -> list[str]:
    c.file("E/metrics.json", json.dumps({"prompts": "/elsewhere/other.safetensors", "data": "/elsewhere/tiles"}))
    return ["eval", str(c.prompts), "--data", str(c.tiles), "--out", str(c.tmp / "E"), "--bootstrap", "0"]


CASES: dict[str, Callable[[Ctx], list[str]]] = {
    # usage: one line naming the option, the value and what is allowed
    "epochs-zero": lambda c: [*TUNE, "--data", str(c.tiles), "--epochs", "0"],
    "lr-negative": lambda c: [*TUNE, "--data", str(c.tiles), "--lr", "-1"],
    "lr-not-a-number": lambda c: [*TUNE, "--data", str(c.tiles), "--lr", "fast"],
    "batch-size-zero": lambda c: ["eval", str(c.prompts), "--data", str(c.tiles), "--batch-size", "0"],
    "default-mpp-zero": lambda c: ["tile", str(c.slide), "--default-mpp", "0", "--out", str(c.tmp / "T")],
    "mpp-zero": lambda c: ["tile", str(c.slide), "--mpp", "0", "--out", str(c.tmp / "T")],
    "tile-size-zero": lambda c: ["tile", str(c.slide), "--tile-size", "0", "--out", str(c.tmp / "T")],
    "tile-size-huge": lambda c: ["tile", str(c.slide), "--tile-size", "10000", "--out", str(c.tmp / "T")],
    "min-tissue-above-one": lambda c: ["tile", str(c.slide), "--min-tissue", "2", "--out", str(c.tmp / "T")],
    "save-tiles-unknown": lambda c: ["tile", str(c.slide), "--save-tiles", "gif", "--out", str(c.tmp / "T")],
    "tile-no-slides": lambda c: ["tile", "--out", str(c.tmp / "T")],
    "mpp-and-mag": lambda c: ["tile", str(c.slide), "--mpp", "0.5", "--mag", "20", "--out", str(c.tmp / "T")],
    "overlap-too-large": lambda c: ["tile", str(c.slide), "--overlap", "224", "--out", str(c.tmp / "T")],
    "unknown-command": lambda c: ["frobnicate"],
    "misspelt-command": lambda c: ["tiel"],
    "unknown-option": lambda c: ["tile", str(c.slide), "--colour", "red"],
    "option-without-value": lambda c: ["tile", str(c.slide), "--mpp"],
    "missing-argument": lambda c: ["presets", "show"],
    "resume-and-force": lambda c: [*TUNE, "--data", str(c.tiles), "--out", str(c.tmp / "R"), "--resume", "--force"],
    "report-not-a-run": lambda c: ["report", str(c.file("notes/readme.txt").parent)],
    "export-unknown-format": lambda c: ["export", str(c.prompts), "--format", "tflite"],
    # presets and --set
    "unknown-task": lambda c: [*TUNE, "--data", str(c.tiles), "--preset", "kather2017"],
    "unknown-backbone": lambda c: [*TUNE, "--data", str(c.tiles), "--backbone", "tiny-randm"],
    "set-unknown-key": lambda c: [*TUNE, "--data", str(c.tiles), "--set", "train.lrr=1"],
    "set-not-key-value": lambda c: [*TUNE, "--data", str(c.tiles), "--set", "train.lr"],
    "set-value-out-of-range": lambda c: [*TUNE, "--data", str(c.tiles), "--set", "train.val_fraction=1.5"],
    "set-value-infinite": lambda c: [*TUNE, "--data", str(c.tiles), "--set", "train.weight_decay=.inf"],
    "zeroshot-without-text-tower": lambda c: [*TUNE, "--data", str(c.tiles), "--method", "zeroshot"],
    "lora-rank-zero": lambda c: [*TUNE, "--data", str(c.tiles), "--method", "lora", "--set", "lora.rank=0"],
    "lora-on-training-free": lambda c: [*TUNE, "--data", str(c.tiles), "--method", "knn", "--set", "lora.rank=8"],
    "lora-on-open-clip": lambda c: [*TUNE, "--data", str(c.tiles), "--backbone", "clip-vit-b16", "--method", "lora"],
    "sweep-not-key-values": lambda c: [*TUNE, "--data", str(c.tiles), "--sweep", "train.lr"],
    "kernels-weights-other-precision": lambda c: [*TUNE, "--data", str(c.tiles), "--set", "runtime.kernels=bf16"],
    "task-template-unknown-field": lambda c: ["presets", "show", str(c.file("task.yaml", (
        "template: 'a patch of {organ}'\nclasses:\n  - {name: a, description: x}\n  - {name: b, description: y}\n"
    )))],
    "duplicate-class-name": lambda c: ["presets", "show", str(c.task_yaml(
        "  - {name: TUMOR, description: a}\n  - {name: stroma, description: b}\n  - {name: Tumor, description: c}\n"))],
    "duplicate-alias": lambda c: ["presets", "show", str(c.task_yaml(
        "  - {name: TUMOR, description: a, aliases: [tumour]}\n  - {name: stroma, description: b, aliases: [Tumour]}\n"
    ))],
    "task-yaml-syntax": lambda c: ["presets", "show", str(c.file("broken.yaml", "classes: [a, b\n"))],
    "backbone-yaml-family": lambda c: ["presets", "show", str(c.file("bb.yaml", "family: keras\nmodel: x\nwidth: 8"))],
    # training and evaluation data
    "data-missing": lambda c: [*TUNE, "--data", str(c.tmp / "nowhere")],
    "val-data-missing": lambda c: [*TUNE, "--data", str(c.tiles), "--val-data", str(c.tmp / "nowhere"),
                                   "--out", str(c.tmp / "R")],
    "csv-without-label-column": lambda c: [*TUNE, "--data", str(_csv(c, "path,class\na.png,tumor\n"))],
    "csv-unknown-label": lambda c: [*TUNE, "--data", str(_csv(c, "path,label\na.png,cancer\n"))],
    "csv-missing-image": lambda c: [*TUNE, "--data", str(_csv(c, "path,label\nmissing.png,tumor\n"))],
    "labels-csv-unknown-label": lambda c: [*TUNE, "--data", str(c.file("labels.csv", f"{_LABELS_HEADER}\n"
                                                                    f"{c.slide},0,0,cancer,224,224,0.5,0,224\n"))],
    "labels-csv-missing-slide": lambda c: [*TUNE, "--data", str(c.file("labels.csv", f"{_LABELS_HEADER}\n"
                                                                    "gone.svs,0,0,tumor,224,224,0.5,0,224\n"))],
    "csv-not-utf8": lambda c: [*TUNE, "--data", str(c.file("data.csv", b"path,label\n\xff\xfe.png,tumor\n"))],
    "unknown-class-folder": lambda c: _tune_on(c, _renamed(c.tile_copy("D") / "tumor", "cancer")),
    "one-class-only": lambda c: [*TUNE, "--data", str(c.tile_copy("D", {"stroma": 0, "lymphocytes": 0, "adipose": 0})),
                                 "--out", str(c.tmp / "R")],
    "corrupt-tile": lambda c: _tune_on(c, (c.tile_copy("D"), c.file("D/tumor/broken.png", b"\x89PNG\r\n\x1a\nnot"))),
    "float-tile": lambda c: _tune_on(c, _float_tile(c.tile_copy("D") / "tumor")),
    "broken-link-tile": lambda c: _tune_on(c, (c.tile_copy("D") / "tumor" / "gone.png").symlink_to(c.tmp / "gone")),
    "bomb-in-tune-data": lambda c: _tune_on(c, c.bomb(c.tile_copy("D") / "tumor")),
    "bomb-in-eval-data": lambda c: ["eval", str(c.prompts), "--data", str(c.bomb(c.tile_copy("D") / "stroma")
                                                                           .parents[1]), "--out", str(c.tmp / "E")],
    "bomb-in-predict-images": lambda c: ["predict", str(c.prompts), str(c.bomb()), "--out", str(c.tmp / "P")],
    "bomb-in-export-check-data": lambda c: ["export", str(c.prompts), "--format", "torchscript", "--out",
                                            str(c.tmp / "m.ts"), "--check-data", str(c.bomb(c.tmp / "C").parent)],
    "bomb-as-a-slide": lambda c: ["tile", str(c.bomb()), "--out", str(c.tmp / "T")],
    "unsupported-format": lambda c: ["tile", str(c.file("biopsy.vsi", b"II*\x00" + bytes(64))), "--out",
                                     str(c.tmp / "T")],
    "damaged-beyond-limit": lambda c: _damaged_slide(c),
    "shots-above-a-class": lambda c: [*TUNE, "--data", str(c.tile_copy("D")), "--shots", "100", "--out",
                                      str(c.tmp / "R")],
    "two-folders-one-class": lambda c: _tune_on(c, shutil.copytree(c.tile_copy("D") / "tumor", c.tmp / "D" / "Tumor")),
    "stain-unknown": lambda c: [*TUNE, "--data", str(c.tiles), "--stain", "vahadane"],
    "stain-reference-missing": lambda c: [*TUNE, "--data", str(c.tiles), "--stain", "macenko",
                                          "--stain-reference", str(c.tmp / "nowhere.png")],
    "stain-reference-blank": lambda c: [*TUNE, "--data", str(c.tiles), "--out", str(c.tmp / "R"), "--stain", "macenko",
                                        "--stain-reference", str(_blank_png(c.tmp / "glass.png"))],
    "eval-wrong-modality": lambda c: ["eval", str(c.prompts), "--data", str(_dark_tiles(c.tmp / "D")), "--out",
                                      str(c.tmp / "E"), "--bootstrap", "0"],
    "eval-on-training-tiles": lambda c: ["eval", str(c.prompts), "--data", str(c.tiles), "--out", str(c.tmp / "E"),
                                         "--bootstrap", "0"],
    # prompt files and weights
    "prompts-missing": lambda c: ["eval", str(c.tmp / "nowhere.safetensors"), "--data", str(c.tiles)],
    "prompts-truncated": lambda c: ["inspect", str(c.file("cut.safetensors", c.prompts.read_bytes()[:5000]))],
    "prompts-tampered": _flipped_byte,
    "prompts-not-pathotune": lambda c: ["inspect", str(c.file("plain.safetensors", _plain_safetensors()))],
    "no-prompt-file": lambda c: ["predict", str(c.slide), "--out", str(c.tmp / "P")],
    "prompts-of-another-backbone": _other_backbone,
    "weights-truncated": _truncated_weights,
    # output locations: the OSError family
    "out-is-a-file": lambda c: [*TUNE, "--data", str(c.tiles), "--out", str(c.file("afile"))],
    "out-parent-is-a-file": lambda c: ["eval", str(c.prompts), "--data", str(c.tiles), "--out",
                                       str(c.file("afile") / "E")],
    "out-read-only": _refused_location(errno.EROFS, lambda c: ["predict", str(c.prompts), str(c.slide), "--out",
                                                                str(c.tmp / "ro" / "P")], "ro"),
    "out-permission-denied": _refused_location(errno.EACCES, lambda c: ["tile", str(c.slide), "--out",
                                                                         str(c.tmp / "locked" / "T")], "locked"),
    "out-cannot-be-created": lambda c: ["eval", str(c.prompts), "--data", str(c.tiles), "--out", "/proc/pathotune"],
    "export-out-is-a-folder": lambda c: ["export", str(c.prompts), "--out", str(c.tmp)],
    "export-out-parent-is-a-file": lambda c: ["export", str(c.prompts), "--out", str(c.file("afile") / "m.onnx")],
    "full-disk-tune": _full_disk_tune,
    "full-disk-eval": _full_disk(lambda c: ["eval", str(c.prompts), "--data", str(c.tiles), "--out",
                                            str(c.tmp / "full" / "E"), "--bootstrap", "0"], "full"),
    "full-disk-export": _full_disk(lambda c: ["export", str(c.prompts), "--format", "torchscript", "--out",
                                              str(c.tmp / "full" / "m.ts")], "full"),
    "full-disk-predict": _full_disk_predict,
    "training-diverged": lambda c: [*TUNE, "--data", str(c.tiles), "--lr", "1e30", "--out", str(c.tmp / "R")],
    # slides
    "array-more-tasks-than-slides": lambda c: (
        c.monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3"), c.monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "10"),
        ["tile", str(c.slide), "--out", str(c.tmp / "T")])[-1],
    "slide-missing": lambda c: ["tile", str(c.tmp / "absent.svs"), "--out", str(c.tmp / "T")],
    "coords-of-another-scale": _coords_of_another_scale,
    "predict-folder-of-another-model": _folder_of_another_model,
    "eval-folder-of-another-evaluation": _folder_of_another_evaluation,
    "predict-input-missing": lambda c: ["predict", str(c.prompts), str(c.tmp / "absent.svs"), "--out",
                                        str(c.tmp / "P")],
    "tissue-geojson-invalid": lambda c: ["tile", str(c.slide), "--tissue-geojson",
                                         str(c.file("t.geojson", '{"type": "Feature"}')), "--out", str(c.tmp / "T")],
    "tissue-geojson-missing": lambda c: ["predict", str(c.prompts), str(c.slide), "--tissue-geojson",
                                         str(c.tmp / "none.geojson"), "--out", str(c.tmp / "P")],
    "slides-csv-no-slide-column": lambda c: ["tile", "--slides-csv", str(c.file("s.csv", "file,mpp\na.svs,0.5\n")),
                                             "--out", str(c.tmp / "T")],
    "slides-csv-bad-mpp": lambda c: ["tile", "--slides-csv", str(c.file("s.csv", f"slide,mpp\n{c.slide},fine\n")),
                                     "--out", str(c.tmp / "T")],
    "coords-not-hdf5": lambda c: ["predict", str(c.prompts), str(c.slide), "--coords", str(c.file("c.h5", "text")),
                                  "--out", str(c.tmp / "P")],
    "heatmap-class-unknown": lambda c: ["predict", str(c.prompts), str(c.slide), "--heatmap-class", "necrosis",
                                        "--out", str(c.tmp / "P")],
    # run folders
    "finished-run-rerun": lambda c: [*TUNE, "--data", str(c.tiles), "--out", str(c.run)],
    "unfinished-run-rerun": _unfinished_run,
    "resume-with-other-settings": _resume_with_other_settings,
}


def _plain_safetensors() -> bytes:
    import torch
    from safetensors.torch import save

    return save({"w": torch.zeros(2)})


def _damaged_slide(c: Ctx) -> list[str]:
    from slide_files import cmu_rgb, damaged_pyramid

    slide = damaged_pyramid(c.tmp / "damaged.tiff", cmu_rgb(), [5, 6, 9, 10])
    return ["tile", str(slide), "--save-tiles", "jpg", "--out", str(c.tmp / "T")]


ROWS = read_table()


def test_the_table_and_the_cases_name_the_same_inputs() -> None:
    assert len(ROWS) >= 40
    assert sorted(set(ROWS) - set(CASES)) == [] and sorted(set(CASES) - set(ROWS)) == []


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_bad_input_gets_its_line_and_exit_code(
    case: str, tmp_path: Path, tiny_run: Path, data_file, monkeypatch: pytest.MonkeyPatch
) -> None:
    if case not in ROWS:
        pytest.fail(f"{case} is not in ERRORS.md")
    row = ROWS[case]
    if case == "out-cannot-be-created" and not Path("/proc/self").exists():
        pytest.skip("needs Linux's /proc")
    ctx = Ctx(tmp_path, tiny_run, data_file("slides/fixtures/small.svs"), monkeypatch)
    args = CASES[case](ctx)
    monkeypatch.chdir(tmp_path)  # a run that gets as far as its default --out (runs/tune) writes here, not in the repo
    result = CliRunner().invoke(app, args)
    output = result.output
    assert "Traceback" not in output and "internal error" not in output and "╭" not in output, output
    kind = row.line.split(":", 1)[0] + ":"
    found = [line.strip() for line in output.splitlines() if line.strip().startswith(kind)]
    errors = [line for line in output.splitlines() if line.strip().startswith("error:")]
    assert len(errors) <= 1, output
    assert any(row.pattern.match(line) for line in found), f"{case}: expected\n  {row.line}\ngot\n{output}"
    assert result.exit_code == row.exit, f"{case}: exit {result.exit_code}, expected {row.exit}\n{output}"
