"""``tccc ops MODEL`` errors name the model file, as ``tccc compile``'s do (tools/corpus.py
found every ops refusal of a bad model naming the graph instead: partition imported the loaded
ModelProto, whose only name is the graph's)."""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

from tcc_compiler.cli.main import main


def test_ops_error_names_the_file(tmp_path, capsys):
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="r")], "graphname",
                          [helper.make_tensor_value_info("x", TensorProto.INT64, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.INT64, None)])
    path = tmp_path / "int_input.onnx"
    onnx.save(helper.make_model(g), path)
    for cmd in (["ops", str(path)], ["compile", str(path), "-o", str(tmp_path / "o")]):
        assert main(["-q", *cmd]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"tccc: error: {path}: " in err, err
