"""A small net whose last convs are load-bound after compute-bound ones, for the cross-op
weight prefetch tests (schedule/prefetch.py), and the :func:`prefetch_plain` fixture: that net
quantized and lowered without prefetch, the set-up the prefetch, hand-off, leading and
piece-fitting tests start from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

#: SRAM bytes the prefetch tests lower :func:`prefetch_net` with.
PREFETCH_BUDGET = 512 * 1024

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
    from conftest import quantized_model

    return quantized_model(prefetch_net(last, extra))


@dataclass(frozen=True)
class PlainLowering:
    """:func:`quantized_prefetch_net` lowered without prefetch on a :data:`PREFETCH_BUDGET`
    SRAM: the graph ``g``, input ``x`` (float32 NCHW), target ``t``, the ``Lowering`` ``lw``
    (its memory plan ``lw.mem``), its program ``plain`` and that program's replay ``spans``."""

    g: Any
    x: np.ndarray
    t: Any
    lw: Any
    plain: Any
    spans: list

    def hoist(self, consumer: str | None = None, **kw):
        """``plan_hoist`` (eager) on the plain program for the conv named ``consumer`` (None:
        the one the planner picks); ``kw`` as ``plan_hoist`` takes them (``busy``)."""
        from tcc_compiler.schedule.hoist import plan_hoist

        if consumer is not None:
            kw["consumer"] = [li.name for li in self.plain.layers].index(consumer)
        return plan_hoist(self.g, self.lw.mem, self.plain, self.spans, self.t, eager=True, **kw)


def plain_lowering(last: int = 512, extra: tuple[int, ...] = ()) -> PlainLowering:
    """:class:`PlainLowering` of ``quantized_prefetch_net(last, extra)``."""
    from tcc_compiler.schedule.cost import replay
    from tcc_compiler.schedule.lowering import Lowering
    from tcc_compiler.target import load_target

    g, x = quantized_prefetch_net(last, extra)
    t = load_target().with_sram(PREFETCH_BUDGET)
    lw = Lowering(g, t, 0)
    plain = lw.run()
    return PlainLowering(g, x, t, lw, plain, replay(plain.commands, t))


@pytest.fixture(scope="session")
def prefetch_plain():
    """``build(last=512, extra=())`` -> the :class:`PlainLowering` of that net, built once per
    session for each (the tests read it, never change it)."""
    made: dict = {}

    def build(last: int = 512, extra: tuple[int, ...] = ()) -> PlainLowering:
        key = (last, tuple(extra))
        if key not in made:
            made[key] = plain_lowering(last, extra)
        return made[key]
    return build
