"""``tccc ops`` / ``partition()`` agree with ``tccc compile``: a node compile refuses is labelled
``unsupported`` (never ``host``, never supported), ``tccc ops`` exits 2 for such a model, and a
model whose FC window exceeds the CONV_CFG fields is refused cleanly by compile (it used to
crash the encoder: ``field kw = 256 outside u8 range``, exit 1)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import tcc_compiler as tc
from tcc_compiler.cli.main import main
from tcc_compiler.errors import UnsupportedError


def _nhwc_fc(h: int, w: int, c: int) -> onnx.ModelProto:
    """NHWC input [1, H, W, C] -> Transpose to NCHW -> Flatten -> Gemm (10 outputs)."""
    rng = np.random.default_rng(0)
    f = h * w * c
    inits = [numpy_helper.from_array((rng.standard_normal((10, f)) * 0.05).astype(np.float32),
                                     "w"), numpy_helper.from_array(np.zeros(10, np.float32), "b")]
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2], name="t"),
             helper.make_node("Flatten", ["t"], ["f"], axis=1, name="flat"),
             helper.make_node("Gemm", ["f", "w", "b"], ["y"], transB=1, name="fc")]
    g = helper.make_graph(nodes, "nhwc_fc",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, h, w, c])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


@pytest.mark.parametrize("hwc", [(1, 256, 1), (2, 300, 3), (300, 2, 1)])
def test_fc_window_beyond_u8_is_refused_by_compile_and_ops(hwc, tmp_path, capsys):
    path = tmp_path / "m.onnx"
    onnx.save(_nhwc_fc(*hwc), str(path))
    with pytest.raises(UnsupportedError, match=r"fc 'fc': k[hw] = \d+ exceeds"):
        tc.compile(str(path), strict=True)
    # without --strict the FC would run on the host, leaving nothing for the NPU: refused too
    with pytest.raises(UnsupportedError, match=r"k[hw] = \d+ exceeds.*nothing is left"):
        tc.compile(str(path))
    assert main(["compile", str(path), "-o", str(tmp_path / "out")]) == 2
    capsys.readouterr()
    places = {p.node: p for p in tc.partition(str(path))}
    assert places["fc"].device == "unsupported" and not places["fc"].supported
    assert main(["ops", str(path), "--strict"]) == 2
    capsys.readouterr()
    assert main(["ops", str(path)]) == 2
    out, err = capsys.readouterr()
    assert "unsupported Gemm" in out
    assert err.count("\n") == 1 and "compile would refuse" in err


def test_fc_window_within_u8_compiles_and_ops_says_so(tmp_path, capsys):
    path = tmp_path / "m.onnx"
    onnx.save(_nhwc_fc(16, 16, 3), str(path))
    assert all(p.supported for p in tc.partition(str(path)))
    assert main(["ops", str(path)]) == 0
    assert main(["-q", "compile", str(path), "-o", str(tmp_path / "out")]) == 0


def test_ops_help_documents_the_exit_code(capsys):
    with pytest.raises(SystemExit):
        main(["ops", "--help"])
    assert "2 when tccc compile would refuse it" in " ".join(capsys.readouterr().out.split())


def test_channel_views_and_copies_reported_as_compile_plans_them(tmp_path):
    """partition() labels a concat that copies an operand (the network input) as an NPU op and
    a split/concat that compile runs as views as views: the same plan (schedule/views.py) the
    memory planner makes, checked against the compiled layer table."""
    from tests.e2e.test_channel_ops import _c2f, _copies, _inputs
    from tests.conftest import make_model_impl

    for build, view_nodes, copy_nodes in ((_c2f, {"cat"}, set()), (_copies, {"sl"}, {"cat"})):
        nodes, inits = build()
        for n in nodes:
            n.name = n.name or n.output[0]
        model = make_model_impl(nodes, [1, 3, 16, 16], inits, opset=17)
        places = {p.node: p for p in tc.partition(model, "16x16x3")}
        assert all(p.supported for p in places.values())
        assert {k for k in view_nodes if places[k].reason.startswith("view")} == view_nodes
        assert {k for k in copy_nodes if "DMA copy" in places[k].reason} == copy_nodes
        m = tc.compile(model, "16x16x3", calibration=_inputs(range(4)))
        copied = {s for lay in m.report["layers"] if "copy of" in lay["tiling"]
                  for s in lay["source"]}
        assert copied == copy_nodes
