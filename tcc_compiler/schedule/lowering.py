"""One lowering try: a memory plan, then every NPU op emitted in graph order.

Per op a configuration command, then per tile the loads, the compute command and the store
(schedule/ops/); the waits come from the emitter (schedule/emitter.py). Chains of ops whose
intermediates do not fit whole are cascaded: emitted together at the place of their last op,
band by band (schedule/ops/cascade.py). With :class:`~tcc_compiler.schedule.prefetch.Hoist` s, the
first weight blocks of load-bound convs are prefetched during the ops before them
(schedule/prefetch.py). :mod:`tcc_compiler.schedule.search` runs several tries and keeps the
fastest.
"""

from __future__ import annotations

from tcc_compiler.errors import InternalError
from tcc_compiler.ir.graph import Graph, Node
from tcc_compiler.ir.ops import CHANNEL_OPS, HOST_OPS, Op, ResizeMode, VIEW_OPS
from tcc_compiler.isa import commands as C
from tcc_compiler.isa.wcodec import BlockCompressor
from tcc_compiler.schedule.emitter import Emitter
from tcc_compiler.schedule.lift import OpSpan
from tcc_compiler.schedule.memory import MemoryPlan, plan_memory
from tcc_compiler.schedule.ops.add import lower_add
from tcc_compiler.schedule.ops.cascade import lower_chain
from tcc_compiler.schedule.ops.context import OpContext, new_info
from tcc_compiler.schedule.ops.conv import lower_conv
from tcc_compiler.schedule.ops.convslots import handover_start
from tcc_compiler.schedule.ops.copy import lower_copy
from tcc_compiler.schedule.ops.eltwise import lower_eltwise
from tcc_compiler.schedule.ops.lut import lower_lut
from tcc_compiler.schedule.ops.pool import lower_pool
from tcc_compiler.schedule.ops.bilinear import lower_bilinear
from tcc_compiler.schedule.ops.resize import lower_resize
from tcc_compiler.schedule.ops.shuffle import lower_shuffle
from tcc_compiler.schedule.prefetch import Hoist, Prefetcher
from tcc_compiler.schedule.program import LayerInfo, Program
from tcc_compiler.schedule.geom import conv_geom
from tcc_compiler.schedule.resume import Checkpoints
from tcc_compiler.schedule.tiling import align_up, uses_depthwise_mode
from tcc_compiler.isa.wlayout import WeightLayoutBuilder
from tcc_compiler.quant.params import uses_ew
from tcc_compiler.target import Target


def has_depthwise(graph: Graph, t: Target) -> bool:
    """Whether a conv of ``graph`` runs on the depthwise datapath
    (:func:`~tcc_compiler.schedule.tiling.uses_depthwise_mode`)."""
    return any(n.op is Op.CONV and uses_depthwise_mode(conv_geom(n, t), t)
               for n in graph.nodes)


