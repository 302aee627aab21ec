"""Host segments anywhere in the graph: what the NPU cannot run runs in ONNX Runtime between
NPU segments. Each model is checked against ONNX Runtime on the whole float model (SQNR) and
every NPU segment bit-exactly against the golden integer model."""

from __future__ import annotations

import importlib.util
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
from tcc_compiler.errors import UnsupportedError
from tcc_compiler.frontend.onnx_import import prepare_onnx
from tcc_compiler.frontend.segments import plan_segments
from tcc_compiler.runtime.check import Checker, sqnr_db


def _conv(name, x, y, cin, cout, rng, k=3):
    w = nh.from_array((rng.standard_normal((cout, cin, k, k)) * 0.2).astype(np.float32),
                      name + "_w")
    b = nh.from_array((rng.standard_normal(cout) * 0.1).astype(np.float32), name + "_b")
    return h.make_node("Conv", [x, w.name, b.name], [y], name=name, pads=[k // 2] * 4), [w, b]


def _model(mid, tail=(), out="y", opsets=(("", 17),), consts=None,
           size=16) -> onnx.ModelProto:
    """Conv -> Relu -> ``mid`` (reads 'ar', writes 'm') -> Conv ('y') -> ``tail``, on a
    ``size`` x ``size`` input; ``consts``: {name: int64 values} initializers ``mid`` reads."""
    rng = np.random.default_rng(0)
    n1, i1 = _conv("c1", "x", "a", 3, 8, rng)
    n2, i2 = _conv("c2", "m", "y", 8, 4, rng)
    i3 = [nh.from_array(np.array(v, np.int64), k) for k, v in (consts or {}).items()]
    g = h.make_graph([n1, h.make_node("Relu", ["a"], ["ar"], name="r1"), *mid, n2, *tail],
                     "g", [h.make_tensor_value_info("x", T.FLOAT, [1, 3, size, size])],
                     [h.make_tensor_value_info(out, T.FLOAT, [1, 4, size, size])],
                     i1 + i2 + i3)
    return h.make_model(g, opset_imports=[h.make_opsetid(d, v) for d, v in opsets])


MODELS = {
    "lrn": _model([h.make_node("LRN", ["ar"], ["m"], name="lrn", size=3)]),
    "softmax": _model([h.make_node("Softmax", ["ar"], ["m"], name="sm", axis=1)]),
    "transpose": _model([h.make_node("Transpose", ["ar"], ["t"], name="t1", perm=[0, 2, 3, 1]),
                         h.make_node("Transpose", ["t"], ["m"], name="t2",
                                     perm=[0, 3, 1, 2])]),
}

#: A host segment slicing 'ar' twice (no boundary prefix: a moved value with two readers)
#: and joining the slices: at 64x64 the int8 hand-off is the cheaper form.
SLICES = _model([h.make_node("Transpose", ["ar"], ["t"], name="t1", perm=[0, 2, 3, 1]),
                 h.make_node("Slice", ["t", "s0", "s4", "ax"], ["lo"], name="sl0"),
                 h.make_node("Slice", ["t", "s4", "s8", "ax"], ["hi"], name="sl1"),
                 h.make_node("Concat", ["hi", "lo"], ["c"], name="cat", axis=3),
                 h.make_node("Transpose", ["c"], ["m"], name="t2", perm=[0, 3, 1, 2])],
                consts={"s0": [0], "s4": [4], "s8": [8], "ax": [3]}, size=64)


def _x(seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((1, 3, 16, 16)).astype(np.float32)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """{name: (model path, output folder)} compiled through the API."""
    out = {}
    root = tmp_path_factory.mktemp("hostseg")
    calib = [_x(s) for s in range(10, 18)]
    for name, model in MODELS.items():
        path = root / f"{name}.onnx"
        onnx.save(model, path)
        folder = root / f"out_{name}"
        tc.compile(path, calibration=calib).save(folder)
        out[name] = (path, folder)
    return out


@pytest.mark.parametrize("name", sorted(MODELS))
def test_segmented_model_matches_onnx_runtime_and_golden(compiled, name):
    path, folder = compiled[name]
    m = tc.load(folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["layout"] == "segmented"
    assert [s["device"] for s in manifest["segments"]] == ["npu", "host", "npu"]
    assert (folder / "npu_0" / "npu_cmd.bin").is_file() and (folder / "host_1.onnx").is_file()
    assert not (folder / "npu_cmd.bin").exists()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    checker = Checker(m.program, path)
    for seed in (1, 2, 3):
        x = _x(seed)
        res = m.program.run(x)
        ref = sess.run(None, {"x": x})[0]
        assert sqnr_db(ref, m.run(x)) >= 25.0
        assert checker.check(x, res)["bit_exact"]


def test_boundary_costs_in_report(compiled):
    _, folder = compiled["lrn"]
    report = json.loads((folder / "report.json").read_text())
    kinds = sorted((b["tensor"], b["kind"]) for b in report["boundaries"])
    assert kinds == [("ar", "dequantize"), ("m", "quantize"), ("x", "pixels"),
                     ("y", "dequantize")]
    ar = next(b for b in report["boundaries"] if b["tensor"] == "ar")
    assert ar["npu_bytes"] == 8 * 16 * 16 and ar["float_bytes"] == 4 * 8 * 16 * 16
    x = next(b for b in report["boundaries"] if b["tensor"] == "x")   # 8-bit RGB pixels
    assert x["bytes"] == 2 * 3 * 16 * 16 and x["float_bytes"] == 0
    assert ar["estimated_host_ms"] > 0
    assert report["placement"] == {"npu_nodes": 3, "host_nodes": 1, "npu_segments": 2,
                                   "host_segments": 1}
    assert report["estimated_total_ms"] > report["estimated_latency_ms"]


def test_bias_correction_recorded_at_the_top_level(compiled):
    """The top-level manifest's calibration.bias_correction (specs/manifest.md: "as in the
    single-program manifest") is true when any NPU segment's biases were corrected, and the
    report's NPU segment rows carry each segment's bias_correction record."""
    _, folder = compiled["lrn"]
    manifest = json.loads((folder / "manifest.json").read_text())
    report = json.loads((folder / "report.json").read_text())
    subs = [json.loads((folder / s["folder"] / "manifest.json").read_text())
            for s in manifest["segments"] if s["device"] == "npu"]
    applied = [m["calibration"]["bias_correction"] for m in subs]
    assert manifest["calibration"]["bias_correction"] is any(applied)
    rows = [r for r in report["segments"] if r["device"] == "npu"]
    assert [r["bias_correction"]["applied"] for r in rows] == applied
    assert all(r["bias_correction"]["mode"] == "auto" for r in rows)


def test_first_move_of_an_npu_output_is_made_by_the_boundary(compiled):
    """The transpose model's host segment moves 'ar' (Transpose t1, then t2 making the
    segment's output): t1 is its boundary prefix, its output written in place by the
    dequantization; only t2 is a host node."""
    from tcc_compiler.frontend.host_prefix import PREFIX_KEY

    _, folder = compiled["transpose"]
    host = onnx.load(str(folder / "host_1.onnx"))
    assert {p.key: p.value for p in host.metadata_props}[PREFIX_KEY] == "1"
    assert [n.name for n in host.graph.node] == ["t1", "t2"]
    report = json.loads((folder / "report.json").read_text())
    ar = next(b for b in report["boundaries"] if b["tensor"] == "ar")
    assert ar["kind"] == "dequantize" and ar["bytes"] == 5 * 2048
    host = report["host_model"]   # ar's bytes; the one gather call's fixed cost on its own
    assert ar["estimated_host_ms"] == pytest.approx(5 * 2048 / host["bandwidth_bytes_per_s"]
                                                    * 1e3)
    gather = next(b for b in report["boundaries"] if b["kind"] == "gather")
    assert gather["tensor"] == "t" and gather["bytes"] == 0
    assert gather["estimated_host_ms"] == pytest.approx(host["node_overhead_ns"] * 1e-6)
    row = next(r for r in report["segments"] if r["device"] == "host")
    assert row["ops"] == {"Transpose": 1} and row["bytes"] == 8 * 2048


def test_host_moving_an_npu_output_twice_takes_it_as_int8(tmp_path):
    """:data:`SLICES`: the host takes the NPU's int8 values, moves them in int8 and
    dequantizes once at the end; the boundary is an int8 reorder; runs match ONNX Runtime
    and the golden model, and the --ort export (QuantizeLinear feeding the host nodes)
    matches ``tccc run`` bit for bit."""
    from tcc_compiler.runtime import load_program

    path, folder = tmp_path / "slices.onnx", tmp_path / "out"
    onnx.save(SLICES, path)
    rng = np.random.default_rng(3)
    calib = [rng.standard_normal((1, 3, 64, 64)).astype(np.float32) for _ in range(4)]
    tc.compile(path, calibration=calib).save(folder)
    x = rng.standard_normal((1, 3, 64, 64)).astype(np.float32)
    prog = load_program(folder)
    res = prog.run(x)
    ref = ort.InferenceSession(SLICES.SerializeToString()).run(None, {"x": x})[0]
    assert sqnr_db(ref, prog.final_output(res)) >= 25.0
    assert Checker(prog, str(path)).check(x, res)["bit_exact"]
    if importlib.util.find_spec("onnxruntime_extensions") is not None:
        from tcc_compiler.runtime.ort_ops import session_options

        out = tmp_path / "npu.onnx"
        assert main(["export-onnx", str(folder), "--ort", "-o", str(out)]) == 0
        sess = ort.InferenceSession(str(out), session_options(str(out)))
        assert np.array_equal(sess.run(None, {"x": x})[0], prog.final_output(res))
    host = onnx.load(str(folder / "host_1.onnx"))
    assert host.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.INT8
    assert [n.op_type for n in host.graph.node][-1] == "DequantizeLinear"
    report = json.loads((folder / "report.json").read_text())
    ar = next(b for b in report["boundaries"] if b["tensor"] == "ar")
    assert ar["kind"] == "int8" and ar["float_bytes"] == 0
    assert ar["bytes"] == 2 * ar["npu_bytes"] == 2 * 8 * 64 * 64
    row = next(r for r in report["segments"] if r["device"] == "host")
    assert row["ops"] == {"Transpose": 2, "Slice": 2, "Concat": 1, "DequantizeLinear": 1}


def test_strict_refuses_and_placement_agrees(tmp_path):
    path = tmp_path / "lrn.onnx"
    onnx.save(MODELS["lrn"], path)
    with pytest.raises(UnsupportedError, match="lrn"):
        tc.compile(path, strict=True, calibration=[_x()])
    strict = {p.node: p.device for p in tc.partition(path, strict=True)}
    assert strict["lrn"] == "unsupported"
    loose = {p.node: p.device for p in tc.partition(path)}
    assert loose == {"c1": "npu", "r1": "npu", "lrn": "host", "c2": "npu"}


def test_op_onnx_runtime_cannot_run_is_unsupported(tmp_path, capsys):
    model = _model([h.make_node("Mystery", ["ar"], ["m"], name="odd", domain="example.org")],
                   opsets=(("", 17), ("example.org", 1)))
    path = tmp_path / "odd.onnx"
    onnx.save(model, path)
    places = {p.node: p.device for p in tc.partition(path)}
    assert places["odd"] == "unsupported"
    with pytest.raises(UnsupportedError, match="odd"):
        tc.compile(path, calibration=[_x()])
    assert main(["ops", str(path)]) == 2
    assert "odd" in capsys.readouterr().err


def test_npu_segment_reads_a_host_output_and_an_earlier_npu_output():
    """Conv A -> LRN -> Conv B -> Add(B, A): the Add stays on the NPU, its segment reading
    the LRN's output and A (tests/segmenting/test_multi_input.py runs such a model)."""
    rng = np.random.default_rng(0)
    n1, i1 = _conv("c1", "x", "a", 3, 8, rng)
    n2, i2 = _conv("c2", "m", "b", 8, 8, rng)
    g = h.make_graph([n1, h.make_node("LRN", ["a"], ["m"], name="lrn", size=3), n2,
                      h.make_node("Add", ["b", "a"], ["y"], name="add")], "g",
                     [h.make_tensor_value_info("x", T.FLOAT, [1, 3, 8, 8])],
                     [h.make_tensor_value_info("y", T.FLOAT, None)], i1 + i2)
    prepared = prepare_onnx(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]))
    segs, host = plan_segments(prepared.proto, {1})
    assert host == {1}
    assert [(s.device, s.nodes) for s in segs] == [("npu", (0,)), ("host", (1,)),
                                                   ("npu", (2, 3))]
    assert segs[2].inputs == ("m", "a") and segs[0].outputs == ("a",)


def test_npu_input_of_another_rank_moves_its_reader_to_host():
    """A Flatten on the host hands a rank-2 tensor on: the Add reading it (with an NPU
    output) cannot run in an NPU program, which takes rank-4 maps only."""
    rng = np.random.default_rng(0)
    n1, i1 = _conv("c1", "x", "a", 3, 8, rng)
    g = h.make_graph([n1, h.make_node("Flatten", ["a"], ["f"], name="fl"),
                      h.make_node("Flatten", ["a"], ["f2"], name="fl2"),
                      h.make_node("Add", ["f", "f2"], ["y"], name="add")], "g",
                     [h.make_tensor_value_info("x", T.FLOAT, [1, 3, 8, 8])],
                     [h.make_tensor_value_info("y", T.FLOAT, None)], i1)
    prepared = prepare_onnx(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]))
    segs, host = plan_segments(prepared.proto, {1, 2})
    assert host == {1, 2, 3}
    assert [s.device for s in segs] == ["npu", "host"]


