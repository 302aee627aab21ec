"""int16 channel concat groups end to end: promoting one producer of a concat makes the whole
group int16 (the other producer, a transposed convolution's phase convs writing their pixels
in place, the concat, the slices read from it), and the executor runs it bit for bit equal to
the golden integer model, whole and tiled into a small SRAM in any legal queue order."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from helpers.precision import compile_check, really_tiled

from tcc_compiler.ir.ops import Op
from tcc_compiler.target import load_target

N = helper.make_node
HW = 16


def concat_net() -> onnx.ModelProto:
    """conv1-relu -> (conv2; maxpool -> ConvTranspose 4x4/2) -> Concat -> Split -> conv3, conv4
    -> Add: FlowNetS's decoder join (a conv output, a transposed conv and channel slices
    sharing one buffer)."""
    r = np.random.default_rng(5)
    inits = {"w1": r.normal(0, .4, (8, 3, 3, 3)), "b1": r.normal(0, .2, 8),
             "w2": r.normal(0, .3, (4, 8, 3, 3)), "b2": r.normal(0, .1, 4),
             "wt": r.normal(0, .3, (8, 4, 4, 4)), "bt": r.normal(0, .1, 4),
             "w3": r.normal(0, .3, (4, 4, 3, 3)), "b3": r.normal(0, .1, 4),
             "w4": r.normal(0, .3, (4, 4, 1, 1)), "b4": r.normal(0, .1, 4),
             "split": np.array([4, 4], np.int64)}
    nodes = [N("Conv", ["x", "w1", "b1"], ["c1"], pads=[1] * 4, name="conv1"),
             N("Relu", ["c1"], ["r1"]),
             N("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1] * 4, name="conv2"),
             N("MaxPool", ["r1"], ["p"], kernel_shape=[2, 2], strides=[2, 2], name="mp"),
             N("ConvTranspose", ["p", "wt", "bt"], ["t"], kernel_shape=[4, 4], strides=[2, 2],
               pads=[1] * 4, name="up"),
             N("Concat", ["c2", "t"], ["cat"], axis=1, name="cat"),
             N("Split", ["cat", "split"], ["s0", "s1"], axis=1, name="split"),
             N("Conv", ["s0", "w3", "b3"], ["c3"], pads=[1] * 4, name="conv3"),
             N("Conv", ["s1", "w4", "b4"], ["c4"], name="conv4"),
             N("Add", ["c3", "c4"], ["y"], name="add")]
    init = [numpy_helper.from_array(np.asarray(v, np.int64 if k == "split" else np.float32), k)
            for k, v in inits.items()]
    g = helper.make_graph(
        nodes, "concat16", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, HW, HW])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, HW, HW])], init)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def test_int16_concat_group_bit_exact(tmp_path):
    m, _, res = compile_check(tmp_path, concat_net(), HW, ["conv2"])
    assert all(exact for exact, _ in res), res
    plan = m.report["precision"]
    # conv2 brought the transposed conv's phase convs with it (one group, one parameter set)
    assert plan["int16_layers"] == ["conv2", "up", "up_1", "up_2", "up_3"]
    assert plan["int16_tensors"] == ["c2", "cat", "s0", "s1", "t", "t__phase00", "t__phase01",
                                     "t__phase10", "t__phase11"]
    g = m.quantized_graph
    members = [n.output for n in g.nodes if n.op in (Op.CONCAT, Op.SLICE, Op.INTERLEAVE)]
    assert members and all(v.dtype == "int16" for v in members)
    assert len({id(v.quant) for v in members}) == 1   # one shared int16 set
    assert float(members[0].quant.zero_point) == 0.0
    conv1 = next(n for n in g.nodes if n.name == "conv1")
    assert conv1.output.dtype == "int8"   # outside the group: untouched


def test_int16_concat_group_tiled_bit_exact_in_any_queue_order(tmp_path):
    t = load_target().with_sram(4 * 1024)
    m, _, res = compile_check(tmp_path, concat_net(), HW, ["conv2"], target=t, schedules=2)
    assert m.report["precision"]["int16_layers"] == ["conv2", "up", "up_1", "up_2", "up_3"]
    assert all(exact for exact, _ in res), res
    assert really_tiled(m, HW)
