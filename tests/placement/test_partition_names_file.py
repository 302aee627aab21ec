"""``tccc ops MODEL`` errors name the model file, as ``tccc compile``'s do (tools/corpus.py
found every ops refusal of a bad model naming the graph instead: partition imported the loaded
ModelProto, whose only name is the graph's)."""

from __future__ import annotations

import onnx
import pytest
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


def _model(nodes, **kw) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    return helper.make_model(g, **kw)


def test_refusals_naming_no_node_or_an_unnamed_custom_node_are_placed():
    """Two node tests of the onnx wheel ops called supported while compile refused them:
    test_identity (the refusal names the output, no node) and an unnamed custom-domain node
    (the refusal named it '' instead of by its output). Neither may be placed on the NPU."""
    from tcc_compiler import partition
    from tcc_compiler.errors import UnsupportedError
    from tcc_compiler.frontend import import_onnx

    identity = _model([helper.make_node("Identity", ["x"], ["y"])])
    custom = _model([helper.make_node("FlexAttention", ["x"], ["y"], domain="ai.onnx.preview")],
                    opset_imports=[helper.make_opsetid("", 13),
                                   helper.make_opsetid("ai.onnx.preview", 1)])
    for m, phrase in ((identity, "graph input is also a graph output"),
                      (custom, "custom-domain op")):
        try:
            import_onnx(m)
        except UnsupportedError as exc:
            assert phrase in str(exc)
        else:
            raise AssertionError("compile must refuse it")
        places = partition(m)
        assert [p.device for p in places] != ["npu"], places
        assert phrase in places[0].reason
    assert "FlexAttention 'y': custom-domain op" in str(
        pytest.raises(UnsupportedError, import_onnx, custom).value)
