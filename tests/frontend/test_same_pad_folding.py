"""timm's "SAME" padding as torch.onnx writes it: each strided conv pads its input with pads
computed from ``Shape`` at run time (Shape -> Gather -> Cast -> Div -> Ceil -> ... -> Pad).

The second Shape reads the first Pad's output, whose shape ONNX shape inference knows only once
the first pads are folded: one round of folding left every later chain (and all of the network
after it) to a host segment. The import folds round by round until the graph stops shrinking.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from tcc_compiler.frontend import import_onnx
from tcc_compiler.interp import run_float
from tcc_compiler.placement import partition

I64 = TensorProto.INT64


def _same_pad(nodes: list, inits: list, x: str, tag: str, k: int, s: int) -> str:
    """Append timm's pad_same(x, k, s) for H and W; returns the padded tensor's name."""
    c = lambda name, v, dt=np.int64: inits.append(  # noqa: E731
        helper.make_tensor(f"{tag}_{name}", TensorProto.INT64 if dt is np.int64
                           else TensorProto.FLOAT, [], [v]))
    c("s", float(s), np.float32)
    c("k", k)
    c("sm", s)
    c("one", 1)
    c("zero", 0)
    c("two", 2)
    pads_before, pads_after = [], []
    for axis in (2, 3):
        t = f"{tag}{axis}"
        inits.append(helper.make_tensor(f"{t}_idx", I64, [], [axis]))
        nodes += [
            helper.make_node("Shape", [x], [f"{t}_shape"]),
            helper.make_node("Gather", [f"{t}_shape", f"{t}_idx"], [f"{t}_i"], axis=0),
            helper.make_node("Cast", [f"{t}_i"], [f"{t}_f"], to=TensorProto.FLOAT),
            helper.make_node("Div", [f"{t}_f", f"{tag}_s"], [f"{t}_q"]),
            helper.make_node("Ceil", [f"{t}_q"], [f"{t}_cf"]),
            helper.make_node("Cast", [f"{t}_cf"], [f"{t}_c"], to=I64),
            helper.make_node("Sub", [f"{t}_c", f"{tag}_one"], [f"{t}_c1"]),
            helper.make_node("Mul", [f"{t}_c1", f"{tag}_sm"], [f"{t}_m"]),
            helper.make_node("Add", [f"{t}_m", f"{tag}_k"], [f"{t}_a"]),
            helper.make_node("Sub", [f"{t}_a", f"{t}_i"], [f"{t}_p0"]),
            helper.make_node("Max", [f"{t}_p0", f"{tag}_zero"], [f"{t}_p"]),
            helper.make_node("Div", [f"{t}_p", f"{tag}_two"], [f"{t}_b"]),
            helper.make_node("Sub", [f"{t}_p", f"{t}_b"], [f"{t}_e"]),
        ]
        pads_before.append(f"{t}_b")
        pads_after.append(f"{t}_e")
    parts = []
    for name in [f"{tag}_zero", f"{tag}_zero", *pads_before,
                 f"{tag}_zero", f"{tag}_zero", *pads_after]:
        u = f"{name}_u{len(parts)}"
        nodes.append(helper.make_node("Unsqueeze", [name, "ax0"], [u]))
        parts.append(u)
    nodes += [helper.make_node("Concat", parts, [f"{tag}_pads"], axis=0),
              helper.make_node("Pad", [x, f"{tag}_pads"], [f"{tag}_out"])]
    return f"{tag}_out"


def _timm_same_model(hw: int = 17) -> onnx.ModelProto:
    """conv 3x3 s1 -> pad_same -> conv 3x3 s2 -> pad_same -> conv 3x3 s2 (like timm's tf_*)."""
    rng = np.random.default_rng(0)
    nodes, inits = [], [helper.make_tensor("ax0", I64, [1], [0])]
    x, c = "x", 3
    for i, (stride, pad) in enumerate([(1, 1), (2, 0), (2, 0)]):
        if not pad:
            x = _same_pad(nodes, inits, x, f"p{i}", 3, stride)
        w = rng.standard_normal((8, c, 3, 3)).astype(np.float32) * 0.3
        inits.append(onnx.numpy_helper.from_array(w, f"w{i}"))
        nodes += [helper.make_node("Conv", [x, f"w{i}"], [f"c{i}"], strides=[stride] * 2,
                                   pads=[pad] * 4, name=f"conv{i}"),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}")]
        x, c = f"r{i}", 8
    graph = helper.make_graph(
        nodes, "timm_same", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                           [1, 3, hw, hw])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, 8, 5, 5])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def test_chained_same_padding_folds_onto_the_npu():
    model = _timm_same_model()
    places = partition(model, "17x17x3")
    assert [p.node for p in places if p.device != "npu"] == []
    convs = [p for p in places if p.op_type == "Conv"]
    assert len(convs) == 3 and all(p.npu_op == "conv" for p in convs)


def test_folded_same_padding_matches_onnx_runtime():
    model = _timm_same_model()
    g = import_onnx(model, "17x17x3")
    assert sorted({n.op.value for n in g.nodes}) == ["conv", "relu"]
    x = np.random.default_rng(1).standard_normal((1, 3, 17, 17)).astype(np.float32)
    ref = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    got = run_float(g, x)[g.outputs[0].name]
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
