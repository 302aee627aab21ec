"""NPU segments with several inputs (specs/manifest.md, "Segmented layout").

The model: Conv -> Relu ('ar') -> LRN (host, 'm') -> Conv ('b'); then Add(b, ar), a Concat
of that sum with 'ar' and the model input 'x', and a last Conv. The second NPU segment reads
a host output ('m', quantized), an earlier NPU segment's int8 output ('ar', handed over as
int8 through a 256-entry table) and the model input ('x', quantized from its pixels).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

import tcc_compiler as tc
from tcc_compiler.cli.main import main
from tcc_compiler.errors import FormatError
from tcc_compiler.frontend.onnx_import import prepare_onnx
from tcc_compiler.frontend.segments import plan_segments
from tcc_compiler.runtime import load_program
from tcc_compiler.runtime.check import Checker, sqnr_db


def _conv(name, x, y, cin, cout, rng, k=3):
    w = nh.from_array((rng.standard_normal((cout, cin, k, k)) * 0.2).astype(np.float32),
                      name + "_w")
    b = nh.from_array((rng.standard_normal(cout) * 0.1).astype(np.float32), name + "_b")
    return h.make_node("Conv", [x, w.name, b.name], [y], name=name, pads=[k // 2] * 4), [w, b]


def _model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    n1, i1 = _conv("c1", "x", "a", 3, 8, rng)
    n2, i2 = _conv("c2", "m", "b", 8, 8, rng)
    n3, i3 = _conv("c3", "cat", "y", 19, 4, rng)
    g = h.make_graph([n1, h.make_node("Relu", ["a"], ["ar"], name="r1"),
                      h.make_node("LRN", ["ar"], ["m"], name="lrn", size=3), n2,
                      h.make_node("Add", ["b", "ar"], ["s"], name="add"),
                      h.make_node("Concat", ["s", "ar", "x"], ["cat"], name="cat", axis=1),
                      n3], "g",
                     [h.make_tensor_value_info("x", T.FLOAT, [1, 3, 16, 16])],
                     [h.make_tensor_value_info("y", T.FLOAT, [1, 4, 16, 16])], i1 + i2 + i3)
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17)])


def _x(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((1, 3, 16, 16)).astype(np.float32)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """(model path, output folder) of the model, compiled through the API."""
    root = tmp_path_factory.mktemp("multiin")
    path = root / "m.onnx"
    onnx.save(_model(), path)
    folder = root / "out"
    tc.compile(path, calibration=[_x(s) for s in range(10, 18)]).save(folder)
    return path, folder


def test_segment_reads_host_output_npu_output_and_model_input():
    """The Add and the Concat stay on the NPU: one segment reads three tensors."""
    segs, host = plan_segments(prepare_onnx(_model()).proto, {2})
    assert host == {2}
    assert [(s.device, s.nodes) for s in segs] == [("npu", (0, 1)), ("host", (2,)),
                                                   ("npu", (3, 4, 5, 6))]
    assert segs[2].inputs == ("m", "ar", "x") and segs[0].outputs == ("ar",)


def test_manifest_lists_the_inputs_in_the_input_region(compiled):
    _, folder = compiled
    top = json.loads((folder / "manifest.json").read_text())
    assert [s["device"] for s in top["segments"]] == ["npu", "host", "npu"]
    assert top["segments"][2]["inputs"] == ["m", "ar", "x"]
    sub = json.loads((folder / "npu_2" / "manifest.json").read_text())
    ins = sub["inputs"]
    assert [r["name"] for r in ins] == ["m", "ar", "x"] and ins[0] == sub["input"]
    offsets = [r["offset"] for r in ins]
    assert offsets[0] == 0 and offsets == sorted(offsets)
    assert all(r["region"] == "INPUT" and r["dtype"] == "int8" for r in ins)
    end = ins[-1]["offset"] + int(np.prod(ins[-1]["npu_hwc"]))
    assert end <= sub["dram"]["input_bytes"]
    single = json.loads((folder / "npu_0" / "manifest.json").read_text())
    assert "inputs" not in single   # a one-input program's manifest is as before


def test_boundaries_hand_npu_output_over_as_int8(compiled):
    _, folder = compiled
    report = json.loads((folder / "report.json").read_text())
    kinds = sorted((b["segment"], b["tensor"], b["kind"]) for b in report["boundaries"])
    assert kinds == [(0, "ar", "dequantize"), (0, "x", "pixels"), (2, "ar", "npu_int8"),
                     (2, "m", "quantize"), (2, "x", "pixels"), (2, "y", "dequantize")]
    rec = next(b for b in report["boundaries"] if b["kind"] == "npu_int8")
    assert rec["bytes"] == 2 * 8 * 16 * 16 and rec["float_bytes"] == 0
    assert rec["estimated_host_ms"] > 0


def test_run_check_bit_exact_and_close_to_onnx_runtime(compiled):
    path, folder = compiled
    m = tc.load(folder)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    checker = Checker(m.program, path)
    for seed in (1, 2, 3):
        x = _x(seed)
        res = m.program.run(x)
        assert res["feed:2"]["ar"].dtype == np.int8   # handed over as int8, not float32
        assert sqnr_db(sess.run(None, {"x": x})[0], m.run(x)) >= 25.0
        assert checker.check(x, res)["bit_exact"]


def test_int8_hand_off_equals_the_float_round_trip(compiled):
    """The 256-entry table gives the values dequantizing and quantizing again would."""
    _, folder = compiled
    prog = load_program(folder)
    res = prog.run(_x(4))
    sub = prog.programs[2]
    rec = next(r for r in sub.input_records if r["name"] == "ar")
    via_float = sub.quantize_inputs({**{k: v for k, v in res["feed:2"].items() if k != "ar"},
                                     "ar": res["ar"]})
    assert via_float == sub.quantize_inputs(res["feed:2"])
    assert rec["offset"] > 0


def test_segment_program_alone_refuses_one_array(compiled, capsys):
    _, folder = compiled
    x = folder.parent / "x.npy"
    np.save(x, np.zeros((1, 8, 16, 16), np.float32))
    assert main(["run", str(folder / "npu_2"), str(x)]) == 2
    err = capsys.readouterr().err
    assert "takes 3 inputs" in err and err.count("\n") == 1


def test_damaged_inputs_record_is_refused(compiled, tmp_path):
    _, folder = compiled
    bad = tmp_path / "bad"
    shutil.copytree(folder, bad)
    mpath = bad / "npu_2" / "manifest.json"
    man = json.loads(mpath.read_text())
    man["inputs"][2]["offset"] = man["inputs"][1]["offset"]   # overlaps 'ar'
    mpath.write_text(json.dumps(man))
    with pytest.raises(FormatError, match=r"inputs\[2\]\.offset"):
        load_program(bad)


def test_export_onnx_ort_node_takes_every_input(compiled, tmp_path):
    pytest.importorskip("onnxruntime_extensions")
    from tcc_compiler.runtime.ort_ops import session_options

    _, folder = compiled
    path = tmp_path / "ort.onnx"
    assert main(["export-onnx", str(folder), "--ort", "-o", str(path)]) == 0
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert "TcccNpuProgram1_3in" in ops
    sess = ort.InferenceSession(str(path), session_options(str(path)))
    prog = load_program(folder)
    x = _x(6)
    assert np.array_equal(sess.run(None, {"x": x})[0], prog.final_output(prog.run(x)))


def test_export_onnx_qdq_of_a_segment_with_several_inputs(compiled, tmp_path):
    """``tccc export-onnx npu_2/`` (QDQ) takes all three inputs by name (was: KeyError, exit
    1); ONNX Runtime on it reproduces the segment's output from the same float inputs."""
    _, folder = compiled
    path = tmp_path / "npu_2.onnx"
    assert main(["export-onnx", str(folder / "npu_2"), "-o", str(path)]) == 0
    model = onnx.load(str(path))
    assert [i.name for i in model.graph.input] == ["m", "ar", "x"]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    prog = load_program(folder)
    x = _x(7)
    res = prog.run(x)
    got = sess.run(None, {"m": res["m"], "ar": res["ar"], "x": x})[0]
    assert sqnr_db(prog.final_output(res), got) >= 35.0


