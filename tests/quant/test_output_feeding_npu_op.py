"""A conv output listed as a graph output that also feeds an NPU op (tools/corpus.py mutant
"extra output c (inner)"): quantization kept it as a raw int32 output, so its NPU consumer got
a per-channel input scale and compile died with a TypeError (exit 1). It now stays int8, and
the program runs bit-exact against the golden model."""

from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tcc_compiler.cli.main import main


def test_intermediate_conv_output_as_graph_output(tmp_path, capsys):
    r = np.random.default_rng(5)
    inits = [numpy_helper.from_array(a.astype(np.float32), n) for n, a in (
        ("w", r.standard_normal((4, 3, 3, 3)) * .5), ("b", r.standard_normal(4) * .1),
        ("fw", r.standard_normal((5, 4))), ("fb", r.standard_normal(5)))]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[3, 3],
                              pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("GlobalAveragePool", ["r"], ["g"], name="gap"),
             helper.make_node("Flatten", ["g"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], transB=1, name="fc")]
    g = helper.make_graph(nodes, "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                          [helper.make_tensor_value_info(o, TensorProto.FLOAT, None)
                           for o in ("y", "c")], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    path = tmp_path / "m.onnx"
    onnx.save(m, path)
    x = tmp_path / "x.npy"
    np.save(x, r.standard_normal((1, 3, 16, 16)).astype(np.float32))
    assert main(["-q", "compile", str(path), "-o", str(tmp_path / "o"), "--calib", str(x)]) == 0
    capsys.readouterr()
    assert main(["-q", "run", str(tmp_path / "o"), str(x), "--check", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["check"]["bit_exact"] is True
