"""Per-layer weight sizes in report.json, report.csv and ``tccc inspect --csv/--json``: raw
bytes and the stored/raw ratio.

Expected byte counts are hand-computed from the layer shapes (int8 OHWI weights + 16-byte
parameter records per output channel, specs/weights.md), never taken from tccc's own earlier
output.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from helpers.cli import run_cli

from tcc_compiler.cli.main import main
from tcc_compiler.errors import FormatError
from tcc_compiler.runtime.loaded import check_report


def _raw(o: int, per_channel_weights: int) -> int:
    """int8 OHWI weights + one 16-byte parameter record per output channel."""
    return o * per_channel_weights + 16 * o


def test_report_json_and_csv_carry_weight_raw_bytes(channel_folders, tmp_path):
    folder = channel_folders[4]["folder"]
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
    insp = tmp_path / "inspect.csv"
    assert main(["inspect", str(folder), "--csv", str(insp), "-q"]) == 0
    with open(insp, newline="") as f:
        irows = {r["name"]: r for r in csv.DictReader(f)}
    for name in (conv["name"], fc["name"]):
        assert rows[name]["weight_raw_bytes"] == irows[name]["weight_raw_bytes"]
        assert rows[name]["weight_ratio"] == irows[name]["weight_ratio"]


def test_check_report_accepts_and_types_weight_raw_bytes(channel_folders):
    path = channel_folders[4]["folder"] / "report.json"
    rep = json.loads(path.read_text())
    assert check_report(rep, Path(path)) is rep
    rep["layers"][0]["weight_raw_bytes"] = "208"
    with pytest.raises(FormatError, match=r"layers\[0\]\.weight_raw_bytes"):
        check_report(rep, Path(path))
    del rep["layers"][0]["weight_raw_bytes"]   # optional: older folders lack it
    assert check_report(rep, Path(path)) is rep


def test_inspect_csv_and_json_weight_columns(gap_folder, tmp_path, capsys):
    import csv
    import json

    from tcc_compiler.binfmt.weightfile import read_weight_file

    wf = read_weight_file((gap_folder / "quantized_network.bin").read_bytes())
    code, out, err = run_cli(["inspect", str(gap_folder), "--csv", str(tmp_path / "t.csv")], capsys)
    assert code == 0, err
    rows = list(csv.DictReader((tmp_path / "t.csv").open()))
    with_w = [r for r in rows if r["weight_raw_bytes"]]
    assert [r["op"] for r in with_w] == ["conv", "fc"]
    assert with_w == [r for r in rows if int(r["weight_bytes"]) > 0]
    for r, e in zip(with_w, wf.layers):  # raw = OHWI int8 weights + 16-byte params per channel
        o, k = (8, 9) if r["op"] == "conv" else (10, 8)
        assert int(r["weight_raw_bytes"]) == o * k + 16 * o
        assert float(r["weight_ratio"]) == pytest.approx(e.stored_bytes / e.raw_bytes, abs=1e-3)
    code, out, err = run_cli(["inspect", str(gap_folder), "--json"], capsys)
    js = json.loads(out)
    assert [x["name"] for x in js["quantized_network.bin"]["layers"]] == \
        [r["name"] for r in with_w]
    with pytest.raises(SystemExit):
        run_cli(["inspect", "--help"], capsys)
    helptext = capsys.readouterr().out
    assert all(k in helptext for k in ("npu_cmd.bin", "quantized_network.bin", "report"))