def test_report_histograms_of_a_segment_with_several_inputs_say_why(compiled, tmp_path,
                                                                     capsys):
    """One array per run cannot feed a three-input program: one line naming its inputs (was:
    a hint to pass .npy arrays, then 'golden model: no array for graph input')."""
    _, folder = compiled
    x = tmp_path / "m.npy"
    np.save(x, np.zeros((1, 8, 16, 16), np.float32))
    for extra in ([], [str(x)]):
        args = ["report", str(folder / "npu_2"), "-o", str(tmp_path / "r.html"), "-q"]
        assert main(args + ["--histograms", *extra]) == 2
        err = capsys.readouterr().err
        assert "takes 3 inputs (m, ar, x;" in err and err.count("\n") == 1
    assert not (tmp_path / "r.html").exists()


def test_host_graph_onnx_runtime_refuses_is_a_folder_error(compiled, tmp_path, capsys):
    """A host graph edited by hand (its manifest record updated to match) that ONNX Runtime
    refuses: one line naming the file, exit 2 (was: internal error InvalidGraph, exit 1)."""
    import zlib

    _, folder = compiled
    bad = tmp_path / "bad"
    shutil.copytree(folder, bad)
    host = onnx.load(str(bad / "host_1.onnx"))
    host.graph.input[0].type.tensor_type.elem_type = T.INT8   # LRN takes no int8
    data = host.SerializeToString()
    (bad / "host_1.onnx").write_bytes(data)
    top = json.loads((bad / "manifest.json").read_text())
    rec = next(s for s in top["segments"] if s.get("file") == "host_1.onnx")
    rec["bytes"], rec["crc32"] = len(data), zlib.crc32(data)
    (bad / "manifest.json").write_text(json.dumps(top))
    x = tmp_path / "x.npy"
    np.save(x, _x(8))
    assert main(["run", str(bad), str(x)]) == 2
    err = capsys.readouterr().err
    assert "host_1.onnx: ONNX Runtime" in err and err.count("\n") == 1