def test_host_node_runs_in_the_last_host_stage_before_its_readers():
    """Conv A -> LRN -> Conv B, and Reshape(A), Reshape(B) joined by a Concat: Reshape(A) is
    ready after the first NPU segment but only the Concat reads it, so it runs in the last
    host segment with the Concat (the boundary conversion can make the moves there), not in
    the LRN's."""
    rng = np.random.default_rng(0)
    n1, i1 = _conv("c1", "x", "a", 3, 8, rng)
    n2, i2 = _conv("c2", "m", "b", 8, 8, rng)
    shp = h.make_tensor("shp", T.INT64, [2], [1, -1])
    g = h.make_graph([n1, h.make_node("Reshape", ["a", "shp"], ["ra"], name="ra"),
                      h.make_node("LRN", ["a"], ["m"], name="lrn", size=3), n2,
                      h.make_node("Reshape", ["b", "shp"], ["rb"], name="rb"),
                      h.make_node("Concat", ["ra", "rb"], ["y"], name="cat", axis=1)], "g",
                     [h.make_tensor_value_info("x", T.FLOAT, [1, 3, 8, 8])],
                     [h.make_tensor_value_info("y", T.FLOAT, None)], i1 + i2 + [shp])
    prepared = prepare_onnx(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]))
    segs, host = plan_segments(prepared.proto, {1, 2, 4, 5})
    assert [(s.device, s.nodes) for s in segs] == [("npu", (0,)), ("host", (2,)),
                                                   ("npu", (3,)), ("host", (1, 4, 5))]
    assert segs[3].inputs == ("a", "b") and segs[1].outputs == ("m",)


