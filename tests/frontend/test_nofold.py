"""The import skips graphsurgeon's constant folding when it has nothing to fold
(frontend/nofold.py): the prepared model (nodes in order, initializers, inferred shapes,
inputs, outputs, opsets) is the one the folding path gives, and the shortcut is declined
wherever folding or cleanup would change the graph."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tcc_compiler import zoo
from tcc_compiler.frontend import nofold
from tcc_compiler.frontend.onnx_import import prepare_onnx

N = helper.make_node


def _prepared(model: onnx.ModelProto, fold: bool) -> tuple:
    """prepare_onnx's model in a comparable form; ``fold`` forces the graphsurgeon path."""
    real = nofold.nothing_to_fold
    if fold:
        nofold.nothing_to_fold = lambda p: "forced"
    try:
        p = prepare_onnx(model).proto
    finally:
        nofold.nothing_to_fold = real
    g = p.graph
    arrays = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    return ([n.SerializeToString() for n in g.node],
            {k: (a.dtype.str, a.shape, a.tobytes()) for k, a in arrays.items()},
            {v.name: v.type.SerializeToString() for v in g.value_info},
            [v.SerializeToString() for v in g.input], [v.SerializeToString() for v in g.output],
            [(i.domain, i.version) for i in p.opset_import])


def _model(nodes, inits, outputs=("y",)) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])
    outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs]
    graph = helper.make_graph(nodes, "g", [x], outs, [
        numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _branches(extra=(), inits=None, outputs=("y",)) -> onnx.ModelProto:
    """Two branches listed deep branch first: graphsurgeon's level order interleaves them."""
    r = np.random.default_rng(0)
    w = {"w0": r.normal(size=(4, 4, 1, 1)), "w1": r.normal(size=(4, 4, 1, 1)),
         "w2": r.normal(size=(4, 4, 1, 1)), **(inits or {})}
    nodes = [N("Conv", ["x", "w0"], ["a"], name="a"), N("Relu", ["a"], ["b"], name="b"),
             N("Conv", ["b", "w1"], ["c"], name="c"), N("Conv", ["x", "w2"], ["d"], name="d"),
             N("Add", ["c", "d"], ["y"], name="y"), *extra]
    return _model(nodes, w, outputs)


@pytest.mark.parametrize("name,whc", [
    pytest.param("resnet18", (64, 64), marks=pytest.mark.slow), ("yolov8n", (64, 64)),
    pytest.param("mobileone-s1", (64, 64), marks=pytest.mark.slow), ("lenet5", (None, None))])
def test_zoo_models_take_the_shortcut_and_match(name, whc):
    m = zoo.build(name, *whc)
    assert nofold.nothing_to_fold(m) is None
    assert _prepared(m, fold=False) == _prepared(m, fold=True)


def test_nodes_sorted_as_graphsurgeon_sorts_them():
    m = _branches()
    assert nofold.nothing_to_fold(m) is None
    fast = _prepared(m, fold=False)
    names = [onnx.NodeProto.FromString(b).name for b in fast[0]]
    assert names == ["a", "d", "b", "c", "y"]      # by level, stable
    assert fast == _prepared(m, fold=True)


@pytest.mark.parametrize("case,reason", [
    ("shape", "Shape"), ("constant_node", "all inputs constant"),
    ("const_inputs", "all inputs constant"), ("dead", "a node no graph output needs"),
    ("unused_init", "an initializer no node reads"), ("unsorted", "not in topological order")])
def test_declined_where_folding_changes_the_graph(case, reason):
    if case == "shape":
        m = _branches([N("Shape", ["y"], ["s"], name="s")], outputs=("y", "s"))
    elif case == "constant_node":
        m = _branches([N("Constant", [], ["k"], name="k",
                         value=numpy_helper.from_array(np.ones(4, np.float32))),
                       N("Add", ["y", "k"], ["z"], name="z")], outputs=("z",))
    elif case == "const_inputs":
        m = _branches([N("Neg", ["w0"], ["nw"], name="nw"),
                       N("Conv", ["y", "nw"], ["z"], name="z")], outputs=("z",))
    elif case == "dead":
        m = _branches([N("Relu", ["y"], ["unused"], name="dead")])
    elif case == "unused_init":
        m = _branches(inits={"spare": np.ones(3)})
    else:
        m = _branches()
        nodes = list(m.graph.node)
        del m.graph.node[:]
        m.graph.node.extend(nodes[::-1])
    assert reason in nofold.nothing_to_fold(m)
    assert _prepared(m, fold=False) == _prepared(m, fold=True)
