"""A compiled model run inside ONNX Runtime (``tccc export-onnx --ort``): each NPU segment is a
custom node running the program on the reference executor, host ops stay ONNX ops; the
session's outputs equal ``tccc run``'s bit for bit. Skipped without the ``tccc[ort]`` extra
(onnxruntime-extensions); CI installs it (.ci/run)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from helpers.models import gap_net
from onnx import helper

from tcc_compiler.cli.main import main
from tcc_compiler.runtime import load_program

pytest.importorskip("onnxruntime_extensions")
ort = pytest.importorskip("onnxruntime")


def _softmax_argmax_net() -> onnx.ModelProto:
    """gap_net with a Softmax output and an ArgMax output (two host segments)."""
    m = gap_net(3, softmax=True)
    m.graph.node.append(helper.make_node("ArgMax", ["y"], ["cls"], axis=1, keepdims=0))
    m.graph.output.append(helper.make_tensor_value_info("cls", onnx.TensorProto.INT64, [1]))
    return m


def test_session_outputs_equal_tccc_run(tmp_path, capsys):
    from tcc_compiler.runtime.ort_ops import DOMAIN, session_options

    src = tmp_path / "m.onnx"
    onnx.save(_softmax_argmax_net(), src)
    assert main(["-q", "compile", str(src), "-o", str(tmp_path / "out")]) == 0
    assert main(["-q", "export-onnx", str(tmp_path / "out"), "--ort", "-o",
                 str(tmp_path / "npu.onnx")]) == 0
    capsys.readouterr()
    model = onnx.load(str(tmp_path / "npu.onnx"))
    kinds = [(n.domain, n.op_type) for n in model.graph.node]
    assert kinds[0] == (DOMAIN, "TcccNpuProgram1")
    assert ("", "Softmax") in kinds and ("", "ArgMax") in kinds
    sess = ort.InferenceSession(str(tmp_path / "npu.onnx"),
                                session_options(tmp_path / "npu.onnx"))
    prog = load_program(tmp_path / "out")
    names = [o.name for o in sess.get_outputs()]
    assert names == prog.manifest["graph_outputs"]
    for seed in range(3):
        x = np.random.default_rng(seed).standard_normal((1, 3, 32, 32)).astype(np.float32)
        got = sess.run(None, {sess.get_inputs()[0].name: x})
        want = prog.run(x)
        for name, g in zip(names, got):
            assert g.dtype == want[name].dtype
            np.testing.assert_array_equal(g, want[name])


def test_broken_folder_is_refused_before_the_session_runs(tmp_path):
    """An exception inside a Python custom op terminates ONNX Runtime's process, so
    session_options(path) validates the referenced folders first (InputError, exit-2 kind)."""
    from tcc_compiler.errors import TccError
    from tcc_compiler.runtime.ort_ops import session_options

    src = tmp_path / "m.onnx"
    onnx.save(gap_net(3, softmax=False), src)
    assert main(["-q", "compile", str(src), "-o", str(tmp_path / "out")]) == 0
    assert main(["-q", "export-onnx", str(tmp_path / "out"), "--ort", "-o",
                 str(tmp_path / "npu.onnx")]) == 0
    assert session_options(tmp_path / "npu.onnx") is not None
    (tmp_path / "out2").mkdir()
    for f in (tmp_path / "out").iterdir():
        (tmp_path / "out2" / f.name).write_bytes(f.read_bytes())
    (tmp_path / "out2" / "npu_cmd.bin").unlink()
    m = onnx.load(str(tmp_path / "npu.onnx"))
    for a in m.graph.node[0].attribute:
        if a.name == "folder":
            a.s = str(tmp_path / "out2").encode()
    onnx.save(m, tmp_path / "npu2.onnx")
    with pytest.raises(TccError, match="npu_cmd.bin"):
        session_options(tmp_path / "npu2.onnx")
