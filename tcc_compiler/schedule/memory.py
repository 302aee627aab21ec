"""Memory planning: DRAM buffers by liveness, the SRAM resident zone and every op's tile-area
base (the arena and the per-op SRAM allocator are in schedule/arena.py).

DRAM: each tensor produced by an NPU op lives from its producer to its last reader (views
alias their source). Tensors are placed largest first at the lowest offset that does not
overlap any already-placed tensor whose lifetime overlaps (the TFLite arena planner's strategy),
so memory of dead tensors is reused (:func:`~tcc_compiler.schedule.arena.plan_arena`).

SRAM: ``[0, zone_bytes)`` may hold resident tensors (whole tensors kept on chip, chosen greedily
by DRAM bytes saved); an op's tile buffers use ``[base, sram)`` with ``base`` the top of the
resident tensors live during the op and the op before it. Chains worth cascading
(schedule/cascade.py) are chosen here too, since their intermediates need no DRAM buffer.
:func:`plan_memory` returns all of it as a frozen :class:`MemoryPlan`.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

import numpy as np

from tcc_compiler.ir.graph import Graph, Node, Value
from tcc_compiler.ir.ops import HOST_OPS, Op, VIEW_OPS
from tcc_compiler.errors import ScheduleError
from tcc_compiler.isa.spec import REGION_OFFSET_MASK, Region
from tcc_compiler.schedule.arena import Buffer, arena_bytes, lower_tops, plan_arena
from tcc_compiler.schedule.cascade import (Chain, find_chains, plan_chain, separate_cycles,
                                           split_chain, sub_chain)
from tcc_compiler.schedule.geom import conv_geom, elem_bytes, hwc, pool_geom
from tcc_compiler.schedule.overwrite import keep_overwrites, overwrite_pairs
from tcc_compiler.schedule.program import IoTensor, Resident, Tensor
from tcc_compiler.schedule.tiling import ConvGeom, Residency, align_up
from tcc_compiler.schedule.epilogue import find_lut_epilogues
from tcc_compiler.schedule.views import ChannelViews, npu_output_ids, plan_views
from tcc_compiler.target import Target


def root(v: Value) -> Value:
    """The value a chain of views (reshape/flatten) over ``v`` aliases."""
    while v.producer is not None and v.producer.op in VIEW_OPS:
        v = v.producer.inputs[0]
    return v


def readers(v: Value) -> list[Node]:
    """Every op reading ``v``, through views (the views themselves included)."""
    out = []
    for n, _ in v.uses:
        if n.op in VIEW_OPS:
            out.extend(readers(n.output))
        out.append(n)
    return out


@dataclass(frozen=True)
class MemoryPlan:
    """Where every NPU tensor lives and where every op's tile buffers start (frozen).

    Attributes:
        tensors: id(value) -> its DRAM :class:`Tensor` (input, activations, outputs, views).
        res: id(value) -> its :class:`Resident` place in the SRAM zone.
        op_base: id(node) -> SRAM bytes below the op's tile area.
        zone_used: bytes of the resident zone the resident tensors occupy (peak over time).
        chains: id(last node of a cascaded chain) -> its planned :class:`Chain`.
        chained: ids of the other nodes of cascaded chains (run at their last op's place).
        arena_bytes, input_bytes, output_bytes: DRAM region sizes (ACT, INPUT, OUTPUT).
        inputs, outputs: the network's I/O descriptors.
        views: the channel concat/slice views and copies (schedule/views.py).
        fused: id(conv) -> the lut node applied in its epilogue (schedule/epilogue.py); the
            conv writes the lut's output and the lut emits nothing of its own.
    """

    tensors: Mapping[int, Tensor]
    res: Mapping[int, Resident]
    op_base: Mapping[int, int]
    zone_used: int
    chains: Mapping[int, Chain]
    chained: frozenset[int]
    arena_bytes: int
    input_bytes: int
    output_bytes: int
    inputs: tuple[IoTensor, ...]
    outputs: tuple[IoTensor, ...]
    views: ChannelViews = ChannelViews({}, {}, frozenset())
    fused: Mapping[int, Node] = field(default_factory=lambda: MappingProxyType({}))

    @functools.cached_property
    def fused_luts(self) -> frozenset[int]:
        """ids of the lut nodes run in a conv's epilogue (computed once: the lowering asks
        per op)."""
        return frozenset(id(lut) for lut in self.fused.values())

    def conv_output(self, n: Node) -> Value:
        """The value conv ``n`` writes: its lut's output when the lut is fused into it."""
        lut = self.fused.get(id(n))
        return lut.output if lut is not None else n.output

    def resident(self, v: Value | None) -> Resident | None:
        """The resident place of ``v`` (None: not resident, or no value)."""
        return self.res.get(id(v)) if v is not None else None

    def tensor(self, v: Value | None) -> Tensor | None:
        """The DRAM tensor of ``v`` (None: none, e.g. a cascade intermediate)."""
        return self.tensors.get(id(v)) if v is not None else None

    def base(self, n: Node) -> int:
        """SRAM bytes below op ``n``'s tile area."""
        return self.op_base.get(id(n), 0)

    def conv_residency(self, n: Node, g: ConvGeom) -> Residency:
        """Which operands of conv ``n`` (geometry ``g``) are resident."""
        return Residency(id(n.inputs[0]) in self.res, id(self.conv_output(n)) in self.res,
                         g.has_shortcut and id(n.input(3)) in self.res)


