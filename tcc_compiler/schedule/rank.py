"""Ranking the schedule search's candidates by the cost model before lowering them.

A candidate of the search (:mod:`tcc_compiler.schedule.search`: a resident-zone size, with or
without cascading) is fixed by its memory plan
(:func:`~tcc_compiler.schedule.memory.plan_memory`, a few ms), while lowering it
(:class:`~tcc_compiler.schedule.lowering.Lowering`: every command, the weight layout and its
compression) costs one to two orders of magnitude more. So the
search plans every candidate, prices the plan with :func:`estimate_cycles` -- the planners' own
estimates, no commands -- and lowers only the *finalists* (:func:`finalists`: the few
distinct plans with the lowest estimates); the replay of the lowered programs
(:func:`~tcc_compiler.schedule.cost.replay`) then picks the winner as before.

Two candidates with equal plans (:func:`plan_key`) lower to the same program (the lowering is a
deterministic function of graph, target and plan), so only the first is kept.
"""

from __future__ import annotations

from tcc_compiler.ir.graph import Graph, Node, Value
from tcc_compiler.ir.ops import CHANNEL_OPS, HOST_OPS, Op, VIEW_OPS
from tcc_compiler.schedule.epilogue import table_bytes
from tcc_compiler.schedule import cost
from tcc_compiler.schedule.geom import conv_geom, elem_bytes, hwc
from tcc_compiler.schedule.memory import MemoryPlan
from tcc_compiler.schedule.tiling import align_up, plan_conv
from tcc_compiler.target import Target

#: The finalists (lowered and replayed): the :data:`FINALISTS` candidates with the lowest
#: estimates and any other within :data:`FINALIST_MARGIN` of the lowest. The estimate sums
#: per-op figures: it misses the overlap of an op's loads with the previous op's compute,
#: which the replay has, more for ops run one by one (estimate 16-22 % high) than for cascaded
#: chains (0-2 %), so it ranks well within each kind but not always across them. Measured on
#: the zoo (the 12 ResNet cases of tools/golden.py, MobileNet-V2 at 224x224 and 640x320,
#: MobileNet-V3-Large, EfficientNet-Lite0), the replay's best had the lowest distinct estimate
#: in 11 cases, the second lowest in 4 and the third lowest once (ResNet-18 960x520), and was
#: up to 7.7 % above the lowest (ResNet-50 640x320: 4 chains and a 768 KiB zone against 14
#: chains and no zone); 3 to 6 of the 5-14 distinct candidates are lowered.
FINALISTS = 3
FINALIST_MARGIN = 0.05


def plan_key(mem: MemoryPlan) -> tuple:
    """A hashable fingerprint of ``mem``: equal keys mean equal plans, hence equal programs.

    The zone-independent parts (views, fused epilogues, I/O) are left out; each cascaded chain
    is named by its ops and its band height (its band plan is a function of them, the SRAM
    above its base and the residency of its operands, which the key holds; the height also
    depends on :func:`plan_memory`'s ``band_slack``).
    """
    chains = tuple(sorted((k, tuple(id(m) for m in c.nodes), id(c.side), c.rows)
                          for k, c in mem.chains.items()))
    return (tuple(sorted(mem.tensors.items())), tuple(sorted(mem.res.items())),
            tuple(sorted(mem.op_base.items())), mem.zone_used, chains, mem.arena_bytes)


def _dram_bytes(v: Value | None, mem: MemoryPlan) -> int:
    """Bytes op traffic moves for ``v``: its NHWC size unless constant, resident or absent."""
    if v is None or v.const is not None or mem.resident(v) is not None:
        return 0
    h, w, c = hwc(v)
    return h * w * c * elem_bytes(v)


def _conv_cycles(n: Node, mem: MemoryPlan, t: Target) -> int:
    """The tile planner's estimate of conv/FC ``n`` under ``mem`` (what its lowering plans:
    the SRAM above its base, less a fused table's)."""
    g = conv_geom(n, t)
    lut = align_up(table_bytes(mem.fused.get(id(n))), t.sram_align_bytes)
    return plan_conv(g, t, t.sram_capacity_bytes - mem.base(n) - lut,
                     mem.conv_residency(n, g)).est_cycles


def _vector_cycles(n: Node, mem: MemoryPlan, t: Target) -> float:
    """A vector-unit or DMA-only op: the longer of its DRAM traffic (non-resident operands and
    result) and one vector pass over its output."""
    io = sum(_dram_bytes(v, mem) for v in [*n.inputs, n.output])
    h, w, c = hwc(n.output)
    return max(cost.transfer_cycles(io, t), cost.vector_cycles(h * w * c, t))


def estimate_cycles(graph: Graph, mem: MemoryPlan, t: Target) -> int:
    """Estimated cycles of the program ``graph`` lowers to under memory plan ``mem``, without
    lowering it: per op as the lowering visits them, a cascaded chain's band-plan estimate
    (``Chain.est_cycles``), a conv's tile-plan estimate
    (:func:`~tcc_compiler.schedule.tiling.plan_conv`, ``tile_pipeline_cycles`` of its MACs and
    DRAM traffic) and for other ops the longer of DRAM traffic and one vector pass (cycles,
    summed: ops are assumed not to overlap)."""
    total = 0.0
    for n in graph.nodes:
        if n.op in HOST_OPS or n.op in VIEW_OPS or id(n) in mem.chained \
                or id(n) in mem.fused_luts:
            continue
        if n.op in CHANNEL_OPS and id(n) not in mem.views.copies:
            continue   # a view: no commands of its own
        if id(n) in mem.chains:
            total += mem.chains[id(n)].est_cycles
        elif n.op in (Op.CONV, Op.FC):
            total += _conv_cycles(n, mem, t)
        else:
            total += _vector_cycles(n, mem, t)
    return int(total)


def finalists(estimates: list[int], count: int = FINALISTS,
              margin: float = FINALIST_MARGIN) -> list[int]:
    """Indices of the finalists among ``estimates`` (one per distinct candidate), in their
    given order: the ``count`` lowest (ties: the earlier) and any within ``margin`` of the
    lowest."""
    if not estimates:
        return []
    order = sorted(range(len(estimates)), key=lambda i: (estimates[i], i))
    cut = estimates[order[0]] * (1 + margin)
    return sorted(set(order[:count]) | {i for i, e in enumerate(estimates) if e <= cut})