class Lowering:
    """Lower ``graph`` once for ``target`` with a resident zone of ``zone_bytes`` (aligned
    here), cascades when ``cascade``, and the cross-op prefetches ``hoist`` (one
    :class:`Hoist`, a tuple of them with disjoint areas, or None: none).
    ``memo``: a dict shared by the lowerings of one search (values derived from the graph's
    constants, :func:`~tcc_compiler.schedule.ops.convsetup.conv_consts`); None: a fresh one.
    ``mem``: the memory plan to use, from an earlier lowering of the same graph, target,
    ``zone_bytes`` and ``cascade`` (:func:`plan_memory` is a pure function of those, so the
    search's prefetch tries reuse their base program's plan); None: planned by :meth:`run`.
    ``lifts``: op name -> SRAM address its tile buffers start at, upwards (above its base;
    :func:`~tcc_compiler.schedule.lift.plan_lifts`); ops not named keep their place.
    ``wlifts``: conv name -> SRAM address its weight slots start at, upwards, outside its
    tile area (:func:`~tcc_compiler.schedule.lift.plan_weight_lifts`).
    ``tight_slots``: each conv's weight slots sized by the blocks they receive;
    ``whole_out``: a classifier's output blocks in one buffer, stored in two DMAs
    (:class:`~tcc_compiler.schedule.ops.context.OpContext` ``tight_slots``, ``whole_out``).
    ``deep_slots``: more than two weight slots per conv and early slot release
    (``OpContext.deep_slots``); None: when the graph has no depthwise conv
    (:func:`has_depthwise`).
    ``handover``: the conv lowered just before each prefetch consumer hands its weight
    slots over to it (schedule/handover.py; ``OpContext.handover_below``,
    ``handover_lift``). A lowering with it is not recorded (none resumes from it).
    ``coarse``: the ops after the first prefetch consumer take coarser weight blocks where
    load-bound (``OpContext.coarse``); a lowering with it is not recorded either.
    ``coarse_wide``: every op takes coarser weight blocks where load-bound
    (``OpContext.coarse_wide``, schedule/coarsewide.py), a prefetch consumer's packed blocks
    too (``Prefetcher`` ``coarse``); not recorded, and :attr:`coarsened` tells whether any
    conv did.
    ``record``: keep a checkpoint (:class:`~tcc_compiler.schedule.resume.Checkpoints`) before
    every op, so later lowerings can ``resume``.
    ``resume``: an earlier lowering with ``record`` of the same graph, target, zone,
    compressor, cascading, memo, memory plan (the very objects), tight slots, whole
    outputs and deep slots: :meth:`run` starts from
    its latest checkpoint before the first op whose decisions (prefetches, lifts, weight
    lifts) differ between the two, the same program as lowering from the start, in a
    fraction of the time (the schedule search's prefetch and lift tries).

    Attributes (after :meth:`run`):
        mem: the :class:`~tcc_compiler.schedule.memory.MemoryPlan` used.
        op_spans: per lowered op (a cascaded chain once, by its last op), in order, a
            :class:`~tcc_compiler.schedule.lift.OpSpan`: its tile buffers' SRAM bytes and
            the area it could take them from.
    """

    def __init__(self, graph: Graph, target: Target, zone_bytes: int = 0,
                 compressor: BlockCompressor | None = None, cascade: bool = False,
                 hoist: Hoist | tuple[Hoist, ...] | None = None, memo: dict | None = None,
                 mem: MemoryPlan | None = None, lifts: dict[str, int] | None = None,
                 wlifts: dict[str, int] | None = None, tight_slots: bool = False,
                 whole_out: bool = False, deep_slots: bool | None = None,
                 record: bool = False, resume: Lowering | None = None,
                 handover: bool = False, coarse: bool = False,
                 coarse_wide: bool = False):
        self.graph, self.t, self.cascade, self.hoist = graph, target, cascade, hoist
        self.tight_slots, self.whole_out = tight_slots, whole_out
        self.deep_slots = deep_slots
        self.lifts = lifts or {}
        self.wlifts = wlifts or {}
        self.op_spans: list[OpSpan] = []
        self.memo = memo if memo is not None else {}
        self.zone_bytes = align_up(zone_bytes, target.sram_align_bytes)
        self.compressor = compressor
        self.mem: MemoryPlan | None = mem
        self.handover, self.coarse = handover, coarse
        self.coarse_wide, self.coarsened = coarse_wide, False
        self.checkpoints = (Checkpoints(graph)
                            if record and not (handover or coarse or coarse_wide) else None)
        self.resume = resume
        #: commands :meth:`run` took from ``resume``'s program (its first ones), unlowered
        self.shared_cmds = 0
        #: after :meth:`run`: the hoists whose ``eager`` decided an emission
        #: (:attr:`~tcc_compiler.schedule.prefetch.Prefetcher.eager_decided`)
        self.eager_decided: frozenset[Hoist] = frozenset()

    @property
    def hoists(self) -> tuple[Hoist, ...]:
        """The cross-op prefetches, as a tuple (empty: none)."""
        h = self.hoist
        return () if not h else (h,) if isinstance(h, Hoist) else tuple(h)

    @property
    def chains(self) -> dict:
        """id(last node) -> cascaded chain (empty before :meth:`run`)."""
        return dict(self.mem.chains) if self.mem is not None else {}

    def run(self) -> Program:
        """Plan memory and emit every op.

        Raises:
            ScheduleError: an op cannot be tiled into the SRAM left to it.
            UnsupportedError: a tensor shape or window the NPU cannot hold.
            InternalError: an inconsistent prefetch plan (a bug).
        """
        t = self.t
        mem = self.mem
        if mem is None:
            mem = self.mem = plan_memory(self.graph, t, self.zone_bytes, self.cascade)
        start, em, weights, layers, pf = self._start()
        source = self.graph.meta.get("source", "")
        deep = self.deep_slots
        if deep is None:   # (the memo's graph does not change)
            deep = self.memo.get(("deep-slots",))
        if deep is None:
            deep = self.memo[("deep-slots",)] = not has_depthwise(self.graph, t)
        cps = self.checkpoints
        hand = self._handovers(mem, pf)
        handed: list[tuple[int, int]] = []
        coarse = False   # (from the first consumer on)
        for i, n in enumerate(self.graph.nodes[start:], start):
            if not _lowered(n, mem):
                continue
            if cps is not None:
                cps.add(i, em, weights, layers, self.op_spans, pf)
            ctx = OpContext(em, mem, weights, t, source, base=mem.base(n), memo=self.memo,
                            tight_slots=self.tight_slots, whole_out=self.whole_out,
                            deep_slots=deep)
            n_ops = len(em.tile_spans)
            if id(n) in mem.chains:   # the whole chain runs at its last op's place
                if pf is not None:
                    pf.enter_chain(ctx, n.name)
                layers.extend(lower_chain(ctx, mem.chains[id(n)]))
                self._span(ctx, n, n_ops, False)
                handed = []
                continue
            consumer = pf is not None and any(h.consumer == n.name for h in pf.hoists)
            ctx.coarse, ctx.coarse_wide = coarse, self.coarse_wide
            coarse = coarse or (consumer and self.coarse)
            if n.name in self.lifts and not consumer:
                ctx.base, ctx.lifted = self.lifts[n.name], True
            ctx.wlift = self.wlifts.get(n.name)   # (a consumer's own slots too)
            if n.name in hand:   # the conv before a consumer that takes its slots over
                ctx.handover_below = mem.base(hand[n.name])
            elif consumer and handed:
                ctx.handover_lift = handover_start(handed, ctx.base)
            layers.append(self._op(ctx, n, pf))
            handed, self.coarsened = ctx.handed, self.coarsened or ctx.coarsened
            self._span(ctx, n, n_ops, not consumer, True)
        if pf is not None:
            pf.finish()
            self.eager_decided = pf.eager_decided
            self.coarsened |= pf.coarsened
        em.emit(C.End, [], "end")
        w = em.w
        return Program(w.cmds, w.comments, weights.build(), em.sram_peak, mem.arena_bytes,
                       mem.input_bytes, mem.output_bytes, list(mem.inputs), list(mem.outputs),
                       layers, w.slots, deps=w.deps)

    def _handovers(self, mem: MemoryPlan, pf: Prefetcher | None) -> dict[str, Node]:
        """With :attr:`handover`: conv name -> the prefetch consumer lowered right after it
        (a plain conv, itself no consumer), that takes its weight slots over; else empty."""
        if not self.handover or pf is None:
            return {}
        cons = {h.consumer for h in pf.hoists}
        ops = [n for n in self.graph.nodes if _lowered(n, mem)]
        return {a.name: b for a, b in zip(ops, ops[1:])
                if b.name in cons and a.name not in cons and a.op in (Op.CONV, Op.FC)
                and id(a) not in mem.chains}

    def _start(self) -> tuple[int, Emitter, WeightLayoutBuilder, list[LayerInfo],
                              Prefetcher | None]:
        """(graph position of the first op to lower, emitter, weight layout, layer table,
        prefetcher) to lower from: a fresh start, or with ``resume`` that lowering's state
        before the first op this one changes (schedule/resume.py; :attr:`op_spans` too)."""
        t = self.t
        if self.resume is not None:
            start, em, weights, layers, self.op_spans, pf_state = \
                self.resume.checkpoints.restore(self.resume, self)
        else:
            start, layers, pf_state = 0, [], None
            em = Emitter(t.sram_capacity_bytes, t.sram_align_bytes)
            weights = WeightLayoutBuilder(self.compressor)
        self.shared_cmds = em.n_cmds
        pf = Prefetcher(self.hoist, self.graph, self.coarse_wide) if self.hoist else None
        if pf is not None:
            pf.check_areas(t)
            if pf_state is not None:
                pf.resume(pf_state)
            em.on_load = pf.after_load
        return start, em, weights, layers, pf

    def _span(self, ctx: OpContext, n: Node, n_ops: int, liftable: bool,
              wliftable: bool = False) -> None:
        """Record the tile span of the op just lowered (:attr:`op_spans`), if it ended one;
        its area is measured from its memory-plan base (a lift may move it there)."""
        if len(ctx.em.tile_spans) == n_ops:
            return
        lo, hi = ctx.em.tile_spans[-1]
        self.op_spans.append(OpSpan(n.name, lo, hi, ctx.mem.base(n),
                                    self.t.sram_capacity_bytes - ctx.reserve, liftable,
                                    ctx.wslot_bytes if ctx.wlift is None else 0,
                                    tuple(ctx.op_res), wliftable))

    def _op(self, ctx: OpContext, n: Node, pf: Prefetcher | None) -> LayerInfo:
        """Lower one plain op; return its :class:`LayerInfo`."""
        # resident tensors the op reads or writes: SRAM it uses besides its tile buffers
        out = ctx.mem.conv_output(n) if n.op is Op.CONV else n.output   # a fused lut's
        ctx.op_res = [(r.sram, r.sram + r.nbytes) for r in
                      (ctx.mem.resident(v) for v in [*n.inputs, out] if v is not None)
                      if r is not None]
        n_pf = len(pf.cmds) if pf is not None else 0
        if pf is not None:
            pf.enter(ctx, n)
        first = ctx.em.n_cmds
        info = new_info(n)
        lower_one(ctx, n, info, pf)
        info.first_cmd, info.end_cmd = first, ctx.em.n_cmds
        if pf is None:
            return info
        others = set(pf.cmds[n_pf:])   # prefetches emitted during the op (of any consumer)
        own = pf.consumer_cmds(n.name)
        if own is not None:   # a consumer: its own range and its prefetches
            info.cmds = sorted(set(own) | (set(range(first, info.end_cmd)) - others))
            ctx.em.sram_peak = max(ctx.em.sram_peak, self.t.sram_capacity_bytes)
        elif others:   # its range holds prefetches of a later op
            info.cmds = [i for i in range(first, info.end_cmd) if i not in others]
        return info


