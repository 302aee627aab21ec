"""A segmented folder's layers for ``--precision FILE``: ``tccc analyze`` lists every NPU
segment's layers (fed the float values ONNX Runtime gives their inputs), and a segmented
compile with a precision file or ``auto`` prints its one precision line and merges every
segment's choice into the top-level report."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

import tcc_compiler as tc
from tcc_compiler.cli.main import main
from tcc_compiler.ir.text import load_ir
from tcc_compiler.quant.params import dequantize_output
from tcc_compiler.quant.golden import run_golden
from tcc_compiler.runtime.check import sqnr_db


def _conv(name, x, y, cin, cout, rng):
    w = nh.from_array((rng.standard_normal((cout, cin, 3, 3)) * 0.2).astype(np.float32),
                      name + "_w")
    b = nh.from_array((rng.standard_normal(cout) * 0.1).astype(np.float32), name + "_b")
    return h.make_node("Conv", [x, w.name, b.name], [y], name=name, pads=[1] * 4), [w, b]


def _model() -> onnx.ModelProto:
    """Conv -> Relu -> LRN (host) -> Conv -> Relu -> Conv on 16x16x3: NPU, host, NPU."""
    rng = np.random.default_rng(0)
    n1, i1 = _conv("c1", "x", "a", 3, 8, rng)
    n2, i2 = _conv("c2", "m", "b", 8, 8, rng)
    n3, i3 = _conv("c3", "br", "y", 8, 4, rng)
    g = h.make_graph([n1, h.make_node("Relu", ["a"], ["ar"], name="r1"),
                      h.make_node("LRN", ["ar"], ["m"], name="lrn", size=3), n2,
                      h.make_node("Relu", ["b"], ["br"], name="r2"), n3],
                     "g", [h.make_tensor_value_info("x", T.FLOAT, [1, 3, 16, 16])],
                     [h.make_tensor_value_info("y", T.FLOAT, [1, 4, 16, 16])], i1 + i2 + i3)
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17)])


def _x(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((1, 3, 16, 16)).astype(np.float32)


@pytest.fixture(scope="module")
def segmented(tmp_path_factory):
    """(model path, folder, calibration .npy paths) of the model compiled int8."""
    root = tmp_path_factory.mktemp("seg_analyze")
    path = root / "m.onnx"
    onnx.save(_model(), path)
    calib = []
    for s in range(10, 16):
        calib.append(root / f"c{s}.npy")
        np.save(calib[-1], _x(s))
    folder = root / "out"
    assert main(["-q", "compile", str(path), "-o", str(folder), "--calib",
                 *map(str, calib)]) == 0
    return path, folder, calib


def test_analyze_lists_every_npu_segments_layers(segmented, tmp_path, capsys):
    path, folder, _ = segmented
    x = tmp_path / "x.npy"
    np.save(x, _x(3))
    out = tmp_path / "analysis.json"
    capsys.readouterr()
    assert main(["analyze", str(folder), str(path), str(x), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    rows = json.loads(out.read_text())["layers"]
    by_seg = {}
    for r in rows:
        by_seg.setdefault(r["segment"], set()).add(r["node"])
    manifest = json.loads((folder / "manifest.json").read_text())
    npu = [s["folder"] for s in manifest["segments"] if s["device"] == "npu"]
    assert len(npu) == 2 and sorted(by_seg) == sorted(npu)
    for seg in npu:   # every layer of every segment's quantized graph, named as compiled
        g = load_ir(folder / seg / "quantized.tir")
        assert by_seg[seg] == {n.name for n in g.nodes if n.op.value in ("conv", "fc")}
    assert all(any(ln.startswith(f"{seg} ") for ln in text.splitlines()) for seg in npu)
    # the first segment's output layer, accumulated from the model input, against ONNX
    # Runtime's float value of that tensor and the golden integer model run independently
    m = onnx.load(str(path))
    m.graph.output.extend([h.make_tensor_value_info("ar", T.FLOAT, None)])
    ref = ort.InferenceSession(m.SerializeToString(),
                               providers=["CPUExecutionProvider"]).run(["ar"], {"x": _x(3)})[0]
    g0 = load_ir(folder / npu[0] / "quantized.tir")
    gold = run_golden(g0, _x(3), keep=True)
    out_v = g0.outputs[0]
    q = dequantize_output(gold["int:" + out_v.name], out_v)
    row = next(r for r in rows if r["segment"] == npu[0] and r["output"] == out_v.name)
    assert row["accumulated"]["sqnr_db"] == pytest.approx(sqnr_db(ref, q), abs=1e-3)


def test_precision_file_from_analyze_names_prints_one_line(segmented, tmp_path, capsys):
    path, folder, calib = segmented
    g2 = load_ir(folder / "npu_2" / "quantized.tir")   # its names are analyze's (above)
    name = sorted(n.name for n in g2.nodes if n.op.value == "conv")[0]
    pfile = tmp_path / "p.json"
    pfile.write_text(json.dumps({"int16_weights": [name]}))
    capsys.readouterr()
    out = tmp_path / "out"
    assert main(["compile", str(path), "-o", str(out), "--calib", *map(str, calib),
                 "--precision", str(pfile)]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("precision")]
    assert lines == [lines[0]] and "0 layer output(s) int16, 1 layer(s) with int16 weights" \
        in lines[0] and "latency" in lines[0]
    report = json.loads((out / "report.json").read_text())
    p = report["precision"]
    assert p["mode"] == "file" and p["int16_weight_layers"] == [name]
    seg = next(s for s in report["segments"] if s.get("folder") == "npu_2")
    assert seg["precision"]["int16_weight_layers"] == [name]
    assert p["cost"]["layer_weight_bytes"]["added"] == \
        seg["precision"]["cost"]["layer_weight_bytes"]["added"] > 0
    m = tc.load(out)
    assert sqnr_db(ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
                   .run(None, {"x": _x(4)})[0], m.run(_x(4))) >= 25.0


def test_segments_auto_choices_merge_into_one_line(capsys):
    from tcc_compiler.cli.commands.compile import _print_precision
    from tcc_compiler.emit.segments import segments_precision

    def seg(folder, layers, weights, sqnr, ms, wbytes):
        cost = {"estimated_latency_ms": {"int8": 1.0, "mixed": 1.0 + ms, "added": ms},
                "dram_bytes_per_image": {"int8": 100, "mixed": 150, "added": 50},
                "layer_weight_bytes": {"int8": 10, "mixed": 10 + wbytes, "added": wbytes}}
        return {"folder": folder, "precision": {
            "mode": "auto", "goal_db": 0.5, "int16_layers": layers, "int16_tensors": layers,
            "int16_weight_layers": weights, "kept_int8": {}, "kept_int8_weights": {},
            "output_sqnr_db": {"int8": sqnr - 5, "chosen": sqnr, "all_int16": sqnr + 0.2},
            "cost": cost}}
    p = segments_precision([seg("npu_0", ["a", "b"], ["a"], 26.0, 0.25, 40),
                            {"folder": "npu_2"},
                            seg("npu_4", ["c"], [], 31.0, 0.5, 0)])
    assert p["int16_layers"] == ["a", "b", "c"] and p["int16_weight_layers"] == ["a"]
    assert p["cost"]["estimated_latency_ms"] == {"int8": 2.0, "mixed": 2.75, "added": 0.75}
    assert p["cost"]["layer_weight_bytes"]["added"] == 40
    assert sorted(p["output_sqnr_db"]) == ["npu_0", "npu_4"]
    assert segments_precision([{"folder": "npu_0"}]) is None
    _print_precision(p)
    line = capsys.readouterr().out.strip()
    assert line.startswith("precision auto: 3 layer output(s) int16, 1 layer(s) with int16 "
                           "weights, output SQNR npu_0 26.0 dB on the calibration inputs")
    assert "npu_4 31.0 dB" in line and "+40 B weights" in line and "\n" not in line


def test_auto_target_line_says_the_worst_input_and_target(capsys):
    """An ``auto`` choice with a target: the summary line names the worst calibration input
    and the target, and leaves out all-int16 when it was not evaluated (null)."""
    from tcc_compiler.cli.commands.compile import _print_precision

    _print_precision({"mode": "auto", "goal_db": 0.5, "target_db": 31.0, "int16_layers": [],
                      "int16_weight_layers": [], "kept_int8": {}, "kept_int8_weights": {},
                      "output_sqnr_db": {"int8": 33.2, "chosen": 33.2, "all_int16": None}})
    line = capsys.readouterr().out.strip()
    assert line == ("precision auto: 0 layer output(s) int16, 0 layer(s) with int16 weights, "
                    "output SQNR 33.2 dB on the worst calibration input (int8 33.2, target "
                    "31.0, else within 0.5 of all int16)")
