"""UX round 4: messages for models whose channel count photos cannot feed, and the per-layer raw
weight size in report.json / report.csv.

Expected messages are stated from the inputs given (which file, how many channels); expected
byte counts are hand-computed from the layer shapes (int8 OHWI weights + 16-byte parameter
records per output channel, specs/weights.md), never taken from tccc's own earlier output.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import conv_gap_fc_net_impl

from tcc_compiler.cli import main
from tcc_compiler.datasets.images import bundled_photos
from tcc_compiler.errors import FormatError
from tcc_compiler.runtime.loaded import check_report

HW = 16


def _one_line_error(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("tccc: error: ")
    return lines[0]


def _net(channels: int) -> onnx.ModelProto:
    """conv3x3 (C -> 4) + Relu -> GlobalAveragePool -> Flatten -> Gemm (5 logits)."""
    return conv_gap_fc_net_impl(channels, HW, seed=4, name=f"ux4c{channels}")


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    """A 4-channel and a 1-channel model, each compiled (calibrated on .npy arrays)."""
    root = tmp_path_factory.mktemp("ux4")
    out = {"root": root}
    for c in (4, 1):
        model = root / f"c{c}.onnx"
        onnx.save(_net(c), str(model))
        calib = root / f"calib{c}.npy"
        np.save(calib, np.random.default_rng(c).standard_normal((3, c, HW, HW))
                .astype(np.float32))
        folder = root / f"out{c}"
        assert main(["compile", str(model), "--calib", str(calib), "-o", str(folder), "-q"]) == 0
        out[c] = {"model": model, "calib": calib, "folder": folder}
    return out


# ---- 1. report --histograms without inputs on a 4-channel model -----------------------------

def test_report_histograms_default_photos_cannot_feed_4_channels(built, tmp_path, capsys):
    capsys.readouterr()
    code = main(["report", str(built[4]["folder"]), "-o", str(tmp_path / "r.html"),
                 "--histograms"])
    line = _one_line_error(capsys.readouterr().err)
    assert code != 0
    assert "4 channels" in line and "bundled photos" in line and ".npy" in line
    # the user passed no photo: none is named as if it were theirs
    assert not any(p.name in line for p in bundled_photos("calib"))
    assert not (tmp_path / "r.html").exists()


def test_report_histograms_npy_on_4_channels_works(built, tmp_path, capsys):
    out = tmp_path / "r.html"
    assert main(["report", str(built[4]["folder"]), "-o", str(out), "--histograms",
                 str(built[4]["calib"])]) == 0
    assert "Activation histograms" in out.read_text()


# ---- 2. eval names the file whose shape does not fit ----------------------------------------

def test_eval_shape_mismatch_names_the_file(built, tmp_path, capsys):
    photo = bundled_photos("eval")[0]
    (tmp_path / "cls0").mkdir()
    shutil.copy(photo, tmp_path / "cls0" / photo.name)
    capsys.readouterr()
    code = main(["eval", str(built[4]["folder"]), "--images", str(tmp_path)])
    line = _one_line_error(capsys.readouterr().err)
    assert code != 0
    assert photo.name in line
    assert f"(1, 3, {HW}, {HW})" in line and f"(1, 4, {HW}, {HW})" in line
    assert "1 or 3 channels" in line


# ---- 3. run --check with a model of another channel count -----------------------------------

def test_run_check_channel_mismatch_says_so(built, capsys):
    x = built["root"] / "x4.npy"
    np.save(x, np.zeros((1, 4, HW, HW), np.float32))
    capsys.readouterr()
    code = main(["run", str(built[4]["folder"]), str(x), "--check", str(built[1]["model"])])
    line = _one_line_error(capsys.readouterr().err)
    assert code != 0
    assert "channel mismatch" in line
    assert "takes 1, the compiled program's 4 channels" in line
    assert "cannot load" not in line
    assert built[1]["model"].name in line


# ---- 4. per-layer raw weight bytes in report.json and report.csv ----------------------------

def _raw(o: int, per_channel_weights: int) -> int:
    """int8 OHWI weights + one 16-byte parameter record per output channel."""
    return o * per_channel_weights + 16 * o


def test_report_json_and_csv_carry_weight_raw_bytes(built):
    folder = built[4]["folder"]
    rep = json.loads((folder / "report.json").read_text())
    by_op = {}
    for row in rep["layers"]:
        by_op.setdefault(row["op"], []).append(row)
    conv, = by_op["conv"]
    assert conv["weight_raw_bytes"] == _raw(4, 3 * 3 * 4)          # 208
    fc_rows = by_op.get("fc") or [r for r in by_op["conv"] if r is not conv]
    fc, = fc_rows
    assert fc["weight_raw_bytes"] == _raw(5, 4)                     # 100
    for row in rep["layers"]:
        if "weight_raw_bytes" not in row:
            assert row["weight_bytes"] == 0
    # the ratio is the file's stored bytes over raw; it agrees with tccc inspect --csv
    with open(folder / "report.csv", newline="") as f:
        rows = {r["name"]: r for r in csv.DictReader(f)}
    assert int(rows[conv["name"]]["weight_raw_bytes"]) == 208
    assert int(rows[fc["name"]]["weight_raw_bytes"]) == 100
    insp = built["root"] / "inspect.csv"
    assert main(["inspect", str(folder), "--csv", str(insp), "-q"]) == 0
    with open(insp, newline="") as f:
        irows = {r["name"]: r for r in csv.DictReader(f)}
    for name in (conv["name"], fc["name"]):
        assert rows[name]["weight_raw_bytes"] == irows[name]["weight_raw_bytes"]
        assert rows[name]["weight_ratio"] == irows[name]["weight_ratio"]


def test_check_report_accepts_and_types_weight_raw_bytes(built):
    path = built[4]["folder"] / "report.json"
    rep = json.loads(path.read_text())
    assert check_report(rep, Path(path)) is rep
    rep["layers"][0]["weight_raw_bytes"] = "208"
    with pytest.raises(FormatError, match=r"layers\[0\]\.weight_raw_bytes"):
        check_report(rep, Path(path))
    del rep["layers"][0]["weight_raw_bytes"]   # optional: older folders lack it
    assert check_report(rep, Path(path)) is rep