def _lowered(n: Node, mem: MemoryPlan) -> bool:
    """Whether op ``n`` is lowered at its place under ``mem``: not a host op, a view, an op of
    a cascaded chain before its last, a channel op that is a view (the producers and readers
    address the shared buffer), nor a lut run in the epilogue of the conv producing its
    input."""
    if n.op in HOST_OPS or n.op in VIEW_OPS or id(n) in mem.chained:
        return False
    if n.op in CHANNEL_OPS and id(n) not in mem.views.copies:
        return False
    return id(n) not in mem.fused_luts


def lower_one(ctx: OpContext, n: Node, info: LayerInfo, pf: Prefetcher | None) -> None:
    """Emit op ``n`` with the lowering of its kind (schedule/ops/).

    Raises:
        InternalError: an op kind without a lowering.
    """
    if n.op in (Op.CONV, Op.FC):
        lower_conv(ctx, n, info, pf.take(n) if pf is not None else None)
    elif n.op in (Op.MAXPOOL, Op.AVGPOOL, Op.GAP):
        lower_pool(ctx, n, info)
    elif uses_ew(n):
        lower_eltwise(ctx, n, info)
    elif n.op is Op.ADD:
        lower_add(ctx, n, info)
    elif n.op in (Op.LUT, Op.GROUP_SOFTMAX):
        lower_lut(ctx, n, info)
    elif n.op in CHANNEL_OPS:
        lower_copy(ctx, n, info)
    elif n.op is Op.RESIZE and n.attrs.mode is ResizeMode.BILINEAR:
        lower_bilinear(ctx, n, info)
    elif n.op is Op.RESIZE:
        lower_resize(ctx, n, info)
    elif n.op is Op.SHUFFLE:
        lower_shuffle(ctx, n, info)
    else:
        raise InternalError(f"no lowering for {n.op.value} '{n.name}'")
