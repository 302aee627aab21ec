"""``tccc ops --target`` runs compile's up-front tile bound (``schedule/bounds``): a conv its
target's SRAM cuts into more than ``MAX_OP_TILES`` tiles is ``unsupported`` with compile's own
refusal, for a whole model and for an NPU segment of a segmented one. ``tccc ops`` called
such a model supported while compile refused it (exit 2 naming the layer)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import tcc_compiler as tc
from tcc_compiler.cli.main import main
from tcc_compiler.options import DEFAULT_TARGET
from tcc_compiler.target import load_target
from tests.helpers.two_cores import conv_net


def _tiny_target(tmp_path) -> str:
    """The default target file with a 4 KiB SRAM."""
    text = load_target().source
    lines = [("sram_capacity_bytes = 4096" if ln.startswith("sram_capacity_bytes") else ln)
             for ln in open(text).read().splitlines()]
    path = tmp_path / "tiny.toml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _lrn_net() -> onnx.ModelProto:
    """1x3x28x28 -> Conv 3x3 (64) -> LRN (host) -> Conv 3x3 (64) "big" -> Relu: a segmented
    model whose second NPU segment's conv needs thousands of tiles in 4 KiB."""
    r = np.random.default_rng(0)
    inits = [numpy_helper.from_array(r.normal(0, .2, s).astype(np.float32), k)
             for k, s in (("w0", (64, 3, 3, 3)), ("w1", (64, 64, 3, 3)))]
    nodes = [helper.make_node("Conv", ["x", "w0"], ["c0"], pads=[1] * 4, name="first"),
             helper.make_node("LRN", ["c0"], ["l"], size=3, name="lrn"),
             helper.make_node("Conv", ["l", "w1"], ["c1"], pads=[1] * 4, name="big"),
             helper.make_node("Relu", ["c1"], ["y"], name="relu")]
    g = helper.make_graph(nodes, "lrn",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 28, 28])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64, 28, 28])],
                          inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def test_ops_refuses_the_layer_compile_refuses(tmp_path, capsys):
    path, target = tmp_path / "m.onnx", _tiny_target(tmp_path)
    onnx.save(conv_net(), str(path))
    assert main(["compile", str(path), "-o", str(tmp_path / "out"), "--target", target]) == 2
    refusal = capsys.readouterr().err.strip().split(f"{path}: ", 1)[-1]
    assert refusal.startswith("layer 'c2'") and "more than the 4,096" in refusal
    places = {p.node: p for p in tc.partition(str(path), target=target)}
    assert places["c2"].device == "unsupported" and places["c2"].reason == refusal
    assert places["c1"].supported   # a conv that fits is still placed on the NPU
    assert main(["ops", str(path), "--target", target]) == 2
    out, err = capsys.readouterr()
    assert "unsupported Conv                 c2: layer 'c2'" in out
    assert err.count("\n") == 1 and "compile would refuse" in err
    # the default target fits every op: supported, as compile then compiles it
    assert all(p.supported for p in tc.partition(str(path), target=DEFAULT_TARGET))


def test_ops_refuses_the_segment_layer(tmp_path):
    path, target = tmp_path / "m.onnx", _tiny_target(tmp_path)
    onnx.save(_lrn_net(), str(path))
    places = {p.node: p for p in tc.partition(str(path), target=target)}
    assert places["lrn"].device == "host"
    assert places["big"].device == "unsupported"
    assert places["big"].reason.startswith("layer 'big'") and "tiles" in places["big"].reason
    assert all(p.supported for p in tc.partition(str(path)))