#: With ``cascade_resident``, a chain is cascaded although its intermediates would be resident
#: when those take at least this fraction of the SRAM (MobileNetV2's 112x112 stage: 1.2 MB).
FREEING_FRACTION = 0.5

#: The band buffers and weights of such a chain take at most this fraction of the SRAM, so
#: that cascading it frees SRAM rather than filling it with taller bands.
FREEING_BAND_FRACTION = 0.25

#: :data:`FREEING_FRACTION` of a ``compact`` plan (:func:`plan_memory`): MobileNetV2's
#: 56x56x144 blocks (0.9 MB of intermediates) are cascaded too.
COMPACT_FREEING_FRACTION = 0.4


def plan_memory(graph: Graph, t: Target, zone_bytes: int, cascade: bool,
                reuse: bool = True, pinned: frozenset = frozenset(),
                cascade_resident: bool = False, compact: bool = False,
                split: bool = False, band_slack: float = 0.0,
                overwrite: bool = False) -> MemoryPlan:
    """Plan DRAM, the resident zone (``zone_bytes``, aligned by the caller) and, with
    ``cascade``, the chains worth cascading. ``cascade_resident``: a chain whose intermediates
    would be resident is cascaded too when they are large (:data:`FREEING_FRACTION`; by
    default it is not, since a resident intermediate already costs no DRAM traffic), in
    short bands (:data:`FREEING_BAND_FRACTION`): its intermediates then never exist whole,
    which frees the SRAM they would hold for cross-op weight prefetch (schedule/prefetch.py;
    MobileNetV2's 112x112x96 expand output holds 1.2 MB of the 2 MB SRAM otherwise).
    ``reuse=False`` gives every activation its own DRAM bytes for the whole program (no reuse
    of a dead tensor's memory): a multi-core program's cores run ops out of graph order, so a
    liveness plan in that order would let one core overwrite bytes the other still reads
    (schedule/cores.py). ``pinned``: ids of values
    that stay in DRAM, never resident (tensors one core writes and the other reads).
    ``compact`` (with ``cascade_resident``) plans for the SRAM left to weight prefetch: chains
    whose resident intermediates take :data:`COMPACT_FREEING_FRACTION` of the SRAM are
    cascaded, and the resident zone is placed by first use (:func:`plan_arena` ``by_time``)
    when that fits the zone and lowers :func:`top_sum` -- every op's tile area, and so the
    SRAM above it, starts at the top of the resident tensors live around it, so a small
    tensor placed above large ones that live later (the arena's largest-first order) takes
    the SRAM below it away from the ops before them. ``split``: a chain that does not fit or
    pay whole is cascaded in pieces (:func:`~tcc_compiler.schedule.cascade.split_chain`).
    ``band_slack``: every cascaded chain takes the band height with the smallest buffers
    among those estimated at most this fraction slower than the fastest
    (:func:`~tcc_compiler.schedule.cascade.plan_chain` ``slack``): SRAM the chain leaves to
    cross-op weight prefetch (schedule/search.py tries it for networks with depthwise
    layers); 0: the fastest band height. ``overwrite``: a residual conv's output takes its
    shortcut's resident bytes where it is the shortcut's last reader (schedule/overwrite.py).

    Raises:
        ScheduleError: an op's tiles cannot fit (from the chain planner's tile estimates); a
            DRAM region (ACT, INPUT, OUTPUT) larger than the 2**30 bytes its addresses reach.
        UnsupportedError: a tensor shape the NPU cannot hold.
    """
    p = _Planner(graph, t, zone_bytes, cascade)
    p.reuse, p.pinned, p.cascade_resident = reuse, pinned, cascade_resident
    p.compact, p.split, p.band_slack = compact, split, band_slack
    p.overwrite = overwrite
    return p.plan()


