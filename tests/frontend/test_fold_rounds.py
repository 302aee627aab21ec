"""Constant folding stops after one round when no Shape node is left to fold later (the
second round of a plain network is a shape inference and a graphsurgeon round trip that
cannot change it), and keeps folding while one is."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from tcc_compiler.frontend import fold, nofold, onnx_import


def _conv_model(with_shape: bool):
    w = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])]
    outs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    if with_shape:   # a Shape of the conv's output, foldable once the shapes are known
        nodes.append(helper.make_node("Shape", ["y"], ["s"]))
        outs.append(helper.make_tensor_value_info("s", TensorProto.INT64, None))
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, 3, 8, 8])], outs, [w])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def _rounds(monkeypatch, model) -> tuple[int, object]:
    calls = []
    real = fold.fold_constants

    def counting(proto, where):
        calls.append(where)
        return real(proto, where)

    monkeypatch.setattr(fold, "fold_constants", counting)
    prepared = onnx_import.prepare_onnx(model, "8x8x3")
    return len(calls), prepared


def test_plain_network_folds_once_with_the_same_result(monkeypatch):
    model = _conv_model(False)
    assert _rounds(monkeypatch, model)[0] == 0   # nothing to fold: no round (nofold.py)
    monkeypatch.setattr(nofold, "nothing_to_fold", lambda proto: "forced")
    n, prepared = _rounds(monkeypatch, model)
    assert n == 1
    once = fold.fold_constants(model, "m")
    again = fold.fold_constants(once, "m")   # what a second round would give
    assert len(again.graph.node) == len(prepared.proto.graph.node) == 1


def test_a_shape_node_keeps_a_second_round(monkeypatch):
    assert fold.may_fold_again(_conv_model(True))
    assert not fold.may_fold_again(_conv_model(False))
