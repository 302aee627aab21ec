"""Lookup-table activations applied in the epilogue of the producing conv (CONV_CFG flags
bit3): Conv + SiLU / Sigmoid / HardSwish / ... as one op, not a LUT_TILE pass over DRAM.

A conv and the lut op reading its output are lowered together when the conv's int8 output is
read by nothing else (not the host, not a channel view, not a reshape), the lut has one table
(every function but a per-channel PRelu), the conv is not cascaded and has no two-slope
epilogue (CONV_CFG out_mode bit2 takes no table). The conv's output
then never exists outside the MAC array's output stage: the memory planner gives it no buffer
and runs the lut at the conv's step; the conv writes the lut's output. The numerics are the
unfused pair's exactly: the conv requantizes to its own output quantization (the table's
input), then the table maps to the lut's (quant/golden.py computes the two ops one after the
other and the executor must agree byte for byte).
"""

from __future__ import annotations

from tcc_compiler.ir.graph import Graph, Node
from tcc_compiler.ir.ops import ActKind, LutFunc, Op


def _single_table(lut: Node) -> bool:
    if lut.attrs.func is not LutFunc.PRELU:
        return True
    slope = lut.inputs[1].const if len(lut.inputs) > 1 and lut.inputs[1] is not None else None
    return slope is not None and slope.size == 1


def find_lut_epilogues(graph: Graph, keep: set[int]) -> dict[int, Node]:
    """id(conv node) -> the lut node fused into its epilogue (see module docstring).

    Args:
        keep: ids of values that must stay tensors of their own (NPU outputs, values tied
            to channel views or DMA-only ops).
    """
    out: dict[int, Node] = {}
    for n in graph.nodes:
        if n.op is not Op.CONV or n.output.dtype != "int8" or id(n.output) in keep \
                or n.attrs.act.kind is ActKind.LEAKY:
            continue
        if len(n.output.uses) != 1:
            continue
        lut, idx = n.output.uses[0]
        if lut.op is Op.LUT and idx == 0 and _single_table(lut):
            out[id(n)] = lut
    return out