def test_cli_run_check_on_segmented_folder(compiled, capsys):
    path, folder = compiled["softmax"]
    x = folder.parent / "x.npy"
    np.save(x, _x(5))
    assert main(["run", str(folder), str(x), "--check", str(path), "--json"]) == 0
    check = json.loads(capsys.readouterr().out)["check"]
    assert check["bit_exact"] is True and check["sqnr_db"] >= 25.0


def test_save_of_loaded_segmented_model_copies_segments(compiled, tmp_path):
    _, folder = compiled["transpose"]
    copy = tc.load(folder).save(tmp_path / "copy")
    x = _x(7)
    np.testing.assert_array_equal(tc.load(copy).run(x), tc.load(folder).run(x))
    assert tc.load(copy).ir["npu_0:quantize"].strip()


def test_onnx_backend_runs_a_segmented_model():
    from tcc_compiler import onnx_backend

    model = MODELS["lrn"]
    rep = onnx_backend.prepare(model, "CPU", calibration=[_x(s) for s in range(10, 14)])
    x = _x(9)
    (y,) = rep.run([x])
    ref = ort.InferenceSession(model.SerializeToString(),
                               providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert y.shape == ref.shape and sqnr_db(ref, y) >= 25.0


def test_model_the_npu_runs_whole_keeps_the_single_program_layout(tmp_path):
    """No host node: the folder is as before host segments existed (no layout key, top-level
    binaries, no segment entries)."""
    rng = np.random.default_rng(0)
    n1, i1 = _conv("c1", "x", "y", 3, 8, rng)
    g = h.make_graph([n1], "g", [h.make_tensor_value_info("x", T.FLOAT, [1, 3, 16, 16])],
                     [h.make_tensor_value_info("y", T.FLOAT, None)], i1)
    folder = tc.compile(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]),
                        calibration=[_x()]).save(tmp_path / "out")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert "layout" not in manifest and "segments" not in manifest
    assert (folder / "npu_cmd.bin").is_file()
    assert not list(folder.glob("npu_[0-9]*")) and not list(folder.glob("host_*"))


