"""A model whose ONNX input is NHWC (``[1, H, W, C]`` then ``Transpose(0, 3, 1, 2)``, as
TFLite/Keras exports write) runs on the executor as it was compiled.

The runtime's input is NCHW whatever the ONNX layout (``manifest.json`` ``input.shape``,
specs/manifest.md); the NPU reads int8 NHWC. ``LoadedProgram.quantize`` used to transpose only
when the ONNX layout was NCHW, so an NHWC model's NPU input was the NCHW bytes as they were:
``run --check`` reported ``bit_exact=false`` and an SQNR below 0 dB (exit 1) on every image.
The reference is ONNX Runtime on the NHWC model, fed the same values transposed.
"""

from __future__ import annotations

import numpy as np
import pytest
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import tcc_compiler as tc
from tcc_compiler.runtime.check import sqnr_db


def _nhwc_conv(h: int = 16, w: int = 12, c: int = 3) -> onnx.ModelProto:
    """NHWC input [1, H, W, C] -> Transpose to NCHW -> 3x3 conv (8 channels) + Relu."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((rng.standard_normal((8, c, 3, 3)) * 0.2)
                                     .astype(np.float32), "w"),
             numpy_helper.from_array((rng.standard_normal(8) * 0.1).astype(np.float32), "b")]
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2]),
             helper.make_node("Conv", ["t", "w", "b"], ["c"], kernel_shape=[3, 3],
                              pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["y"])]
    g = helper.make_graph(nodes, "nhwc_conv",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, h, w, c])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, h, w])],
                          inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def test_nhwc_model_runs_bit_exact_and_close_to_onnx_runtime(tmp_path):
    model = _nhwc_conv()
    rng = np.random.default_rng(1)
    calib = [rng.standard_normal((1, 3, 16, 12)).astype(np.float32) for _ in range(4)]
    m = tc.compile(model, "12x16x3", calibration=calib)
    assert m.manifest["input"]["onnx_layout"] == "NHWC"
    path = tmp_path / "nhwc.onnx"
    onnx.save(model, str(path))
    m.save(tmp_path / "out")
    loaded = tc.load(tmp_path / "out")
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    from tcc_compiler.runtime.check import Checker

    checker = Checker(loaded.program, path)
    for x in calib[:2]:
        ref = sess.run(None, {"x": np.ascontiguousarray(x.transpose(0, 2, 3, 1))})[0]
        y = loaded.run(x)
        assert sqnr_db(ref, y) > 30.0        # it was below 0 dB
        res = loaded.program.run(x)
        assert checker.check(x, res)["bit_exact"]


def test_nhwc_model_with_a_host_segment_compiles_and_runs_bit_exact(tmp_path):
    """NHWC input -> Transpose -> conv -> LRN (host) -> conv: the first NPU segment's
    calibration values (ONNX Runtime's, NHWC like the model input) were handed to its compile
    as they were, which refused them ("calibration array 0: shape (1, 16, 12, 3), model
    expects (1, 3, 16, 12)") although ``tccc ops`` placed every node."""
    base = _nhwc_conv()
    rng = np.random.default_rng(2)
    w2 = numpy_helper.from_array((rng.standard_normal((4, 8, 3, 3)) * 0.2).astype(np.float32),
                                 "w2")
    nodes = list(base.graph.node)[:2] + [
        helper.make_node("LRN", ["c"], ["l"], size=3),
        helper.make_node("Conv", ["l", "w2"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])]
    g = helper.make_graph(nodes, "nhwc_lrn", list(base.graph.input),
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 16, 12])],
                          list(base.graph.initializer) + [w2])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = tmp_path / "nhwc_lrn.onnx"
    onnx.save(model, str(path))
    assert all(p.supported for p in tc.partition(str(path), "12x16x3"))
    calib = [rng.standard_normal((1, 3, 16, 12)).astype(np.float32) for _ in range(4)]
    m = tc.compile(str(path), "12x16x3", calibration=calib)
    m.save(tmp_path / "out")
    loaded = tc.load(tmp_path / "out")
    assert loaded.manifest.get("layout") == "segmented"
    from tcc_compiler.runtime.check import Checker

    checker = Checker(loaded.program, path)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for x in calib[:2]:
        ref = sess.run(None, {"x": np.ascontiguousarray(x.transpose(0, 2, 3, 1))})[0]
        assert sqnr_db(ref, loaded.run(x)) > 25.0
        assert checker.check(x, loaded.program.run(x))["bit_exact"]


def _nhwc_folder(tmp_path, calib_npy: bool = False):
    """(model path, compiled folder, NHWC inputs [1, 16, 12, 3]) of :func:`_nhwc_conv`;
    compiled from NHWC ``.npy`` calibration files when ``calib_npy``."""
    model = _nhwc_conv()
    path = tmp_path / "nhwc.onnx"
    onnx.save(model, str(path))
    rng = np.random.default_rng(3)
    xs = [rng.standard_normal((1, 16, 12, 3)).astype(np.float32) for _ in range(3)]
    calib = [x.transpose(0, 3, 1, 2) for x in xs]
    if calib_npy:
        np.save(tmp_path / "calib.npy", np.concatenate(xs))
        calib = [str(tmp_path / "calib.npy")]
    tc.compile(str(path), "12x16x3", calibration=calib).save(tmp_path / "out")
    return path, tmp_path / "out", xs


