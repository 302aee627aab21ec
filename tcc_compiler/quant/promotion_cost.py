"""What one int16 promotion is estimated to add to a compiled network's time, before any
scheduling (``--precision auto``'s price; specs/quantization.md, "Mixed precision").

The estimate reads only the float graph and the target's numbers (specs/target.md): a
promotion makes some conv tiles slower and moves more bytes, and the two are added in cycles
(an upper bound of what the overlapped schedule adds; the report then prices the chosen set
with the real schedule, emit/precision.py):

* **outputs int16** (a layer's output, or a whole channel concat group: quant/precision.py):
  every byte written by the group's producers and read by its NPU readers is one more byte
  (``numel`` each way), and every conv/fc reading it runs ``int16_rate_divisor`` times its
  int8 cycles (schedule/cost.int16_rate), i.e. adds ``(divisor - 1) * MACs / rate``;
* **weights int16** (a conv/fc's): one more byte per weight read, and the layer's own
  ``(divisor - 1) * MACs / rate``;

with ``rate`` the MAC array's ``macs_per_cycle`` (a depthwise conv's: the depthwise
datapath's ``depthwise_channels_per_cycle * depthwise_taps_per_cycle``) and bytes turned into
cycles at ``dram_bytes_per_cycle``. ``auto`` uses it only to choose which of its promotions to
try leaving out first (quant/auto_precision.py).
"""

from __future__ import annotations

import math

from tcc_compiler.ir.graph import Graph, Node, Value
from tcc_compiler.ir.ops import CHANNEL_OPS, HOST_OPS, Op
from tcc_compiler.quant.precision import FOLLOWERS, follower_group, groups_by_value
from tcc_compiler.target import Target


def _numel(v: Value) -> int:
    """Elements of a value (its NCHW shape)."""
    return math.prod(v.shape)


def _macs(node: Node) -> int:
    """Multiply-accumulates of a conv/fc node (float graph: weight [O, C/group, kh, kw] or
    [O, ...]): output elements times the products per output."""
    return _numel(node.output) * math.prod(node.inputs[1].shape[1:])


def _compute_cycles(node: Node, tgt: Target) -> float:
    """The int8 compute cycles of a conv/fc at full rate (module docstring)."""
    c = node.inputs[0].shape[1]
    dw = node.op is Op.CONV and node.attrs.group == c and c > 1
    rate = (tgt.depthwise_channels_per_cycle * tgt.depthwise_taps_per_cycle if dw
            else tgt.macs_per_cycle)
    return _macs(node) / rate


def _members(node: Node, groups: dict) -> list[Value]:
    """The values that become int16 with ``node``'s output: its concat group, else the output
    and the pools/views that follow it."""
    if id(node.output) in groups:
        return groups[id(node.output)]
    return follower_group(node.output)


def activation_cost(graph: Graph, node: Node, tgt: Target, groups: dict | None = None) -> float:
    """Estimated cycles added by making ``node``'s output int16 (module docstring).
    ``groups``: :func:`~tcc_compiler.quant.precision.groups_by_value` of ``graph``."""
    groups = groups_by_value(graph) if groups is None else groups
    extra = (tgt.int16_rate_divisor - 1)
    nbytes, cycles = 0, 0.0
    for v in _members(node, groups):
        p = v.producer
        if p is not None and p.op not in CHANNEL_OPS and p.op not in FOLLOWERS:
            nbytes += _numel(v)
        for u, _ in v.uses:
            if u.op in CHANNEL_OPS or u.op in FOLLOWERS or u.op in HOST_OPS:
                continue
            nbytes += _numel(v)
            if u.op in (Op.CONV, Op.FC):
                cycles += extra * _compute_cycles(u, tgt)
    return cycles + nbytes / tgt.dram_bytes_per_cycle


def weights_cost(node: Node, tgt: Target) -> float:
    """Estimated cycles added by making conv/fc ``node``'s weights int16 (module docstring)."""
    return ((tgt.int16_rate_divisor - 1) * _compute_cycles(node, tgt)
            + node.inputs[1].const.size / tgt.dram_bytes_per_cycle)


def network_cycles(graph: Graph, tgt: Target) -> float:
    """The int8 compute cycles of every NPU conv/fc of the float ``graph`` at full rate (the
    sum of their MACs over the MAC array's or the depthwise datapath's rate, module
    docstring): the scale a promotion's added cycles are measured against."""
    return sum(_compute_cycles(n, tgt) for n in graph.nodes if n.op in (Op.CONV, Op.FC))
