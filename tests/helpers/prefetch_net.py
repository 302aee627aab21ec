"""A small net whose last convs are load-bound after compute-bound ones, for the cross-op
weight prefetch tests (schedule/prefetch.py)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

#: (out channels, kernel, stride) of the default net: three compute-bound 3x3 convs at 32x32
#: (9 KB of weights each), then two load-bound ones at 16x16 (74 KB and ``last`` * 256 bytes).
LAYERS = [(32, 3, 1)] * 3 + [(256, 3, 2)]


def prefetch_net(last: int = 512, extra: tuple[int, ...] = ()) -> onnx.ModelProto:
    """x[1, 32, 32, 32] NCHW float32 -> Conv + Relu per :data:`LAYERS`, then Conv1x1 256 ->
    ``last`` + Relu, then a Conv1x1 + Relu to each channel count in ``extra`` (opset 13,
    seeded weights)."""
    r = np.random.default_rng(0)
    inits, nodes, cur, cin = [], [], "x", 32
    layers = LAYERS + [(last, 1, 1)] + [(c, 1, 1) for c in extra]
    for i, (cout, k, s) in enumerate(layers):
        wt = (r.standard_normal((cout, cin, k, k)) / np.sqrt(k * k * cin)).astype(np.float32)
        b = (r.standard_normal(cout) * 0.1).astype(np.float32)
        inits += [numpy_helper.from_array(wt, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes.append(helper.make_node("Conv", [cur, f"w{i}", f"b{i}"], [f"c{i}"],
                                      kernel_shape=[k, k], pads=[k // 2] * 4, strides=[s, s],
                                      name=f"conv{i}"))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}"))
        cur, cin = f"r{i}", cout
    graph = helper.make_graph(
        nodes, "prefetch", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                          [1, 32, 32, 32])],
        [helper.make_tensor_value_info(cur, TensorProto.FLOAT, [1, cin, 16, 16])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def quantized_prefetch_net(last: int = 512, extra: tuple[int, ...] = ()):
    """(quantized graph, a fresh float32 NCHW input) of :func:`prefetch_net`."""
    from tcc_compiler.frontend import import_onnx
    from tcc_compiler.passes import PassManager, default_pipeline
    from tcc_compiler.quant import collect_ranges, quantize_graph

    g = PassManager(default_pipeline()).run(import_onnx(prefetch_net(last, extra)))
    r = np.random.default_rng(3)
    xs = [r.standard_normal((1, 32, 32, 32)).astype(np.float32) for _ in range(3)]
    quantize_graph(g, collect_ranges(g, xs[:2]))
    return g, xs[2]
