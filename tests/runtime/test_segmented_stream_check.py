"""``tccc run --check`` on a segmented ``--cores 2`` folder runs every NPU segment's stream
program (npu_cmd_stream.bin) on copies of the segment's input and counts it in ``bit_exact``,
as it does for a model the NPU runs whole (README "Two NPU cores"). Before, a segmented
folder's stream programs (every zoo YOLO's) were loaded and CRC-checked but never run."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tcc_compiler import api
from tcc_compiler.runtime import load_program
from tcc_compiler.runtime.check import Checker


def _model(path):
    """Conv -> Relu -> Softmax(axis 1, mid-graph: a host segment) -> Conv: two NPU segments,
    input [1, 3, 16, 24] NCHW float32."""
    rng = np.random.default_rng(3)
    w0 = numpy_helper.from_array(rng.normal(0, .4, (8, 3, 3, 3)).astype(np.float32), "w0")
    w1 = numpy_helper.from_array(rng.normal(0, .4, (8, 8, 3, 3)).astype(np.float32), "w1")
    nodes = [helper.make_node("Conv", ["x", "w0"], ["c0"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c0"], ["r0"]),
             helper.make_node("Softmax", ["r0"], ["s0"], axis=1),
             helper.make_node("Conv", ["s0", "w1"], ["y"], pads=[1, 1, 1, 1])]
    g = helper.make_graph(nodes, "seg2", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, 3, 16, 24])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, [1, 8, 16, 24])], [w0, w1])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, path)


def test_segmented_check_runs_each_segments_stream_program(tmp_path, monkeypatch):
    path = tmp_path / "seg.onnx"
    _model(path)
    rng = np.random.default_rng(0)
    calib = [rng.uniform(-2, 2, (1, 3, 16, 24)).astype(np.float32) for _ in range(2)]
    api.compile(path, "24x16x3", calibration=calib, cores=2).save(tmp_path / "out")
    prog = load_program(tmp_path / "out")
    npu = list(prog.programs.values())
    assert len(npu) == 2 and all(p.stream is not None for p in npu)
    x = rng.uniform(-2, 2, (1, 3, 16, 24)).astype(np.float32)
    ck = Checker(prog, path)
    assert ck.check(x, prog.run(x))["bit_exact"]

    import tcc_compiler.sim.cores as cores
    real, calls = cores.run_stream, []

    def corrupted(*a, **kw):   # a stream program that gets one byte of one image wrong
        outs = real(*a, **kw)
        calls.append(len(outs))
        return [bytes([outs[0][0] ^ 1]) + outs[0][1:]] + outs[1:]

    monkeypatch.setattr(cores, "run_stream", corrupted)
    assert not Checker(prog, path).check(x, prog.run(x))["bit_exact"]
    assert calls, "the stream program was never run"


@pytest.mark.parametrize("seg", [0, 1])
def test_every_segment_stream_is_checked(tmp_path, monkeypatch, seg):
    """Corrupting one segment's stream output only (either) makes bit_exact false."""
    path = tmp_path / "seg.onnx"
    _model(path)
    rng = np.random.default_rng(1)
    calib = [rng.uniform(-2, 2, (1, 3, 16, 24)).astype(np.float32)]
    api.compile(path, "24x16x3", calibration=calib, cores=2).save(tmp_path / "out")
    prog = load_program(tmp_path / "out")
    x = rng.uniform(-2, 2, (1, 3, 16, 24)).astype(np.float32)
    import tcc_compiler.sim.cores as cores
    real, n = cores.run_stream, []

    def corrupt_nth(*a, **kw):
        outs = real(*a, **kw)
        n.append(1)
        if len(n) - 1 == seg:
            return outs[:-1] + [bytes([outs[-1][0] ^ 0x80]) + outs[-1][1:]]
        return outs

    monkeypatch.setattr(cores, "run_stream", corrupt_nth)
    assert not Checker(prog, path).check(x, prog.run(x))["bit_exact"]