def test_qdq_export_of_an_nhwc_model_takes_nhwc_input(tmp_path):
    """The QDQ export took NCHW ``[1, 3, 16, 12]`` though the model it came from takes NHWC:
    an application feeding the original model could not feed its export."""
    from tcc_compiler.export.qdq import save_qdq

    path, out, xs = _nhwc_folder(tmp_path)
    save_qdq(out, tmp_path / "qdq.onnx")
    exp = onnx.load(str(tmp_path / "qdq.onnx"))
    dims = [d.dim_value for d in exp.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 16, 12, 3]
    sess = ort.InferenceSession(str(tmp_path / "qdq.onnx"), providers=["CPUExecutionProvider"])
    loaded = tc.load(out)
    for x in xs:
        y = sess.run(None, {"x": x})[0]
        # float32 rounding only (tcc_compiler/export/qdq.py): within one output LSB
        scale = loaded.manifest["outputs"][0]["scale"][0]
        assert np.abs(y - loaded.run(x.transpose(0, 3, 1, 2))).max() <= scale * 1.001
    # compiling the export gives the same binaries (the QDQ round trip README promises)
    tc.compile(str(tmp_path / "qdq.onnx"), "12x16x3").save(tmp_path / "again")
    for f in ("npu_cmd.bin", "quantized_network.bin"):
        assert (tmp_path / "again" / f).read_bytes() == (out / f).read_bytes()


def test_ort_export_of_an_nhwc_model_takes_nhwc_input(tmp_path):
    pytest.importorskip("onnxruntime_extensions")
    from tcc_compiler.export.ort_model import export_ort
    from tcc_compiler.runtime.ort_ops import session_options

    path, out, xs = _nhwc_folder(tmp_path)
    model = export_ort(out)
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == \
        [1, 16, 12, 3]
    onnx.save(model, str(tmp_path / "npu.onnx"))
    sess = ort.InferenceSession(str(tmp_path / "npu.onnx"), session_options())
    loaded = tc.load(out)
    for x in xs[:2]:
        assert np.array_equal(sess.run(None, {"x": x})[0], loaded.run(x.transpose(0, 3, 1, 2)))


def test_run_eval_and_calib_take_an_nhwc_npy_for_an_nhwc_model(tmp_path, capsys):
    """``tccc run`` / ``eval`` / ``compile --calib`` refused a ``.npy`` shaped as the NHWC model
    takes it ("does not match the model input [N, 3, 16, 12]"); ``eval`` read no ``.npy``."""
    import json

    from helpers.cli import run_cli

    path, out, xs = _nhwc_folder(tmp_path, calib_npy=True)
    np.save(tmp_path / "nhwc.npy", xs[0])
    np.save(tmp_path / "nchw.npy", xs[0].transpose(0, 3, 1, 2))
    res = {}
    for name in ("nhwc", "nchw"):
        code, o, err = run_cli(["run", out, tmp_path / f"{name}.npy", "--check", path, "--json",
                                "--logits"], capsys)
        assert code == 0, err
        res[name] = json.loads(o)
        assert res[name]["check"]["bit_exact"] is True
    assert res["nhwc"]["logits"] == res["nchw"]["logits"]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ref = sess.run(None, {"x": xs[0]})[0]
    assert sqnr_db(ref, tc.load(out).run(str(tmp_path / "nhwc.npy"))) > 25.0
    ds = tmp_path / "ds"
    for k in range(2):
        (ds / f"c{k}").mkdir(parents=True)
        np.save(ds / f"c{k}" / "a.npy", xs[k])
    code, o, err = run_cli(["eval", out, "--images", ds, "--check", path, "--json",
                            "--no-progress"], capsys)
    assert code == 0, err
    assert json.loads(o)["samples"] == 2 and json.loads(o)["flips"] == 0
    np.save(tmp_path / "bad.npy", xs[0][:, :, :, :2])
    code, o, err = run_cli(["run", out, tmp_path / "bad.npy"], capsys)
    assert code == 2 and "NHWC [N, 16, 12, 3] or NCHW [N, 3, 16, 12]" in err


def test_onnx_backend_takes_what_an_nhwc_model_takes(tmp_path):
    """ONNX's backend interface feeds the model's own inputs: ``rep.run([x])`` with the NHWC
    array an NHWC model takes was refused ("input shape (1, 16, 12, 3) differs from the
    model's (1, 3, 16, 12)")."""
    from tcc_compiler import onnx_backend

    model = _nhwc_conv()
    rng = np.random.default_rng(4)
    xs = [rng.standard_normal((1, 16, 12, 3)).astype(np.float32) for _ in range(3)]
    rep = onnx_backend.prepare(model, "CPU", calibration=[x.transpose(0, 3, 1, 2) for x in xs])
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for x in xs[:2]:
        y = rep.run([x])[0]
        assert sqnr_db(sess.run(None, {"x": x})[0], y) > 25.0
    rep2 = onnx_backend.prepare(model, "CPU")      # calibrates on the first input it runs
    assert sqnr_db(sess.run(None, {"x": xs[0]})[0], rep2.run(xs[0])[0]) > 25.0
