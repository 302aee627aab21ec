"""Op support and placement: ``tccc ops`` notes come from the frontend's support records;
``partition`` puts unsupported and host ops on the host, not the NPU.
"""

from __future__ import annotations

import json

import numpy as np
from conftest import make_model_impl
from helpers.cli import run_cli
from onnx import helper


def test_ops_notes_come_from_the_support_records(capsys):
    from tcc_compiler.frontend.support import SUPPORT

    code, stdout, _ = run_cli(["ops", "--json"], capsys)
    assert code == 0
    rows = {r["op_type"]: r for r in json.loads(stdout)}
    for op in ("Add", "AveragePool", "MaxPool", "Mul", "Sum"):
        assert rows[op]["notes"] and SUPPORT[op].accepts in rows[op]["notes"]


def test_ops_partition_with_unsupported_node():
    """Softmax (a host op) and a folded ConstantOfShape must not count as NPU nodes."""
    from onnx import TensorProto

    import tcc_compiler as tc

    r = np.random.default_rng(0)
    inits = {"w": r.standard_normal((4, 3, 3, 3)), "fw": r.standard_normal((5, 4)),
             "shp": np.array([1, 5], np.int64)}
    mk = helper.make_node
    nodes = [mk("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             mk("GlobalAveragePool", ["c"], ["g"], name="gap"),
             mk("Flatten", ["g"], ["f"], name="flat"),
             mk("Gemm", ["f", "fw"], ["l"], transB=1, name="fc"),
             mk("ConstantOfShape", ["shp"], ["z"], name="zeros",
                value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.0])),
             mk("Add", ["l", "z"], ["l2"], name="addz"),
             mk("Softmax", ["l2"], ["p"], name="soft"),
             mk("Sin", ["p"], ["y"], name="erf")]
    m = make_model_impl(nodes, [1, 3, 8, 8], inits, name="unsup")
    places = {p.node: p for p in tc.partition(m, strict=True)}
    assert places["erf"].device == "unsupported"
    assert places["soft"].device == "host"
    # without strict the Sin runs on the host (ONNX Runtime), after the NPU segment
    loose = {p.node: p for p in tc.partition(m)}
    assert loose["erf"].device == "host" and loose["conv"].device == "npu"
    assert places["conv"].device == "npu"
    if "zeros" in places:
        assert places["zeros"].folded