def test_inspect_and_html_report_show_segments_and_boundaries(compiled, tmp_path, capsys):
    from tcc_compiler.api.folders import write_html_report

    _, folder = compiled["lrn"]
    assert main(["inspect", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "host_1.onnx" in out and "boundary dequantize ar" in out
    page = write_html_report(folder, tmp_path / "r.html").read_text()
    assert "Boundaries (per image)" in page and "host_1.onnx" in page
    assert main(["disasm", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("tccc: error:") and "npu_0" in err
    assert main(["export-onnx", str(folder), "-o", str(tmp_path / "q.onnx")]) == 2
    err = capsys.readouterr().err   # the QDQ form maps one NPU program: named, not a KeyError
    assert err.count("\n") == 1 and "npu_0" in err and not (tmp_path / "q.onnx").exists()


def test_segmented_model_runs_inside_onnx_runtime_as_tccc_run(compiled, tmp_path):
    """export-onnx --ort of a segmented folder: NPU segments as custom nodes, host segments
    inlined; ONNX Runtime's outputs equal ``tccc run``'s bit for bit."""
    pytest.importorskip("onnxruntime_extensions")
    from tcc_compiler.runtime import load_program
    from tcc_compiler.runtime.ort_ops import session_options

    for name in ("lrn", "softmax", "transpose"):   # transpose: a boundary prefix
        model, folder = compiled[name]
        path = tmp_path / f"{name}_npu.onnx"
        assert main(["export-onnx", str(folder), "--ort", "-o", str(path)]) == 0
        m = onnx.load(str(path))
        assert any(n.domain == "ai.onnx.contrib" for n in m.graph.node)
        assert any(n.domain in ("", "ai.onnx") for n in m.graph.node)   # host ops inlined
        sess = ort.InferenceSession(str(path), session_options(str(path)))
        prog = load_program(folder)
        x = np.random.default_rng(5).uniform(-1, 1, prog.input_shape).astype(np.float32)
        got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
        assert np.array_equal(got, prog.final_output(prog.run(x)))


def test_zero_pad_before_maxpool_moves_only_pad_and_pool_to_host():
    """YOLOv3-tiny's ZeroPad2d((0, 1, 0, 1)) + MaxPool(2, stride 1): the NPU pads a max pool
    with -inf, so the Pad and the pool run on the host; the convs before and after stay on
    the NPU (the Pad's refusal at an NPU segment's end named no node before, and the whole
    backbone in front of it went to the host)."""
    from tcc_compiler.placement import partition

    pads = nh.from_array(np.array([0, 0, 0, 0, 0, 0, 1, 1], np.int64), "pads")
    model = _model([h.make_node("Pad", ["ar", "pads"], ["p"], name="zpad"),
                    h.make_node("MaxPool", ["p"], ["m"], name="pool", kernel_shape=[2, 2],
                                strides=[1, 1])])
    model.graph.initializer.append(pads)
    places = {p.node: p.device for p in partition(model, "16x16x3")}
    assert places == {"c1": "npu", "r1": "npu", "zpad": "host", "pool": "host", "c2": "npu"}
    m = tc.compile(model, "16x16x3", calibration=[_x(s) for s in range(10, 14)])
    x = _x()
    ref = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    assert sqnr_db(ref, m.run(x)) >= 30.0


def test_segment_input_with_a_batch_above_one_runs_on_the_host(tmp_path):
    """Conv -> Reshape [1, 8, H, W] -> [4, 2, H, W] -> Conv -> Reshape back -> Conv (as
    MobileViT folds patches into the first axis): the middle conv's input has a first dim of 4,
    which an NPU program (batch 1) cannot take, so it runs on the host and the model matches
    ONNX Runtime (before, its segment compiled at batch 1 and then refused its calibration)."""
    rng = np.random.default_rng(0)
    n1, i1 = _conv("c1", "x", "a", 3, 8, rng)
    nm, im = _conv("cm", "rb", "cb", 2, 2, rng)
    n2, i2 = _conv("c2", "m", "y", 8, 4, rng)
    shapes = [nh.from_array(np.array(s, np.int64), n)
              for s, n in (([4, 2, 16, 16], "s4"), ([1, 8, 16, 16], "s1"))]
    g = h.make_graph([n1, h.make_node("Relu", ["a"], ["ar"], name="r1"),
                      h.make_node("Reshape", ["ar", "s4"], ["rb"], name="fold"), nm,
                      h.make_node("Reshape", ["cb", "s1"], ["m"], name="unfold"), n2], "g",
                     [h.make_tensor_value_info("x", T.FLOAT, [1, 3, 16, 16])],
                     [h.make_tensor_value_info("y", T.FLOAT, None)], i1 + im + i2 + shapes)
    path = tmp_path / "fold.onnx"
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]), path)
    m = tc.compile(path, calibration=[_x(s) for s in range(10, 14)])
    folder = m.save(tmp_path / "out")
    manifest = json.loads((folder / "manifest.json").read_text())
    host_nodes = {n for s in manifest["segments"] if s["device"] == "host" for n in s["nodes"]}
    assert "cm" in host_nodes, manifest["segments"]
    prog = tc.load(folder).program
    x = _x(3)
    c = Checker(prog, path).check(x, prog.run(x))
    assert c["bit_exact"] and c["sqnr_db"] > 25, c


def test_cli_mean_std_on_a_segmented_model(tmp_path):
    """``tccc compile --mean --std`` (a YOLO's pixel / 255) on a model with a host segment:
    the settings were passed on unresolved and compile crashed (exit 1, "'PreprocessSettings'
    object has no attribute 'shape'"); now the manifest records them resolved at the input
    size, and the bundled photos calibrate with them."""
    path = tmp_path / "lrn.onnx"
    onnx.save(MODELS["lrn"], path)
    folder = tmp_path / "out"
    code = main(["compile", str(path), "-o", str(folder), "-q", "--mean", "0", "0", "0",
                 "--std", "1", "1", "1"])
    assert code == 0
    pre = json.loads((folder / "manifest.json").read_text())["preprocess"]
    assert (pre["width"], pre["height"]) == (16, 16)
    assert list(pre["mean"]) == [0.0, 0.0, 0.0] and list(pre["std"]) == [1.0, 1.0, 1.0]