class _Planner:
    """The working state of :func:`plan_memory`."""

    def __init__(self, graph: Graph, t: Target, zone_bytes: int, cascade: bool):
        self.g, self.t, self.zone_bytes, self.cascade = graph, t, zone_bytes, cascade
        self.reuse = True
        self.pinned: frozenset = frozenset()
        self.cascade_resident = False
        self.compact = False
        self.split = False
        self.band_slack = 0.0
        self.overwrite = False
        self.freeing: set[int] = set()
        self.tensors: dict[int, Tensor] = {}
        self.res: dict[int, Resident] = {}
        self.op_base: dict[int, int] = {}
        self.zone_used = 0
        self.npu_nodes = [n for n in graph.nodes if n.op not in HOST_OPS]
        self.views = plan_views(graph)
        self.fused = find_lut_epilogues(graph, npu_output_ids(graph) | set(self.views.tied))
        self.fused_luts = {id(lut) for lut in self.fused.values()}
        self.children: dict[int, list[Value]] = {}   # id(value) -> values placed in it
        for n in self.npu_nodes:
            for v in n.outputs:
                if id(v) in self.views.place:
                    self.children.setdefault(id(self.views.place[id(v)][0]), []).append(v)

    def plan(self) -> MemoryPlan:
        al = self.t.dram_align_bytes
        in_off = 0   # the inputs one after another in the INPUT region, each aligned
        for inp in self.g.inputs:
            self.tensors[id(inp)] = Tensor(Region.INPUT, in_off, hwc(inp), elem_bytes(inp))
            in_off = align_up(in_off + self.tensors[id(inp)].nbytes, al)
        uniq = self._npu_outputs()
        out_off = 0
        out_roots = {}
        for v in uniq:
            r = root(v)
            tensor = Tensor(Region.OUTPUT, out_off, hwc(r), elem_bytes(r))
            out_roots[id(r)] = tensor
            out_off = align_up(out_off + tensor.nbytes, al)
        bufs, resident, chains = self._plan_with_chains(out_roots)
        bufs = [(v, b) for v, b in bufs if id(v) not in resident]
        if not self.reuse:   # DRAM tensors live for the whole program (the zone is per core)
            for _, b in bufs:
                b.first, b.last = 0, len(self.npu_nodes)
        arena = plan_arena([b for _, b in bufs], al)
        for v, b in bufs:
            self.tensors[id(v)] = Tensor(Region.ACT, b.offset, hwc(v), elem_bytes(v))
        self._alias_views()
        self._alias_channels()
        for region, size in (("ACT", arena), ("INPUT", in_off), ("OUTPUT", out_off)):
            if size > REGION_OFFSET_MASK + 1:   # a DRAM address holds a 30-bit offset
                raise ScheduleError(f"the {region} region needs {size:,} bytes of DRAM, more "
                                    f"than the 2**30 a region holds (buffers aligned to "
                                    f"memory.dram_align_bytes = {al:,}); use a smaller "
                                    "input, or a target with a smaller dram_align_bytes")
        ins = tuple(_io(v, self.tensors[id(v)]) for v in self.g.inputs)
        outs = tuple(_io(v, self.tensors[id(root(v))]) for v in uniq)
        return MemoryPlan(
            MappingProxyType(self.tensors), MappingProxyType(self.res),
            MappingProxyType(self.op_base), self.zone_used,
            MappingProxyType({id(c.nodes[-1]): c for c in chains}),
            frozenset(id(m) for c in chains for m in c.inner()),
            max(arena, al), max(in_off, al), max(out_off, al),
            ins, outs, self.views, MappingProxyType(dict(self.fused)))

    def _npu_outputs(self) -> list[Value]:
        """NPU outputs, one per root: graph outputs made by NPU ops, or inputs of host ops."""
        outs: list[Value] = []
        for n in self.g.nodes:
            if n.op in HOST_OPS and n.inputs[0].producer is not None \
                    and n.inputs[0].producer.op not in HOST_OPS:
                outs.append(n.inputs[0])
        for o in self.g.outputs:
            if o.producer is not None and o.producer.op not in HOST_OPS:
                outs.append(o)
        uniq: list[Value] = []
        for v in outs:
            r = root(v)
            if all(root(u) is not r for u in uniq):
                uniq.append(v)
        return uniq

    def _plan_with_chains(self, out_roots: dict):
        """Buffers and resident set, re-planned with the chains chosen (those that no longer
        fit after a re-plan are dropped, up to four rounds). Returns (bufs, resident,
        chains)."""
        bufs, resident = self._plan_buffers(out_roots, [])
        if not self.cascade:
            return bufs, resident, []
        chains = self._choose_chains(out_roots)
        for _ in range(4):  # re-plan with the chains; drop those that no longer fit
            if not chains:
                break
            bufs, resident = self._plan_buffers(out_roots, chains)
            fits = [c for c in chains if self._plan_chain(c)]
            if len(fits) == len(chains):
                break
            chains = fits
        else:
            chains = []
        if not chains:
            bufs, resident = self._plan_buffers(out_roots, [])
        return bufs, resident, chains

    def _alias_views(self) -> None:
        """Views alias their source (resident or in DRAM)."""
        for n in self.npu_nodes:
            if n.op not in VIEW_OPS:
                continue
            src = root(n.inputs[0])
            if id(src) in self.res:
                src_r = self.res[id(src)]
                self.res[id(n.output)] = Resident(src_r.sram, hwc(n.output), src_r.elem_bytes)
            else:
                s = self.tensors[id(src)]
                self.tensors[id(n.output)] = Tensor(s.region, s.offset, hwc(n.output),
                                                    s.elem_bytes)

    def _alias_channels(self) -> None:
        """Channel views (schedule/views.py) alias a channel range of their buffer's tensor."""
        for n in self.npu_nodes:
            for v in n.outputs:
                if id(v) in self.views.place:
                    r, spec = self.views.resolve(v)
                    self.tensors[id(v)] = self.tensors[id(r)].view(spec, hwc(v))

    def _alias_readers(self, v: Value) -> list[Node]:
        """Every op reading ``v`` or a value aliasing its buffer: through views and the
        channel views placed in it."""
        out = []
        for n, _ in v.uses:
            out.append(n)
            if n.op in VIEW_OPS:
                out.extend(self._alias_readers(n.output))
        for m in self.children.get(id(v), ()):
            out.extend(self._alias_readers(m))
        return out

    def _alias_writers(self, v: Value) -> list[Node]:
        """The producers of the channel views placed in ``v`` (recursively)."""
        out = []
        for m in self.children.get(id(v), ()):
            out.append(m.producer)
            out.extend(self._alias_writers(m))
        return out

    def _steps(self, chains: list[Chain]) -> tuple[dict[int, int], set[int]]:
        """(id(node) -> the step it runs at, ids of the values that get no buffer): a chain's
        ops run at its last op's step and its intermediates stay in SRAM; a lut fused into a
        conv's epilogue runs at the conv's step, whose own output is never stored."""
        step = {id(n): i for i, n in enumerate(self.npu_nodes)}
        inter: set[int] = set()
        for c in chains:
            for m in c.inner():
                step[id(m)] = step[id(c.nodes[-1])]
                inter.add(id(m.output))
        for conv_id, lut in self.fused.items():
            step[id(lut)] = step[conv_id]
            inter.add(id(lut.inputs[0]))
        return step, inter

    def _plan_buffers(self, out_roots: dict, chains: list[Chain]):
        """DRAM buffers of the activations by liveness, the resident set and every op's tile
        area base (:attr:`op_base`), with ``chains`` cascaded: their intermediates get no
        buffer and all their ops run at the step of their last op.

        Returns:
            (bufs, resident): the (value, :class:`Buffer`) pairs of every non-output tensor
            and the ids of the values kept resident.
        """
        npu_nodes = self.npu_nodes
        step, inter = self._steps(chains)
        skip = {id(m) for c in chains for m in c.inner()} | self.fused_luts
        bufs = []
        for i, n in enumerate(npu_nodes):
            if n.op in VIEW_OPS or id(n.output) in inter or id(n.output) in self.views.place:
                continue
            v = n.output
            if id(v) in out_roots:
                self.tensors[id(v)] = out_roots[id(v)]
                continue
            last = first = step[id(n)]
            for user in self._alias_readers(v):
                last = max(last, step.get(id(user), len(npu_nodes)))
            for w in self._alias_writers(v):   # channel views written before the concat
                first = min(first, step.get(id(w), i))
            h, w_, c = hwc(v)
            bufs.append((v, Buffer(v.name, h * w_ * c * elem_bytes(v), first, last)))
        resident = self._plan_zone(bufs, step, skip | {id(c.nodes[-1]) for c in chains})
        live = [(b.first, b.last, self.res[id(v)]) for v, b in bufs if id(v) in resident]
        prev_top = 0
        self.op_base = {}
        for i, n in enumerate(npu_nodes):  # the resident zone's top while op i runs
            if n.op in VIEW_OPS or id(n) in skip:
                continue
            top = max((r.sram + r.nbytes for f, last, r in live if f <= i <= last), default=0)
            # tile buffers also stay clear of the tensors live during the previous op, so that
            # their loads (prefetched while that op computes) need not wait for it to finish
            self.op_base[id(n)] = align_up(max(top, prev_top), self.t.sram_align_bytes)
            prev_top = top
        return bufs, resident

    def _chain_geom(self, n: Node) -> ConvGeom:
        if n.op is Op.CONV:
            return conv_geom(n, self.t)
        return pool_geom(n, self.g.meta.get("source", ""))[0]

    def _residency(self, c: Chain) -> Residency:
        """Which of chain ``c``'s input, output and (not side-made) shortcut are resident."""
        last = c.nodes[-1]
        sc = last.input(3) if last.op is Op.CONV else None
        return Residency(id(c.nodes[0].inputs[0]) in self.res, id(last.output) in self.res,
                         sc is not None and c.side is None and id(sc) in self.res)

    def _plan_chain(self, c: Chain, versus_alone: bool = True) -> bool:
        """Plan ``c``'s bands in the SRAM above its tile-area base; True if it fits and (with
        ``versus_alone``) is estimated faster than its ops one by one
        (:func:`cascade.plan_chain`)."""
        base = self.op_base.get(id(c.nodes[-1]), 0)
        res = self._residency(c)
        budget = self.t.sram_capacity_bytes - base
        if self.cascade_resident and id(c.nodes[-1]) in self.freeing:
            budget = min(budget, int(self.t.sram_capacity_bytes * FREEING_BAND_FRACTION))
        return plan_chain(c, self.t, budget, res, versus_alone, self.band_slack)

    def _choose_chains(self, out_roots: dict) -> list[Chain]:
        """The chains worth cascading under the current (chain-free) plan: structural
        candidates (:func:`cascade.find_chains`) none of whose intermediates is resident (a
        resident intermediate already costs no DRAM traffic; with :attr:`cascade_resident`
        they may be) and whose band plan fits and is estimated faster; with :attr:`split`, the
        others are cascaded in pieces (:func:`cascade.split_chain`)."""
        out_ids = set(out_roots) | {id(v) for v in self.g.outputs} | set(self.views.tied)
        cands = find_chains(self.npu_nodes, readers, self._chain_geom, out_ids)
        self.freeing = {id(c.nodes[-1]) for c in cands if self._frees(c)}
        whole = [c for c in cands if self._may_cascade(c) and self._plan_chain(c)]
        if not self.split:
            return whole
        out = []
        for c in cands:   # a chain that does not fit or pay whole, cascaded piecewise
            out += [c] if any(c is w for w in whole) else split_chain(
                c, self.t, lambda p: self._may_cascade(p, True) and self._plan_chain(p, False),
                lambda i, c=c: self._alone_cycles(c, i))
        self.freeing = {id(c.nodes[-1]) for c in out if self._frees(c)}
        return out

    def _may_cascade(self, c: Chain, piece: bool = False) -> bool:
        """Whether ``c`` may be cascaded: none of its intermediates is resident (unless it is
        cascaded to free SRAM, :meth:`_frees`; a ``piece`` of a candidate is judged on its
        own) and no op of it has a fused lut epilogue."""
        if piece:
            self.freeing.discard(id(c.nodes[-1]))
            if self._frees(c):
                self.freeing.add(id(c.nodes[-1]))
        return ((id(c.nodes[-1]) in self.freeing
                 or not any(id(m.output) in self.res for m in c.inner()))
                and not any(id(m) in self.fused for m in [*c.nodes, c.side] if m is not None))

    def _alone_cycles(self, c: Chain, i: int) -> int:
        """Estimated cycles of op ``i`` of chain candidate ``c`` run alone, its operands'
        residency as planned (:func:`cascade.plan_chain`'s one-by-one estimate)."""
        one = sub_chain(c, i, i + 1)
        return separate_cycles(one, self.t, self.t.sram_capacity_bytes
                               - self.op_base.get(id(one.nodes[0]), 0), self._residency(one))

    def _frees(self, c: Chain) -> bool:
        """Whether ``c`` is cascaded to free SRAM although its intermediates would be
        resident (with :attr:`cascade_resident`: those take at least :data:`FREEING_FRACTION`
        of the SRAM); its band plan then takes at most :data:`FREEING_BAND_FRACTION` of it."""
        nbytes = 0
        for m in c.inner():
            if id(m.output) in self.res:
                h, w, ch = hwc(m.output)
                nbytes += h * w * ch * elem_bytes(m.output)
        frac = COMPACT_FREEING_FRACTION if self.compact else FREEING_FRACTION
        return self.cascade_resident and nbytes >= frac * self.t.sram_capacity_bytes

    def _plan_zone(self, bufs: list[tuple[Value, Buffer]], step: dict[int, int],
                   excluded: set[int]) -> set[int]:
        """:meth:`_plan_resident` of ``bufs``, with :attr:`overwrite` each chain of residual
        outputs over their shortcut kept where it pays (schedule/overwrite.py; ``excluded``:
        nodes in cascaded chains). Fills :attr:`res`; returns the resident values' ids."""
        def plan(groups):
            self.res = {}
            ids = self._plan_resident(groups)
            return self.res, self.zone_used, ids
        pairs = overwrite_pairs(self.npu_nodes, step, {id(v): b for v, b in bufs},
                                self._alias_readers, lambda c: self.fused[id(c)].output
                                if id(c) in self.fused else c.output,
                                excluded) if self.overwrite else []
        self.res, self.zone_used, ids = keep_overwrites(bufs, pairs, plan, readers)
        return ids

    def _plan_resident(self, groups: list[tuple[list[Value], Buffer]]) -> set[int]:
        """Choose the tensors kept whole in the SRAM resident zone and place them there
        (``groups``: each tensor alone or with those sharing its bytes, with their buffer,
        :func:`~tcc_compiler.schedule.overwrite.merge`). Greedy by DRAM bytes saved (one store
        plus one load per reader, summed over a group): a group joins when the liveness-planned
        zone (:func:`plan_arena`) still fits ``zone_bytes``. Fills :attr:`res`; returns the
        ids of the chosen values."""
        if self.zone_bytes <= 0:
            return set()
        al = self.t.sram_align_bytes
        cand = sorted(groups, key=lambda vb: (-sum(math.prod(hwc(v)) * elem_bytes(v) * (
            1 + len(readers(v))) for v in vb[0]), vb[1].first))
        chosen: list[tuple[list[Value], Buffer]] = []
        trial: tuple = ()   # the chosen buffers as (key, size, first, last), for arena_bytes
        for vs, b in cand:
            if b.size_bytes > self.zone_bytes or any(
                    id(v) in self.views.tied or id(v) in self.pinned for v in vs):
                continue
            more = trial + ((b.key, b.size_bytes, b.first, b.last),)
            if arena_bytes(more, al) <= self.zone_bytes:
                chosen.append((vs, b))
                trial = more
        placed = [Buffer(b.key, b.size_bytes, b.first, b.last) for _, b in chosen]
        self.zone_used = plan_arena(placed, al)
        for order, on in (("by_time", self.compact), ("by_life", self.overwrite)):
            if on:   # placed by first use / a residual chain below the short-lived tensors
                placed, self.zone_used = lower_tops(placed, al, self.zone_bytes,
                                                    self.zone_used, **{order: True})
        for (vs, _), pb in zip(chosen, placed):
            for v in vs:
                self.res[id(v)] = Resident(pb.offset, hwc(v), elem_bytes(v))
        return {id(v) for vs, _ in chosen for v in vs}


def _io(v: Value, t: Tensor) -> IoTensor:
    """The host's view of network input/output ``v`` in its DRAM tensor ``t``. Its (H, W, C)
    is ``v``'s own (:func:`~tcc_compiler.schedule.geom.hwc`), not the buffer's: a view output
    (a Transpose/Reshape that moves no bytes in NHWC, e.g. [1, 126, 1, 1] -> [1, 1, 1, 126])
    shares its source's buffer, whose (1, 1, 126) would not match its NCHW shape."""
    q = v.quant
    return IoTensor(v.name, t.region, t.offset, hwc(v), {4: "int32", 2: "int16"}.get(
                    t.elem_bytes, "int8"), [float(s) for s in np.atleast_1d(q.scale)],
                    [int(z) for z in np.atleast_1d(q.zero_point)], tuple(v.shape))
