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
other and the executor must agree byte for byte). A conv whose output is int16 (mixed
precision, quant/precision.py allows it only where this fusion applies) requantizes to int16
and the epilogue interpolates its table of 257 int16 knots (CONV_CFG flags bit3 with bit5,
numerics/lut.py apply_lut_wide) to the lut's int8 output.
"""

from __future__ import annotations

from tcc_compiler.ir.graph import Graph, Node, Value
from tcc_compiler.ir.ops import ActKind, Op
from tcc_compiler.isa.spec import LUT_WIDE_KNOTS
from tcc_compiler.numerics.lut import LUT_ENTRIES
from tcc_compiler.quant.params import epilogue_lut


def find_lut_epilogues(graph: Graph, keep: set[int]) -> dict[int, Node]:
    """id(conv node) -> the lut node fused into its epilogue (see module docstring).

    Args:
        keep: ids of values that must stay tensors of their own (NPU outputs, values tied
            to channel views or DMA-only ops).
    """
    out: dict[int, Node] = {}
    for n in graph.nodes:
        if n.op is not Op.CONV or n.output.dtype not in ("int8", "int16") \
                or id(n.output) in keep or n.attrs.act.kind is ActKind.LEAKY:
            continue
        lut = epilogue_lut(n.output)
        if lut is not None:
            out[id(n)] = lut
    return out


def wide_lut_reader(v: Value) -> Node | None:
    """The lut op reading int16 conv output ``v`` as its only reader (its table is then
    fused into the conv's epilogue, which writes the lut's int8 output), else None: the
    reader :func:`~tcc_compiler.quant.params.epilogue_lut` names, as the fusion reads it."""
    return epilogue_lut(v) if v.dtype == "int16" else None


def table_bytes(lut: Node | None) -> int:
    """SRAM bytes of a fused lut's table: 256 int8 entries, or 257 int16 knots (514 bytes)
    when its input is int16; 0 for None (no fused lut)."""
    if lut is None:
        return 0
    return 2 * LUT_WIDE_KNOTS if lut.inputs[0].dtype == "int16" else LUT_ENTRIES
