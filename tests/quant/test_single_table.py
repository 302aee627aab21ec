"""One rule for "this lut quantizes to one shared table" (quant/params.single_table), read by
the int16 planner (quant/precision.wide_lut_reader), the conv's LUT epilogue fusion
(schedule/epilogue.find_lut_epilogues) and the conv geometry's written width
(schedule/epilogue.wide_lut_reader, through quant/params.epilogue_lut): all answer alike for
every slope kind."""

from __future__ import annotations

import numpy as np
import pytest

from tcc_compiler.ir.graph import Graph, Value
from tcc_compiler.ir.ops import ConvAttrs, LutAttrs, LutFunc, Op
from tcc_compiler.quant.params import single_table
from tcc_compiler.quant.precision import wide_lut_reader
from tcc_compiler.schedule.epilogue import find_lut_epilogues
from tcc_compiler.schedule.epilogue import wide_lut_reader as fused_wide_reader


def _conv_lut(func: LutFunc, slope: Value | None) -> tuple[Graph, object, object]:
    """x -> conv "c" -> lut ``func`` (slope input ``slope``) -> y, the conv output int8."""
    g = Graph()
    x, c, y = Value("x", (1, 4, 4, 4), "int8"), Value("c", (1, 4, 4, 4), "int8"), \
        Value("y", (1, 4, 4, 4), "int8")
    w = Value("w", (4, 4, 1, 1), "int8", const=np.ones((4, 4, 1, 1), np.int8))
    g.inputs, g.outputs = [x], [y]
    conv = g.add_node(Op.CONV, "c", [x, w], [c], ConvAttrs(kernel=(1, 1)))
    lut = g.add_node(Op.LUT, "l", [c] + ([slope] if slope is not None else []), [y],
                     LutAttrs(func))
    return g, conv, lut


@pytest.mark.parametrize("func,slope,single", [
    (LutFunc.SIGMOID, None, True),
    (LutFunc.PRELU, Value("s", (1,), "float32", const=np.array([0.25], np.float32)), True),
    (LutFunc.PRELU, Value("s", (4, 1, 1), "float32",
                          const=np.linspace(0.1, 0.4, 4, dtype=np.float32).reshape(4, 1, 1)),
     False),
    (LutFunc.PRELU, Value("s", (1,), "float32"), False),   # a slope that is not a constant
])
def test_planner_and_fusion_agree_on_single_tables(func, slope, single):
    g, conv, lut = _conv_lut(func, slope)
    assert single_table(lut) is single
    assert (wide_lut_reader(conv, g) is lut) is single
    fused = find_lut_epilogues(g, set())
    assert (fused.get(id(conv)) is lut) is single



@pytest.mark.parametrize("func,slope,single", [
    (LutFunc.SIGMOID, None, True),
    (LutFunc.PRELU, Value("s", (4, 1, 1), "float32",
                          const=np.linspace(0.1, 0.4, 4, dtype=np.float32).reshape(4, 1, 1)),
     False),
])
def test_int16_geometry_reader_agrees_with_fusion(func, slope, single):
    """An int16 conv output's lut counts as the epilogue's (the conv then writes int8) only
    when the fusion would take it: a per-channel prelu is no epilogue table."""
    g, conv, lut = _conv_lut(func, slope)
    conv.output.dtype = "int16"
    assert (fused_wide_reader(conv.output) is lut) is single
    assert (find_lut_epilogues(g, set()).get(id(conv)) is lut) is single
