"""Lower a quantized graph to an NPU program: DRAM plan, tiles, commands with explicit waits,
and the packed weight binary.

Per op: a configuration command, then per tile the loads (input tile with halo, weight and
parameter block when they change, shortcut tile), the compute command and the store. SRAM
buffers are double-buffered; every command's wait fields are derived from the exact buffer
it touches (:class:`WaitTracker`), so DMA of tile i+1 overlaps compute of tile i.

Ops are not separated by a barrier. Consecutive ops take their SRAM buffers from opposite ends
of the op's tile area (:class:`SramAllocator`; the area starts above the resident tensors live
during the op and the op before it), and the first command writing a buffer, or a resident
tensor, waits only for the compute and store of the latest earlier op whose buffers or resident
tensors overlap it (:meth:`Lowering._free`).
An activation load (input, shortcut, add operand) waits for the latest store whose DRAM byte
extent overlaps its own (:meth:`Lowering._load`), so a layer's first tiles start as soon as
the rows they read are stored, not when the whole previous layer has finished; weight and
parameter loads read the read-only WEIGHTS region and need no such wait, so the next layer's
weights stream in while the current layer computes. DRAM write-after-read is ordered by the
queues: a layer's first store follows its first compute, which waits for a load that the
in-order LOAD queue runs after every earlier layer's loads.

Chains of ops whose intermediates do not fit whole are cascaded (schedule/cascade.py,
:meth:`Lowering._cascade`): emitted together at the place of their last op, band by band,
the intermediate bands kept in SRAM.

Cross-op weight prefetch (:class:`Hoist`, :func:`plan_hoist`): the first weight blocks of the
first load-bound conv are loaded during the ops before it, into the top of the SRAM, which
those ops and the conv leave free; each prefetch load is emitted right after a load of a
window op that was followed by LOAD-queue idle time in the program without prefetch. Once a
prefetched block is done, its place serves the consumer's later blocks (specs/target.md).
"""

from __future__ import annotations

import collections
import itertools
import logging
import math
from dataclasses import dataclass, field

import numpy as np

from tcc_compiler.errors import InternalError, ScheduleError, UnsupportedError
from tcc_compiler.ir.graph import Graph, Node, Value
from tcc_compiler.ir.ops import HOST_OPS, Op, VIEW_OPS
from tcc_compiler.ir.shapes import npu_hwc
from tcc_compiler.isa import commands as C
from tcc_compiler.isa.wcodec import BlockCompressor, LayerKind
from tcc_compiler.isa.spec import (CONV_FLAG_IMAGE, CONV_FLAG_SHORTCUT, PARAM_RECORD_BYTES,
                                   WAIT_MAX, WAIT_NONE, Queue, Region, dram_address,
                                   pack_conv_params)
from tcc_compiler.quant.golden import weights_ohwi
from tcc_compiler.quant.params import add_quant, conv_quant, pool_quant
from tcc_compiler.schedule.cascade import Chain, find_chains, plan_chain
from tcc_compiler.schedule.memory import Buffer, align_up, plan_arena
from tcc_compiler.schedule.weights import WeightLayout, WeightLayoutBuilder
from tcc_compiler.schedule.tiling import (ConvGeom, Residency, plan_channels, plan_conv,
                                          uses_image_mode)
from tcc_compiler.target import Target

log = logging.getLogger(__name__)


class _NhwcSized:
    """Mixin: ``nbytes`` of an NHWC buffer with attributes ``hwc`` and ``elem_bytes``."""

    hwc: tuple[int, int, int]
    elem_bytes: int

    @property
    def nbytes(self) -> int:
        """Size in bytes: H * W * C * element bytes."""
        h, w, c = self.hwc
        return h * w * c * self.elem_bytes


@dataclass
class Tensor(_NhwcSized):
    """Where an NPU tensor lives in DRAM: region, byte offset, NHWC shape, element bytes."""

    region: Region
    offset: int
    hwc: tuple[int, int, int]
    elem_bytes: int = 1

    def addr(self, extra: int = 0) -> int:
        """u32 DRAM address of byte ``extra`` of the tensor."""
        return dram_address(self.region, self.offset + extra)


@dataclass
class Resident(_NhwcSized):
    """A whole NHWC tensor kept in the SRAM resident zone: byte offset, shape, element bytes.
    Producers' compute writes it and consumers' compute reads boxes of it (strided operands),
    with no DMA."""

    sram: int
    hwc: tuple[int, int, int]
    elem_bytes: int = 1

    def box(self, y0: int, x0: int, c0: int, cols: int, nch: int) -> dict:
        """SRAM address and (pixel, row) strides of the box starting at (y0, x0, c0) with
        ``cols`` columns and ``nch`` channels; a stride equal to the packed one is coded 0."""
        _, w, c = self.hwc
        eb = self.elem_bytes
        px, row = c * eb, w * c * eb
        return dict(addr=self.sram + ((y0 * w + x0) * c + c0) * eb,
                    px=0 if px == nch * eb else px, row=0 if cols == w else row)


@dataclass
class LayerInfo:
    """Per-NPU-op facts for the report and the disassembly.

    Attributes:
        name: IR node name. kind: op kind (conv, fc, maxpool, gap, avgpool, add).
        source: ONNX node names it came from. in_shape/out_shape: NCHW.
        tiles: compute tiles. macs: multiply-accumulates. plan: tile shape description.
        first_cmd, end_cmd: command index range [first, end). weight_bytes: weights + params
        as stored in quantized_network.bin (compressed when so), bytes. weight_raw_bytes: the
        same before compression (int8 OHWI weights + 16-byte parameter records), bytes; 0 for
        ops without weights. weight_file_bytes: the layer's blob bytes in the file (its layer
        table entry's stored size; may exceed weight_bytes by the compressed blobs' block
        index). sram_bytes: SRAM the op's buffers use.
        cmds: indices of the op's own commands when they interleave with other ops' (a
            cascaded chain, schedule/cascade.py); None when they are [first_cmd, end_cmd).
    """

    name: str
    kind: str
    source: tuple[str, ...]
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    tiles: int = 0
    macs: int = 0
    plan: str = ""
    first_cmd: int = 0
    end_cmd: int = 0
    weight_bytes: int = 0
    weight_raw_bytes: int = 0
    weight_file_bytes: int = 0
    sram_bytes: int = 0
    cmds: list[int] | None = None


@dataclass
class IoTensor:
    """A network input or output as the host sees it in its DRAM region."""

    name: str
    region: Region
    offset: int
    hwc: tuple[int, int, int]
    dtype: str
    scale: list[float]
    zero_point: list[int]
    shape: tuple[int, ...]


@dataclass
class Program:
    """A lowered network: commands, weight binary and the facts the manifest/report need."""

    commands: list[C.Command]
    comments: list[str]
    weights: WeightLayout
    sram_bytes: int
    act_arena_bytes: int
    input_bytes: int
    output_bytes: int
    inputs: list[IoTensor]
    outputs: list[IoTensor]
    layers: list[LayerInfo] = field(default_factory=list)
    slots: list[int] = field(default_factory=list)


SLOT_INPUT, SLOT_WEIGHTS, SLOT_PARAMS, SLOT_SHORTCUT = 0, 1, 2, 3


@dataclass(frozen=True)
class Hoist:
    """A cross-op weight prefetch (see :meth:`Lowering._hoist_begin`): the first weight and
    parameter blocks of conv ``consumer`` are loaded while the ops ``window`` (the ops just
    before it, in execution order) run, into the top ``area_bytes`` of the SRAM, which those ops
    and the consumer leave free.

    Attributes:
        consumer: IR name of the conv whose blocks are prefetched.
        window: IR names of the ops the prefetch loads are interleaved into, in order.
        area_bytes: SRAM bytes reserved at the top of the SRAM (aligned).
        gaps: per window op, per LOAD command of the op (in emission order), the LOAD-queue
            idle cycles measured after that command in the program without the prefetch
            (:func:`plan_hoist`): the time a prefetch emitted right after it may take.
        eager: emit a pending block once the idle time gathered covers half its load time
            (True) or all of it (False).
    """

    consumer: str
    window: tuple[str, ...]
    area_bytes: int
    gaps: tuple[tuple[int, ...], ...]
    eager: bool = False


class WaitTracker:
    """Builds commands with wait fields that order them after specific earlier commands.

    Each command also gets a history slot for the encoder (specs/isa.md): one per DMA stream
    (:data:`SLOT_INPUT`, :data:`SLOT_WEIGHTS`, :data:`SLOT_PARAMS`, :data:`SLOT_SHORTCUT`), so
    each stream's addresses advance by a constant stride in its own history and cost no bytes.

    A dependency on command k of queue q becomes ``wait_q = n_q - 1 - k`` ("at most that many
    of q's earlier commands may still run"), clamped to 6 (waiting longer is always safe).
    """

    QUEUES = (Queue.LOAD, Queue.COMPUTE, Queue.STORE)

    def __init__(self) -> None:
        self.count = {q: 0 for q in self.QUEUES}
        self.cmds: list[C.Command] = []
        self.comments: list[str] = []
        self.slots: list[int] = []

    def emit(self, cls, deps: list[tuple[Queue, int] | None], comment: str,
             slot: int = 0, **fields):
        """Append a command of class ``cls`` waiting for ``deps``; return (queue, index)."""
        waits = {q: WAIT_NONE for q in self.QUEUES}
        for d in deps:
            if d is None:
                continue
            q, k = d
            n = self.count[q] - 1 - k
            if n < 0:
                raise InternalError(f"dependency on {q.name} command {k} not yet dispatched")
            waits[q] = min(waits[q], min(n, WAIT_MAX))
        cmd = cls(wait_load=waits[Queue.LOAD], wait_compute=waits[Queue.COMPUTE],
                  wait_store=waits[Queue.STORE], **fields)
        self.cmds.append(cmd)
        self.comments.append(comment)
        self.slots.append(slot)
        q = cmd.queue
        if q in self.count:
            idx = self.count[q]
            self.count[q] += 1
            return (q, idx)
        return None

    def last(self, q: Queue) -> tuple[Queue, int] | None:
        """The most recent command of queue q, or None."""
        return (q, self.count[q] - 1) if self.count[q] else None


def _dma_fields(t: Tensor, y0, y1, x0, x1, c0, c1, sram: int) -> dict:
    """DMA fields moving the [y0:y1, x0:x1, c0:c1] box of NHWC tensor ``t`` to/from SRAM
    (packed contiguously there as [rows, cols, channels])."""
    h, w, c = t.hwc
    eb = t.elem_bytes
    rows, cols, nch = y1 - y0, x1 - x0, c1 - c0
    base = ((y0 * w + x0) * c + c0) * eb
    if nch == c and cols == w:
        return dict(dram=t.addr(base), sram=sram, run_bytes=rows * w * c * eb, n1=1, n2=1,
                    dram_stride1=0, dram_stride2=0, sram_stride1=0, sram_stride2=0)
    if nch == c:
        run = cols * c * eb
        return dict(dram=t.addr(base), sram=sram, run_bytes=run, n1=rows, n2=1,
                    dram_stride1=w * c * eb, dram_stride2=0, sram_stride1=run, sram_stride2=0)
    run = nch * eb
    return dict(dram=t.addr(base), sram=sram, run_bytes=run, n1=cols, n2=rows,
                dram_stride1=c * eb, dram_stride2=w * c * eb, sram_stride1=run,
                sram_stride2=cols * run)


def _hwc(v: Value) -> tuple[int, int, int]:
    try:
        return npu_hwc(v.shape)
    except InternalError:
        raise UnsupportedError(v.name, [f"value '{v.name}': shape {v.shape} is not a batch-1 "
                                        "rank-2/4 tensor the NPU can hold"]) from None


class SramAllocator:
    """Bump allocator of one op's SRAM buffers, aligned; upwards from address 0 or, with
    ``from_top``, downwards from the end of the SRAM (so consecutive ops use opposite ends and
    their buffers overlap only when together they exceed the SRAM).

    Attributes:
        top: bytes used so far (the op's SRAM footprint, for the report).
        lo, hi: the SRAM byte interval [lo, hi) the op's buffers cover.
    """

    def __init__(self, size: int, align: int, from_top: bool = False, base: int = 0):
        self.size, self.align, self.top, self.from_top = size - base, align, 0, from_top
        self.lo = self.hi = size if from_top else base

    def alloc(self, nbytes: int, what: str) -> int:
        """Reserve ``nbytes``; return the SRAM offset.

        Raises:
            InternalError: the op's buffers exceed the SRAM (the tile planner checks first).
        """
        n = align_up(max(nbytes, 1), self.align)
        self.top += n
        if self.top > self.size:
            raise InternalError(f"SRAM overflow allocating {what}: {self.top} > {self.size}")
        if self.from_top:
            self.lo -= n
            return self.lo
        off = self.hi
        self.hi += n
        return off


class Lowering:
    """Stateful lowering of one graph (see :func:`lower`)."""

    def __init__(self, graph: Graph, target: Target, zone_bytes: int = 0,
                 compressor: BlockCompressor | None = None, cascade: bool = False,
                 hoist: Hoist | None = None):
        self.g = graph
        self.hoist = hoist   # cross-op weight prefetch (None: each op loads its own weights)
        self.reserve = 0     # SRAM bytes at the top kept free for prefetched blocks (this op)
        self.pending: list[tuple[int, int, int, object, object]] = []   # blocks to prefetch
        self.prefetched: dict[int, tuple[int, int, tuple]] = {}   # block -> w, p SRAM, load
        self.pre: dict[int, tuple] = {}      # id(consumer) -> its (plan, blobs, cfg, bytes)
        self.hoist_cmds: list[int] = []      # indices of the prefetch commands
        self.credit = 0.0                    # LOAD idle cycles gathered for prefetches
        self.gaps: tuple[int, ...] = ()      # the current op's Hoist.gaps entry
        self.load_ord = 0                    # LOAD commands the current op emitted so far
        self._prefetching = False
        self.cascade = cascade   # cascade chains of ops (schedule/cascade.py) where it pays
        self.chains: dict[int, Chain] = {}   # id(last node of a cascaded chain) -> chain
        self.chained: set[int] = set()       # ids of the other nodes of cascaded chains
        self.t = target
        # SRAM [0, zone_bytes) may hold resident tensors; an op's tile buffers use
        # [base, sram) with base the end of the resident tensors live during the op
        self.zone_bytes = align_up(zone_bytes, target.sram_align_bytes)
        self.res: dict[int, Resident] = {}
        self.zone_used = 0   # bytes of the zone the resident tensors occupy (peak over time)
        self.op_base: dict[int, int] = {}   # id(node) -> bytes of SRAM below its tile area
        self.base = 0                       # op_base of the op being lowered
        self.w = WaitTracker()
        self.wf = WeightLayoutBuilder(compressor)  # None: weights stored raw
        self.tensors: dict[int, Tensor] = {}
        self.layers: list[LayerInfo] = []
        self.sram_peak = 0
        # (lo, hi, last compute, last store) of every lowered op's SRAM buffers
        # (SRAM intervals, last compute, last store) of every lowered op
        self.sram_hist: list[tuple[list[tuple[int, int]], tuple | None, tuple | None]] = []
        self.op_res: list[tuple[int, int]] = []   # resident intervals of the current op
        # per DRAM region: (lo, hi, store) byte extents written by the stores so far
        self.stored: dict[int, list[tuple[int, int, tuple]]] = {}
        self._freed: set[int] = set()        # buffers of the current op already waited for

    # ---- DRAM planning --------------------------------------------------------------------
    def plan_dram(self) -> tuple[int, int, int, list[IoTensor], list[IoTensor]]:
        g = self.g
        al = self.t.dram_align_bytes
        inp = g.inputs[0]
        self.tensors[id(inp)] = Tensor(Region.INPUT, 0, _hwc(inp))
        npu_nodes = [n for n in g.nodes if n.op not in HOST_OPS]
        # NPU outputs: graph outputs made by NPU ops, or inputs of host ops
        outs: list[Value] = []
        for n in g.nodes:
            if n.op in HOST_OPS and n.inputs[0].producer is not None \
                    and n.inputs[0].producer.op not in HOST_OPS:
                outs.append(n.inputs[0])
        for o in g.outputs:
            if o.producer is not None and o.producer.op not in HOST_OPS:
                outs.append(o)
        uniq: list[Value] = []
        for v in outs:
            root = self._root(v)
            if all(self._root(u) is not root for u in uniq):
                uniq.append(v)
        out_off = 0
        out_roots = {}
        for v in uniq:
            root = self._root(v)
            eb = 4 if root.dtype == "int32" else 1
            t = Tensor(Region.OUTPUT, out_off, _hwc(root), eb)
            out_roots[id(root)] = t
            out_off = align_up(out_off + t.nbytes, al)
        bufs, resident = self._plan_buffers(npu_nodes, out_roots, [])
        if self.cascade:
            chains = self._choose_chains(npu_nodes, out_roots)
            for _ in range(4):  # re-plan with the chains; drop those that no longer fit
                if not chains:
                    break
                bufs, resident = self._plan_buffers(npu_nodes, out_roots, chains)
                fits = [c for c in chains if self._plan_chain(c)]
                if len(fits) == len(chains):
                    break
                chains = fits
            else:
                chains = []
            if not chains:
                bufs, resident = self._plan_buffers(npu_nodes, out_roots, [])
            for c in chains:
                self.chains[id(c.nodes[-1])] = c
                self.chained.update(id(m) for m in c.inner())
        bufs = [(v, b) for v, b in bufs if id(v) not in resident]
        arena = plan_arena([b for _, b in bufs], al)
        for v, b in bufs:
            self.tensors[id(v)] = Tensor(Region.ACT, b.offset, _hwc(v),
                                         4 if v.dtype == "int32" else 1)
        for n in npu_nodes:  # views alias their source
            if n.op in VIEW_OPS and id(self._root(n.inputs[0])) in self.res:
                src_r = self.res[id(self._root(n.inputs[0]))]
                self.res[id(n.output)] = Resident(src_r.sram, _hwc(n.output), src_r.elem_bytes)
            elif n.op in VIEW_OPS:
                src = self.tensors[id(self._root(n.inputs[0]))]
                self.tensors[id(n.output)] = Tensor(src.region, src.offset, _hwc(n.output),
                                                    src.elem_bytes)
        ins = [self._io(inp, self.tensors[id(inp)])]
        outs_io = [self._io(v, self.tensors[id(self._root(v))]) for v in uniq]
        in_bytes = align_up(self.tensors[id(inp)].nbytes, al)
        return arena, in_bytes, max(out_off, al), ins, outs_io

    def _plan_buffers(self, npu_nodes: list[Node], out_roots: dict, chains: list[Chain]):
        """DRAM buffers of the activations by liveness, the resident set and every op's tile
        area base (:attr:`op_base`), with ``chains`` cascaded: their intermediates get no
        buffer and all their ops run at the step of their last op.

        Returns:
            (bufs, resident): the (value, :class:`Buffer`) pairs of every non-output tensor
            and the ids of the values kept resident.
        """
        step = {id(n): i for i, n in enumerate(npu_nodes)}
        inter: set[int] = set()
        for c in chains:
            for m in c.inner():
                step[id(m)] = step[id(c.nodes[-1])]
                inter.add(id(m.output))
        skip = {id(m) for c in chains for m in c.inner()}
        bufs = []
        for i, n in enumerate(npu_nodes):
            if n.op in VIEW_OPS or id(n.output) in inter:
                continue
            v = n.output
            if id(v) in out_roots:
                self.tensors[id(v)] = out_roots[id(v)]
                continue
            last = i
            for user in self._readers(v):
                last = max(last, step.get(id(user), len(npu_nodes)))
            eb = 4 if v.dtype == "int32" else 1
            h, w_, c = _hwc(v)
            bufs.append((v, Buffer(v.name, h * w_ * c * eb, i, last)))
        self.res = {}
        resident = self._plan_resident(bufs)
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
        return self._conv_geom(n) if n.op is Op.CONV else self._pool_geom(n)[0]

    def _chain_residency(self, c: Chain) -> Residency:
        last = c.nodes[-1]
        sc = last.input(3) if last.op is Op.CONV else None
        return Residency(id(c.nodes[0].inputs[0]) in self.res, id(last.output) in self.res,
                         sc is not None and c.side is None and id(sc) in self.res)

    def _plan_chain(self, c: Chain) -> bool:
        """Plan ``c``'s bands in the SRAM above its tile-area base; True if it fits and is
        estimated faster than its ops one by one (:func:`cascade.plan_chain`)."""
        base = self.op_base.get(id(c.nodes[-1]), 0)
        return plan_chain(c, self.t, self.t.sram_bytes - base, self._chain_residency(c))

    def _choose_chains(self, npu_nodes: list[Node], out_roots: dict) -> list[Chain]:
        """The chains worth cascading under the current (chain-free) plan: structural
        candidates (:func:`cascade.find_chains`) none of whose intermediates is resident (a
        resident intermediate already costs no DRAM traffic) and whose band plan fits and is
        estimated faster."""
        out_ids = set(out_roots) | {id(v) for v in self.g.outputs}
        cands = find_chains(npu_nodes, self._readers, self._chain_geom, out_ids)
        return [c for c in cands
                if not any(id(m.output) in self.res for m in c.inner())
                and self._plan_chain(c)]

    def _plan_resident(self, bufs: list[tuple[Value, Buffer]]) -> set[int]:
        """Choose the tensors kept whole in the SRAM resident zone and place them there.

        Greedy by DRAM bytes saved (one store plus one load per reader, the least a DRAM
        round trip costs): a tensor joins when the liveness-planned zone (:func:`plan_arena`)
        still fits ``zone_bytes``. Fills :attr:`res`; returns the ids of the chosen values.
        """
        if self.zone_bytes <= 0:
            return set()
        al = self.t.sram_align_bytes
        cand = sorted(bufs, key=lambda vb: (-vb[1].size_bytes * (1 + len(self._readers(vb[0]))),
                                            vb[1].first))
        chosen: list[tuple[Value, Buffer]] = []
        for v, b in cand:
            if b.size_bytes > self.zone_bytes:
                continue
            trial = [Buffer(x.key, x.size_bytes, x.first, x.last) for _, x in chosen + [(v, b)]]
            if plan_arena(trial, al) <= self.zone_bytes:
                chosen.append((v, b))
        placed = [Buffer(b.key, b.size_bytes, b.first, b.last) for _, b in chosen]
        self.zone_used = plan_arena(placed, al)
        for (v, _), pb in zip(chosen, placed):
            self.res[id(v)] = Resident(pb.offset, _hwc(v), 4 if v.dtype == "int32" else 1)
        return {id(v) for v, _ in chosen}

    def _root(self, v: Value) -> Value:
        while v.producer is not None and v.producer.op in VIEW_OPS:
            v = v.producer.inputs[0]
        return v

    def _readers(self, v: Value) -> list[Node]:
        out = []
        for n, _ in v.uses:
            if n.op in VIEW_OPS:
                out.extend(self._readers(n.output))
            out.append(n)
        return out

    def _io(self, v: Value, t: Tensor) -> IoTensor:
        q = v.quant
        return IoTensor(v.name, t.region, t.offset, t.hwc, "int32" if t.elem_bytes == 4
                        else "int8", [float(s) for s in np.atleast_1d(q.scale)],
                        [int(z) for z in np.atleast_1d(q.zero_point)], tuple(v.shape))

    # ---- ops -------------------------------------------------------------------------------
    def run(self) -> Program:
        arena, in_bytes, out_bytes, ins, outs = self.plan_dram()
        h = self.hoist
        win = {name: i for i, name in enumerate(h.window)} if h is not None else {}
        for n in self.g.nodes:
            if n.op in HOST_OPS or n.op in VIEW_OPS or id(n) in self.chained:
                continue
            self.reserve, self.gaps, self.load_ord = 0, (), 0
            if id(n) in self.chains:   # the whole chain runs at its last op's place
                if n.name in win or (h is not None and n.name == h.consumer):
                    raise InternalError(f"prefetch window includes cascaded op '{n.name}'")
                self.base = self.op_base.get(id(n), 0)
                self._cascade(self.chains[id(n)])
                continue
            if h is not None and n.name == h.window[0]:
                self._hoist_begin()
            if n.name in win:
                self.reserve, self.gaps = h.area_bytes, h.gaps[win[n.name]]
            n_hoist = len(self.hoist_cmds)
            if h is not None and n.name == h.consumer:
                while self.pending:   # whatever the window ops had no idle time for
                    self._prefetch_one()
                self.reserve = h.area_bytes
            first = len(self.w.cmds)
            info = LayerInfo(n.name, n.op.value, n.source, n.inputs[0].shape, n.output.shape)
            self.base = self.op_base.get(id(n), 0)
            # resident tensors the op reads or writes: SRAM it uses besides its tile buffers
            self.op_res = [(r.sram, r.sram + r.nbytes) for r in
                           (self.res.get(id(v)) for v in [*n.inputs, n.output] if v is not None)
                           if r is not None]
            if h is not None and n.name == h.consumer:   # it reads the prefetched blocks
                self.op_res.append((self.t.sram_bytes - h.area_bytes, self.t.sram_bytes))
            if n.op in (Op.CONV, Op.FC):
                self._conv(n, info)
            elif n.op in (Op.MAXPOOL, Op.AVGPOOL, Op.GAP):
                self._pool(n, info)
            elif n.op is Op.ADD:
                self._add(n, info)
            else:
                raise InternalError(f"no lowering for {n.op.value} '{n.name}'")
            info.first_cmd, info.end_cmd = first, len(self.w.cmds)
            if len(self.hoist_cmds) > n_hoist:   # its range holds prefetches of a later op
                mine = set(self.hoist_cmds[n_hoist:])
                info.cmds = [i for i in range(first, info.end_cmd) if i not in mine]
            if h is not None and n.name == h.consumer:
                info.cmds = sorted(self.hoist_cmds + list(range(first, info.end_cmd)))
                self.sram_peak = max(self.sram_peak, self.t.sram_bytes)
            self.layers.append(info)
        self.reserve = 0
        if self.pending:
            raise InternalError(f"prefetch consumer '{h.consumer}' never lowered")
        self.w.emit(C.End, [], "end")
        return Program(self.w.cmds, self.w.comments, self.wf.build(),
                       self.sram_peak, max(arena, self.t.dram_align_bytes), in_bytes,
                       out_bytes, ins, outs, self.layers, self.w.slots)

    def _begin_op(self) -> SramAllocator:
        """Start an op: its SRAM allocator (alternating ends) and its DRAM dependency."""
        self._freed = set()
        return SramAllocator(self.t.sram_bytes - self.reserve, self.t.sram_align_bytes,
                             from_top=len(self.sram_hist) % 2 == 1, base=self.base)

    def _end_op(self, sa: SramAllocator) -> None:
        """Record the SRAM intervals the op used (tile buffers and the resident tensors it
        read or wrote) and its last compute and store commands; the op's SRAM footprint counts
        the resident zone below its tile area."""
        self.sram_peak = max(self.sram_peak, sa.top + self.base)
        self.sram_hist.append(([(sa.lo, sa.hi)] + self.op_res, self.w.last(Queue.COMPUTE),
                               self.w.last(Queue.STORE)))

    @staticmethod
    def _extent(f: dict) -> tuple[int, int, int]:
        """(region, first byte, end byte) of the DRAM bytes a DMA with fields ``f`` touches."""
        region, lo = int(f["dram"]) >> 30, int(f["dram"]) & ((1 << 30) - 1)
        hi = lo + (f["n2"] - 1) * f["dram_stride2"] + (f["n1"] - 1) * f["dram_stride1"] \
            + f["run_bytes"]
        return region, lo, hi

    def _load(self, deps: list, comment: str, slot: int = 0, **f):
        """Emit an activation DMA_LOAD that also waits for the latest store overlapping the
        DRAM bytes it reads (read-after-write through DRAM)."""
        region, lo, hi = self._extent(f)
        dep = None
        for s_lo, s_hi, st in reversed(self.stored.get(region, ())):
            if s_lo < hi and lo < s_hi:
                dep = st
                break
        cmd = self.w.emit(C.DmaLoad, deps + [dep], comment, slot=slot, **f)
        self._after_load()
        return cmd

    def _store(self, deps: list, comment: str, **f):
        """Emit a DMA_STORE and record the DRAM extent it writes (see :meth:`_load`)."""
        st = self.w.emit(C.DmaStore, deps, comment, **f)
        region, lo, hi = self._extent(f)
        self.stored.setdefault(region, []).append((lo, hi, st))
        return st

    def _free(self, off: int, nbytes: int) -> list:
        """Dependencies before the current op first writes SRAM [off, off + nbytes): the last
        compute and the last store of the latest earlier op whose buffers overlap it (queues
        run in order, so older overlapping ops are covered). Empty after the first call for
        the same buffer."""
        if off in self._freed:
            return []
        self._freed.add(off)
        return self._free_any(off, nbytes)

    def _free_any(self, off: int, nbytes: int) -> list:
        """:meth:`_free` without its once-per-buffer memo (for prefetch loads)."""
        for spans, comp, store in reversed(self.sram_hist):
            if any(lo < off + max(nbytes, 1) and off < hi for lo, hi in spans):
                return [comp, store]
        return []

    def _budget(self) -> int:
        """SRAM bytes the current op's tile buffers may use: above its tile-area base, below
        the prefetch area (:attr:`reserve`)."""
        return self.t.sram_bytes - self.base - self.reserve

    # ---- cross-op weight prefetch ------------------------------------------------------------
    def _hoist_begin(self) -> None:
        """Plan the prefetch consumer (:class:`Hoist`) ahead of the window: its tile plan under
        the SRAM it will have (the prefetch area stays reserved while it runs), its weight
        blocks (added to the weight file now) and the list of its first blocks, in the order
        its tiles use them, that fit the area, each given a fixed SRAM place there.

        Raises:
            InternalError: the consumer is not a conv/FC of the graph.
        """
        h = self.hoist
        n = next((m for m in self.g.nodes if m.name == h.consumer), None)
        if n is None or n.op not in (Op.CONV, Op.FC):
            raise InternalError(f"prefetch consumer '{h.consumer}' is not a conv of the graph")
        g = self._conv_geom(n)
        base = self.op_base.get(id(n), 0)
        res = Residency(id(n.inputs[0]) in self.res, id(n.output) in self.res,
                        g.has_shortcut and id(n.input(3)) in self.res)
        plan = plan_conv(g, self.t, self.t.sram_bytes - base - h.area_bytes, res)
        info = LayerInfo(n.name, n.op.value, n.source, n.inputs[0].shape, n.output.shape)
        blobs, cfg = self._conv_setup(n, g, min(plan.ocb, g.o), info)
        self.pre[id(n)] = (plan, blobs, cfg, info.weight_bytes, info.weight_raw_bytes,
                           info.weight_file_bytes)
        al = self.t.sram_align_bytes
        off = self.t.sram_bytes - h.area_bytes
        for k, (wb, pb) in enumerate(zip(blobs.weight_blocks, blobs.param_blocks)):
            need = align_up(wb.raw_bytes, al) + align_up(pb.raw_bytes, al)
            if off + need > self.t.sram_bytes:
                break
            self.pending.append((k, off, off + align_up(wb.raw_bytes, al), wb, pb))
            off += need

    def _block_cycles(self, block) -> int:
        """LOAD-queue cycles of one block load (the DMA model of schedule/cost.py)."""
        t = self.t
        dram = math.ceil(block.stored_bytes / t.dram_bytes_per_cycle)
        if block.compressed:
            dram = max(dram, math.ceil(block.raw_bytes / t.decompress_bytes_per_cycle))
        return t.dma_setup_cycles + dram

    def _prefetch_one(self) -> None:
        """Emit the loads of the next pending prefetch block (weights, then parameters) into
        its place in the prefetch area; each waits only for the latest earlier op whose SRAM
        overlaps it (the ops in the window leave the area alone)."""
        k, w_off, p_off, wb, pb = self.pending.pop(0)
        label = f"{self.hoist.consumer} prefetch"
        self._prefetching = True
        self.hoist_cmds.append(len(self.w.cmds))
        self._load_block(self._free_any(w_off, wb.raw_bytes), label + " weights", SLOT_WEIGHTS,
                         wb, w_off)
        self.hoist_cmds.append(len(self.w.cmds))
        dep = self._load_block(self._free_any(p_off, pb.raw_bytes), label + " params",
                               SLOT_PARAMS, pb, p_off)
        self._prefetching = False
        self.prefetched[k] = (w_off, p_off, dep)

    def _after_load(self) -> None:
        """After a LOAD command of the current op: add the idle time measured after it
        (:attr:`Hoist.gaps`) to the credit and emit the pending blocks the credit pays for."""
        if self._prefetching or not self.gaps:
            return
        i, self.load_ord = self.load_ord, self.load_ord + 1
        self.credit += self.gaps[i] if i < len(self.gaps) else 0
        while self.pending:
            cost = self._block_cycles(self.pending[0][3]) + self._block_cycles(
                self.pending[0][4])
            if cost > (2 if self.hoist.eager else 1) * self.credit:
                break
            self.credit = max(0.0, self.credit - cost)
            self._prefetch_one()

    def _load_block(self, deps: list, comment: str, slot: int, block, sram: int):
        """Emit the load of one weight or parameter block (a :class:`wcompress.Block` placed in
        the WEIGHTS region): DMA_LOAD_Z if it is compressed, else a plain DMA_LOAD. WEIGHTS is
        read-only, so only SRAM dependencies apply. Returns the command's (queue, index)."""
        addr = dram_address(Region.WEIGHTS, block.offset)
        if block.compressed:
            cmd = self.w.emit(C.DmaLoadZ, deps, comment + " (deflate)", slot=slot, dram=addr,
                              sram=sram, src_bytes=block.stored_bytes,
                              dst_bytes=block.raw_bytes)
        else:
            cmd = self.w.emit(C.DmaLoad, deps, comment, slot=slot, dram=addr, sram=sram,
                              run_bytes=block.raw_bytes, n1=1, n2=1, dram_stride1=0,
                              dram_stride2=0, sram_stride1=0, sram_stride2=0)
        self._after_load()
        return cmd

    def _conv_geom(self, n: Node) -> ConvGeom:
        x, out = n.inputs[0], n.output
        h, w, c = _hwc(x)
        oh, ow, o = _hwc(out)
        eb = 4 if out.dtype == "int32" else 1
        sc = n.input(3) is not None
        if n.op is Op.FC:
            return ConvGeom(h, w, c, 1, 1, o, h, w, 1, 1, 1, 1, (0, 0, 0, 0), 1, eb, sc)
        a = n.attrs
        return ConvGeom(h, w, c, oh, ow, o, a.kernel[0], a.kernel[1], a.strides[0],
                        a.strides[1], a.dilations[0], a.dilations[1], a.pads, a.group, eb, sc)

    def _conv_setup(self, n: Node, g: ConvGeom, block_channels: int, info: LayerInfo):
        """Add a conv/FC's weights and parameters to the weight file in blocks of
        ``block_channels`` output channels (one DMA each; ``info.weight_bytes`` gets their
        stored DRAM bytes) and build its CONV_CFG fields. Returns (blobs, cfg fields)."""
        q = conv_quant(n)
        image = uses_image_mode(g, self.t)
        wq = weights_ohwi(n) if n.op is Op.CONV else np.ascontiguousarray(
            n.inputs[1].const.transpose(0, 2, 3, 1))
        params = pack_conv_params(q.bias, q.mult, q.shift, q.sc_mult)
        stored0, raw0 = self.wf.stored_bytes, self.wf.raw_bytes
        blobs = self.wf.add_layer(n.name, LayerKind.FC if n.op is Op.FC else LayerKind.CONV,
                                  wq.tobytes(), params, block_channels=block_channels)
        info.weight_bytes = sum(bl.stored_bytes for bl in blobs.weight_blocks
                                + blobs.param_blocks)   # DRAM bytes (compressed if so)
        info.weight_raw_bytes = self.wf.raw_bytes - raw0   # this layer's table entry
        info.weight_file_bytes = self.wf.stored_bytes - stored0
        cfg = dict(kh=g.kh, kw=g.kw, sh=g.sh, sw=g.sw, dh=g.dh, dw=g.dw,
                   out_mode=1 if q.out_int32 else 0,
                   flags=(CONV_FLAG_SHORTCUT if g.has_shortcut else 0)
                   | (CONV_FLAG_IMAGE if image else 0),
                   group=g.group, cin_g=g.cin_g, zp_in=q.zp_in, zp_out=q.zp_out,
                   zp_sc=q.zp_sc, act_lo=q.act_lo, act_hi=q.act_hi)
        return blobs, cfg

    def _conv(self, n: Node, info: LayerInfo) -> None:
        g = self._conv_geom(n)
        rin = self.res.get(id(n.inputs[0]))
        rout = self.res.get(id(n.output))
        rsc = self.res.get(id(n.input(3))) if g.has_shortcut else None
        prefetched: dict[int, tuple[int, int, tuple]] = {}
        if id(n) in self.pre:   # a prefetch consumer: planned before its window
            (plan, blobs, cfg, info.weight_bytes, info.weight_raw_bytes,
             info.weight_file_bytes) = self.pre.pop(id(n))
            prefetched, self.prefetched = self.prefetched, {}
        else:
            plan = plan_conv(g, self.t, self._budget(),
                             Residency(rin is not None, rout is not None, rsc is not None))
            blobs, cfg = self._conv_setup(n, g, min(plan.ocb, g.o), info)
        xin = self.tensors.get(id(n.inputs[0]))  # a view has its own NHWC dims
        xout = self.tensors.get(id(n.output))
        xsc = self.tensors.get(id(n.input(3))) if g.has_shortcut else None
        kw_bytes = g.kh * g.kw * g.cin_g
        label = f"{n.name} [{','.join(n.source)}]"
        self.w.emit(C.ConvCfg, [], label, **cfg)

        spatial = [(y0, min(y0 + plan.rows, g.oh), x0, min(x0 + plan.cols, g.ow))
                   for y0 in range(0, g.oh, plan.rows) for x0 in range(0, g.ow, plan.cols)]
        blocks = [(o0, min(o0 + plan.ocb, g.o)) for o0 in range(0, g.o, plan.ocb)]
        order = ([(s, b) for s in spatial for b in blocks] if plan.order == "spatial"
                 else [(s, b) for b in blocks for s in spatial])
        # SRAM buffers (max tile sizes)
        sa = self._begin_op()
        max_in = max(self._in_box(g, s, b)[6] for s in spatial for b in blocks)
        in_slots = [sa.alloc(max_in, "input") for _ in range(2)] if rin is None else []
        nwb = 1 if len(blocks) == 1 else plan.wbufs
        w_slots = [sa.alloc(plan.ocb * kw_bytes, "weights") for _ in range(nwb)]
        p_slots = [sa.alloc(plan.ocb * PARAM_RECORD_BYTES, "params") for _ in range(nwb)]
        out_tile = plan.rows * plan.cols * plan.ocb
        out_slots = ([sa.alloc(out_tile * g.out_elem_bytes, "output") for _ in range(2)]
                     if rout is None else [])
        sc_slots = ([sa.alloc(out_tile, "shortcut") for _ in range(2)]
                    if g.has_shortcut and rsc is None else [])
        info.sram_bytes = sa.top + self.base
        w_bytes = plan.ocb * kw_bytes
        p_bytes = plan.ocb * PARAM_RECORD_BYTES
        out_bytes = out_tile * g.out_elem_bytes

        last_read = {}    # slot key -> compute (queue, idx) that last read it
        last_write = {}   # slot key -> load (queue, idx) that last wrote it
        last_store = {}   # out slot -> store that last read it
        cur_in, cur_w = None, None
        n_in = 0
        in_slot = 0
        w_addr = p_addr = 0
        w_key: tuple | None = None   # weight slot of the current block (None: prefetched)
        w_dep = None
        kblk = min(plan.ocb, g.o)   # block index k = o0 // kblk: blocks follow plan.ocb
        # Weight slots free to load into, oldest first: (weights SRAM, params SRAM, key); a
        # slot re-enters when the block in it is done (its last compute in last_read). A
        # prefetch consumer whose blocks each run once also reuses the places of its
        # prefetched blocks once they are done, so its own loads run further ahead.
        pool = collections.deque((w_slots[j], p_slots[j], ("w", j)) for j in range(nwb))
        once = plan.order == "channel" or len(spatial) == 1
        loads = [o0 // kblk for j, (_, (o0, _)) in enumerate(order)
                 if (j == 0 or order[j - 1][1][0] != o0) and o0 // kblk not in prefetched]
        issued: collections.deque = collections.deque()   # (block, w, p SRAM, key, load)
        # Eager: issue each load as soon as a slot is free (right after the compute freeing
        # it), not just before the block's first compute, where its wait for that compute
        # could be clamped (WAIT_MAX) to a later one. Only for a consumer with no input or
        # shortcut loads, which an early weight load waiting for a compute would hold up.
        eager = bool(prefetched) and rin is not None and (rsc is not None
                                                          or not g.has_shortcut)

        def pump(n_max: int) -> None:
            """Issue up to ``n_max`` of the pending block loads into free slots."""
            while pool and loads and n_max > 0:
                n_max -= 1
                w_off, p_off, key = pool.popleft()
                k = loads.pop(0)
                deps = [last_read.get(key)] + self._free(w_off, w_bytes)
                self._load_block(deps, label + " weights", SLOT_WEIGHTS, blobs.weight_blocks[k],
                                 w_off)
                last_write[key] = self._load_block(
                    self._free(p_off, p_bytes), label + " params", SLOT_PARAMS,
                    blobs.param_blocks[k], p_off)
                issued.append((k, w_off, p_off, key, last_write[key]))

        if eager:
            pump(len(loads))
        for i, (s, b) in enumerate(order):
            y0, y1, x0, x1 = s
            o0, o1 = b
            box = self._in_box(g, s, b)
            iy0, iy1, ix0, ix1, cc0, cc1, _, pads = box
            in_key = (iy0, iy1, ix0, ix1, cc0, cc1)
            if b != cur_w:  # weights first: they need no DRAM wait and prefetch early
                k = o0 // kblk
                if w_key is not None:   # the block just done frees its slot
                    pool.append((w_addr, p_addr, w_key))
                if k in prefetched:   # loaded during earlier ops into the prefetch area
                    w_addr, p_addr, w_dep = prefetched[k]
                    w_key = None
                    if once:   # its place is free again after its computes
                        w_key = ("pre", k)
                else:
                    pump(len(loads) if eager else 1)
                    k_got, w_addr, p_addr, w_key, w_dep = issued.popleft()
                    if k_got != k:
                        raise InternalError(f"'{n.name}': weight block {k_got} loaded for {k}")
                if eager:
                    pump(len(loads))
                cur_w = b
            strides = {}
            if rin is not None:  # read the box straight from the resident tensor
                rb = rin.box(iy0, ix0, cc0, ix1 - ix0, cc1 - cc0)
                in_addr = rb["addr"]
                strides.update(in_px_stride=rb["px"], in_row_stride=rb["row"])
            elif in_key != cur_in:
                in_slot = n_in % 2
                n_in += 1
                key = ("in", in_slot)
                deps = [last_read.get(key)] + self._free(in_slots[in_slot], max_in)
                last_write[key] = self._load(
                    deps, label + " input",
                    **_dma_fields(xin, iy0, iy1, ix0, ix1, cc0, cc1, in_slots[in_slot]))
                cur_in = in_key
            if rin is None:
                in_addr = in_slots[in_slot]
            slot = i % 2
            sc_dep = None
            sc_addr = 0
            if rsc is not None:
                rb = rsc.box(y0, x0, o0, x1 - x0, o1 - o0)
                sc_addr = rb["addr"]
                strides.update(sc_px_stride=rb["px"], sc_row_stride=rb["row"])
            elif g.has_shortcut:
                sc_addr = sc_slots[slot]
                key = ("sc", slot)
                sc_dep = self._load([last_read.get(key)] + self._free(sc_slots[slot], out_tile),
                                    label + " shortcut", slot=SLOT_SHORTCUT,
                                     **_dma_fields(xsc, y0, y1, x0, x1, o0, o1, sc_slots[slot]))
                last_write[key] = sc_dep
            deps = [last_write.get(("in", in_slot)) if rin is None else None, w_dep, sc_dep]
            if rout is None:
                out_addr = out_slots[slot]
                deps += [last_store.get(slot)] + self._free(out_addr, out_bytes)
            else:  # write the box straight into the resident tensor (once its SRAM is free)
                deps += self._free(rout.sram, rout.nbytes)
                rb = rout.box(y0, x0, o0, x1 - x0, o1 - o0)
                out_addr = rb["addr"]
                strides.update(out_px_stride=rb["px"], out_row_stride=rb["row"])
            comp = self.w.emit(
                C.ConvTile, deps, label,
                in_sram=in_addr, w_sram=w_addr, p_sram=p_addr,
                out_sram=out_addr, sc_sram=sc_addr,
                in_h=iy1 - iy0, in_w=ix1 - ix0, in_c=cc1 - cc0, oc=o1 - o0, out_h=y1 - y0,
                out_w=x1 - x0, pad_t=pads[0], pad_l=pads[1], pad_b=pads[2], pad_r=pads[3],
                **strides)
            last_read[("in", in_slot)] = comp
            if w_key is not None:
                last_read[w_key] = comp
            if g.has_shortcut:
                last_read[("sc", slot)] = comp
            if rout is None:
                last_store[slot] = self._store(
                    [comp], label + " output",
                    **_dma_fields(xout, y0, y1, x0, x1, o0, o1, out_slots[slot]))
            info.tiles += 1
        self._end_op(sa)
        info.macs = g.oh * g.ow * g.o * g.kh * g.kw * g.cin_g
        info.plan = (f"{plan.rows}x{plan.cols}x{plan.ocb} tiles, {plan.order} order, "
                     f"{len(spatial)} spatial x {len(blocks)} channel blocks")

    def _cascade(self, ch: Chain) -> None:
        """Emit a cascaded chain (schedule/cascade.py) band by band.

        Once per chain: every op's whole weight and parameter blocks. Per band: the input band
        (rows the first op's band reads, full width, all channels) and, unless shared, made by
        the side op or resident, the shortcut band; then per op its CFG (when its family's
        registers hold another op's) and one full-width, all-channel tile reading the previous
        op's band buffer and writing its own (the side op, just before the last op, reads a box
        of the input band and writes the shortcut band buffer); then the store of the output
        band. Band buffers of intermediates are single: only the in-order COMPUTE queue
        touches them. The input, output and shortcut bands are double-buffered like any tile,
        so the next band's load overlaps this band's compute. Each op gets a
        :class:`LayerInfo` listing its own commands (``cmds``).
        """
        nodes, bands = ch.nodes, ch.bands
        k = len(nodes)
        ops = nodes + ([ch.side] if ch.side is not None else [])
        geoms = ch.geoms + ([ch.side_geom] if ch.side is not None else [])
        g0, gl = geoms[0], geoms[k - 1]
        x, y = nodes[0].inputs[0], nodes[-1].output
        sc_v = nodes[-1].input(3) if gl.has_shortcut else None
        rin, rout = self.res.get(id(x)), self.res.get(id(y))
        rsc = self.res.get(id(sc_v)) if sc_v is not None and ch.side is None else None
        xin, xout = self.tensors.get(id(x)), self.tensors.get(id(y))
        xsc = self.tensors.get(id(sc_v)) if sc_v is not None else None
        self.op_res = [(r.sram, r.sram + r.nbytes) for r in (rin, rout, rsc) if r is not None]
        labels = [f"{n.name} [{','.join(n.source)}]" for n in ops]
        infos, cfgs, blobs = [], [], []
        for n, g in zip(ops, geoms):
            info = LayerInfo(n.name, n.op.value, n.source, n.inputs[0].shape, n.output.shape)
            if n.op is Op.CONV:
                bl, cfg = self._conv_setup(n, g, g.o, info)   # one block: loaded once
                cfgs.append((C.ConvCfg, cfg))
                blobs.append(bl)
                info.macs = g.oh * g.ow * g.o * g.kh * g.kw * g.cin_g
            else:
                p = pool_quant(n)
                cfgs.append((C.PoolCfg, dict(kind=0 if n.op is Op.MAXPOOL else 1, kh=g.kh,
                                             kw=g.kw, sh=g.sh, sw=g.sw, zp_in=p.zp_in,
                                             zp_out=p.zp_out, shift=p.shift, mult=p.mult)))
                blobs.append(None)
            infos.append(info)
        cmd_of: list[list[int]] = [[] for _ in ops]

        def mark(i: int) -> None:   # the next command emitted belongs to op i
            cmd_of[i].append(len(self.w.cmds))

        sa = self._begin_op()
        in_bytes = max(b[0][3] - b[0][2] for b in bands) * g0.w * g0.c
        in_slots = [sa.alloc(in_bytes, "input band") for _ in range(2)] if rin is None else []
        # band buffers: op i's output rows for i < k - 1, then the side op's (the last op's)
        mid_bytes = [max(b[i][1] - b[i][0] for b in bands) * g.ow * g.o
                     for i, g in enumerate(geoms[:k - 1])]
        out_bytes = ch.rows * gl.ow * gl.o
        if ch.side is not None:
            mid_bytes.append(out_bytes)
        mid = [sa.alloc(nb, "band buffer") for nb in mid_bytes]
        wsl = [(sa.alloc(bl.weight_blocks[0].raw_bytes, "weights"),
                sa.alloc(bl.param_blocks[0].raw_bytes, "params")) if bl is not None else None
               for bl in blobs]
        out_slots = [sa.alloc(out_bytes, "output band") for _ in range(2)] if rout is None \
            else []
        sc_sep = gl.has_shortcut and not ch.sc_shared and rsc is None and ch.side is None
        sc_slots = [sa.alloc(out_bytes, "shortcut band") for _ in range(2)] if sc_sep else []
        wdeps = []
        for i, bl in enumerate(blobs):   # weights first: no DRAM wait, they prefetch early
            if bl is None:
                wdeps.append(None)
                continue
            ws, ps = wsl[i]
            wb, pb = bl.weight_blocks[0], bl.param_blocks[0]
            if len(bl.weight_blocks) != 1 or len(bl.param_blocks) != 1:
                raise InternalError(f"cascaded conv '{ops[i].name}': weights not one block")
            mark(i)
            self._load_block(self._free(ws, wb.raw_bytes), labels[i] + " weights",
                             SLOT_WEIGHTS, wb, ws)
            mark(i)
            wdeps.append(self._load_block(self._free(ps, pb.raw_bytes), labels[i] + " params",
                                          SLOT_PARAMS, pb, ps))
        order = list(range(k - 1)) + ([k] if ch.side is not None else []) + [k - 1]
        last_read: dict[tuple[str, int], tuple] = {}
        last_store: dict[int, tuple] = {}
        cur_cfg: dict[type, int] = {}
        for bi, band in enumerate(bands):
            slot = bi % 2
            iy0, iy1 = band[0][2], band[0][3]
            y0, y1 = band[-1][0], band[-1][1]
            in_dep = sc_dep = None
            if rin is None:
                mark(0)
                in_dep = self._load(
                    [last_read.get(("in", slot))] + self._free(in_slots[slot], in_bytes),
                    labels[0] + " input band",
                    **_dma_fields(xin, iy0, iy1, 0, g0.w, 0, g0.c, in_slots[slot]))
            if sc_sep:
                mark(k - 1)
                sc_dep = self._load(
                    [last_read.get(("sc", slot))] + self._free(sc_slots[slot], out_bytes),
                    labels[k - 1] + " shortcut band", slot=SLOT_SHORTCUT,
                    **_dma_fields(xsc, y0, y1, 0, gl.ow, 0, gl.o, sc_slots[slot]))
            for i in order:
                n, g = ops[i], geoms[i]
                if i < k:
                    oy0, oy1, ry0, ry1, pt, pb = band[i]
                else:   # the side op: the last op's output rows, read from the input band
                    oy0, oy1 = y0, y1
                    ry0, ry1, pt, pb = g.in_rows(y0, y1)
                ix0, ix1, pl, pr = g.in_cols(0, g.ow)
                cls, cfg = cfgs[i]
                if cur_cfg.get(cls) != i:   # the family's registers hold another op's
                    mark(i)
                    self.w.emit(cls, [], labels[i], slot=min(i, 3), **cfg)
                    cur_cfg[cls] = i
                deps = [wdeps[i]] if bi == 0 else []
                strides: dict[str, int] = {}
                row = 0 if ix1 - ix0 == g.w else g.w * g.c   # band buffers are full width
                if 0 < i < k:
                    in_addr = mid[i - 1] + ix0 * g.c
                    strides.update(in_px_stride=0, in_row_stride=row)
                elif rin is None:
                    in_addr = in_slots[slot] + ((ry0 - iy0) * g.w + ix0) * g.c
                    strides.update(in_px_stride=0, in_row_stride=row)
                    deps.append(in_dep)
                else:
                    rb = rin.box(ry0, ix0, 0, ix1 - ix0, g.c)
                    in_addr = rb["addr"]
                    strides.update(in_px_stride=rb["px"], in_row_stride=rb["row"])
                if i != k - 1:   # an intermediate or the side op: its band buffer
                    out_addr = mid[min(i, k - 1)]
                    deps += self._free(out_addr, mid_bytes[min(i, k - 1)])
                elif rout is None:
                    out_addr = out_slots[slot]
                    deps += [last_store.get(slot)] + self._free(out_addr, out_bytes)
                else:
                    deps += self._free(rout.sram, rout.nbytes)
                    rb = rout.box(oy0, 0, 0, g.ow, g.o)
                    out_addr = rb["addr"]
                    strides.update(out_px_stride=rb["px"], out_row_stride=rb["row"])
                mark(i)
                if n.op is not Op.CONV:
                    comp = self.w.emit(
                        C.PoolTile, deps, labels[i], slot=min(i, 3), in_sram=in_addr,
                        out_sram=out_addr, in_h=ry1 - ry0, in_w=ix1 - ix0, c=g.c,
                        out_h=oy1 - oy0, out_w=g.ow, pad_t=pt, pad_l=pl, pad_b=pb, pad_r=pr,
                        **strides)
                else:
                    sc_addr = 0
                    if i == k - 1 and g.has_shortcut:
                        if ch.side is not None:
                            sc_addr = mid[k - 1]
                        elif ch.sc_shared and rin is None:   # a box of the input band
                            sc_addr = in_slots[slot] + (oy0 - iy0) * g0.w * g0.c
                        elif ch.sc_shared or rsc is not None:
                            rb = (rin if ch.sc_shared else rsc).box(oy0, 0, 0, g.ow, g.o)
                            sc_addr = rb["addr"]
                            strides.update(sc_px_stride=rb["px"], sc_row_stride=rb["row"])
                        else:
                            sc_addr = sc_slots[slot]
                            deps.append(sc_dep)
                    comp = self.w.emit(
                        C.ConvTile, deps, labels[i], slot=min(i, 3), in_sram=in_addr,
                        w_sram=wsl[i][0], p_sram=wsl[i][1], out_sram=out_addr,
                        sc_sram=sc_addr, in_h=ry1 - ry0, in_w=ix1 - ix0, in_c=g.c, oc=g.o,
                        out_h=oy1 - oy0, out_w=g.ow, pad_t=pt, pad_l=pl, pad_b=pb, pad_r=pr,
                        **strides)
                infos[i].tiles += 1
                if i in (0, k) or (i == k - 1 and ch.sc_shared and rin is None):
                    last_read[("in", slot)] = comp
                if i == k - 1 and sc_sep:
                    last_read[("sc", slot)] = comp
            if rout is None:
                mark(k - 1)
                last_store[slot] = self._store(
                    [comp], labels[k - 1] + " output band",
                    **_dma_fields(xout, y0, y1, 0, gl.ow, 0, gl.o, out_slots[slot]))
        self._end_op(sa)
        for i, (info, g) in enumerate(zip(infos, geoms)):
            info.cmds = cmd_of[i]
            info.first_cmd, info.end_cmd = min(cmd_of[i]), max(cmd_of[i]) + 1
            info.sram_bytes = sa.top + self.base
            extra = sum(b[i][1] - b[i][0] for b in bands) - g.oh if i < k else 0
            role = f"{i + 1}/{k}" if i < k else "side (shortcut)"
            info.plan = (f"cascade {role} of {nodes[-1].name}: {len(bands)} bands of "
                         f"{ch.rows} output rows, full width, all channels"
                         + (f"; {extra} rows recomputed (halo)" if extra else "")
                         + ("; shortcut read from the input band" if i == k - 1
                            and ch.sc_shared else "")
                         + (f"; chain saves {ch.saved_bytes} DRAM bytes" if i == k - 1
                            else ""))
        self.layers.extend(infos)

    @staticmethod
    def _in_box(g: ConvGeom, s, b):
        y0, y1, x0, x1 = s
        iy0, iy1, pt, pb = g.in_rows(y0, y1)
        ix0, ix1, pl, pr = g.in_cols(x0, x1)
        c0, c1 = g.in_channels(*b)
        return (iy0, iy1, ix0, ix1, c0, c1, (iy1 - iy0) * (ix1 - ix0) * (c1 - c0),
                (pt, pl, pb, pr))

    def _pool_geom(self, n: Node) -> tuple[ConvGeom, tuple[int, int], tuple[int, int]]:
        """Geometry of a pooling op as a weightless depthwise conv, its window and strides.

        Raises:
            UnsupportedError: a window or stride above the POOL_CFG field limit (255).
        """
        h, w, c = _hwc(n.inputs[0])
        oh, ow, _ = _hwc(n.output)
        if n.op is Op.GAP:
            k, s, pads = (h, w), (1, 1), (0, 0, 0, 0)
        else:
            k, s, pads = n.attrs.kernel, n.attrs.strides, n.attrs.pads
        if max(k) > 255 or max(s) > 255:
            raise UnsupportedError(self.g.meta.get("source", ""), [
                f"{n.op.value} '{n.name}': window {k} exceeds the NPU's 255 limit"])
        return (ConvGeom(h, w, c, oh, ow, c, k[0], k[1], s[0], s[1], 1, 1, pads, c,
                         has_weights=False), k, s)

    def _pool(self, n: Node, info: LayerInfo) -> None:
        x = n.inputs[0]
        g, k, s = self._pool_geom(n)
        c, oh, ow = g.c, g.oh, g.ow
        rin, rout = self.res.get(id(x)), self.res.get(id(n.output))
        plan = plan_conv(g, self.t, self._budget(),
                         Residency(rin is not None, rout is not None))
        p = pool_quant(n)
        label = f"{n.name} [{','.join(n.source)}]"
        self.w.emit(C.PoolCfg, [], label, kind=0 if n.op is Op.MAXPOOL else 1, kh=k[0],
                    kw=k[1], sh=s[0], sw=s[1], zp_in=p.zp_in, zp_out=p.zp_out, shift=p.shift,
                    mult=p.mult)
        xin = self.tensors.get(id(x))
        xout = self.tensors.get(id(n.output))
        spatial = [(y0, min(y0 + plan.rows, oh), x0, min(x0 + plan.cols, ow))
                   for y0 in range(0, oh, plan.rows) for x0 in range(0, ow, plan.cols)]
        blocks = [(o0, min(o0 + plan.ocb, c)) for o0 in range(0, c, plan.ocb)]
        sa = self._begin_op()
        max_in = max(self._in_box(g, sp, bl)[6] for sp in spatial for bl in blocks)
        in_slots = [sa.alloc(max_in, "input") for _ in range(2)] if rin is None else []
        out_tile = plan.rows * plan.cols * plan.ocb
        out_slots = [sa.alloc(out_tile, "output") for _ in range(2)] if rout is None else []
        info.sram_bytes = sa.top + self.base
        last_read, last_store = {}, {}
        for i, (sp, bl) in enumerate((sp, bl) for sp in spatial for bl in blocks):
            y0, y1, x0, x1 = sp
            iy0, iy1, ix0, ix1, c0, c1, _, pd = self._in_box(g, sp, bl)
            slot = i % 2
            deps, strides = [], {}
            if rin is None:
                in_addr = in_slots[slot]
                deps.append(self._load(
                    [last_read.get(slot)] + self._free(in_addr, max_in), label + " input",
                    **_dma_fields(xin, iy0, iy1, ix0, ix1, c0, c1, in_addr)))
            else:  # read the box straight from the resident tensor
                rb = rin.box(iy0, ix0, c0, ix1 - ix0, c1 - c0)
                in_addr = rb["addr"]
                strides.update(in_px_stride=rb["px"], in_row_stride=rb["row"])
            if rout is None:
                out_addr = out_slots[slot]
                deps += [last_store.get(slot)] + self._free(out_addr, out_tile)
            else:
                deps += self._free(rout.sram, rout.nbytes)
                rb = rout.box(y0, x0, bl[0], x1 - x0, bl[1] - bl[0])
                out_addr = rb["addr"]
                strides.update(out_px_stride=rb["px"], out_row_stride=rb["row"])
            comp = self.w.emit(C.PoolTile, deps, label, in_sram=in_addr, out_sram=out_addr,
                               in_h=iy1 - iy0, in_w=ix1 - ix0, c=c1 - c0, out_h=y1 - y0,
                               out_w=x1 - x0, pad_t=pd[0], pad_l=pd[1], pad_b=pd[2],
                               pad_r=pd[3], **strides)
            last_read[slot] = comp
            if rout is None:
                last_store[slot] = self._store([comp], label + " output",
                                               **_dma_fields(xout, y0, y1, x0, x1, bl[0],
                                                             bl[1], out_addr))
            info.tiles += 1
        self._end_op(sa)
        info.plan = (f"{plan.rows}x{plan.cols}x{plan.ocb} tiles, {len(spatial)} spatial x "
                     f"{len(blocks)} channel blocks")

    def _add(self, n: Node, info: LayerInfo) -> None:
        a, b = n.inputs[0], n.inputs[1]
        ta, tb = self.tensors.get(id(a)), self.tensors.get(id(b))
        to = self.tensors.get(id(n.output))
        ra, rb_, ro = self.res.get(id(a)), self.res.get(id(b)), self.res.get(id(n.output))
        total = (ta or ra).nbytes
        n_bufs = sum(r is None for r in (ra, rb_, ro))
        blk = plan_channels(max(n_bufs, 1), total, self._budget())
        p = add_quant(n)
        label = f"{n.name} [{','.join(n.source)}]"
        self.w.emit(C.AddCfg, [], label, zp_a=p.zp_a, zp_b=p.zp_b, zp_out=p.zp_out,
                    act_lo=p.act_lo, act_hi=p.act_hi, shift=p.shift, mult_a=p.mult_a,
                    mult_b=p.mult_b)
        sa = self._begin_op()
        sl = [[sa.alloc(blk, "add") if r is None else -1 for r in (ra, rb_, ro)]
              for _ in range(2)]
        info.sram_bytes = sa.top + self.base
        last_read, last_store = {}, {}
        for i, e0 in enumerate(range(0, total, blk)):
            e1 = min(total, e0 + blk)
            slot = i % 2
            sa_, sb_, so_ = sl[slot]
            flat = dict(n1=1, n2=1, dram_stride1=0, dram_stride2=0, sram_stride1=0,
                        sram_stride2=0, run_bytes=e1 - e0)
            deps = []
            if ra is None:  # a resident operand is read in place (flat chunks are contiguous)
                deps.append(self._load([last_read.get(slot)] + self._free(sa_, blk),
                                       label + " a", dram=ta.addr(e0), sram=sa_, **flat))
            else:
                sa_ = ra.sram + e0
            if rb_ is None:
                deps.append(self._load([last_read.get(slot)] + self._free(sb_, blk),
                                       label + " b", slot=SLOT_SHORTCUT, dram=tb.addr(e0),
                                       sram=sb_, **flat))
            else:
                sb_ = rb_.sram + e0
            if ro is None:
                deps += [last_store.get(slot)] + self._free(so_, blk)
            else:
                deps += self._free(ro.sram, ro.nbytes)
                so_ = ro.sram + e0
            comp = self.w.emit(C.AddTile, deps, label, a_sram=sa_, b_sram=sb_, out_sram=so_,
                               n=e1 - e0)
            last_read[slot] = comp
            if ro is None:
                last_store[slot] = self._store([comp], label + " output",
                                               dram=to.addr(e0), sram=so_, **flat)
            info.tiles += 1
        self._end_op(sa)
        info.plan = f"{info.tiles} chunks of {blk} elements"


def plan_hoist(lw: Lowering, prog: Program, spans: list[tuple[int, int]], t: Target,
               eager: bool = False, idle_share: float = 1.0) -> Hoist | None:
    """Choose a cross-op weight prefetch (:class:`Hoist`) from a replayed program (``spans``:
    :func:`cost.replay` of ``prog.commands``; ``lw``: the lowering that built it).

    The consumer is the first conv whose compute is stalled on its own loads (compute span
    minus compute cycles >= 25% of the span and >= 1% of the program). The window is the run
    of plain ops (not cascaded) just before it with the most prefetchable bytes
    ``min(area, idle)``: ``area`` is the SRAM above the tile areas of every two consecutive
    ops of the window and the consumer (base + both footprints, so they still take opposite
    ends of what is left and need not wait for each other), ``idle`` the LOAD-queue idle cycles
    after the window's LOAD commands times the DRAM bytes per cycle. The consumer's tiles must
    fit below the area (it is halved until they do). None when under 16 KiB would be
    prefetched.
    """
    loads = [i for i, c in enumerate(prog.commands) if c.queue is Queue.LOAD]
    gap_after = {a: max(0, spans[b][0] - spans[a][1]) for a, b in itertools.pairwise(loads)}
    total = max((e for _, e in spans), default=0)
    ci = None
    for i, li in enumerate(prog.layers):
        if li.cmds is not None or li.kind not in ("conv", "fc"):
            continue
        comp = [spans[k] for k in range(li.first_cmd, li.end_cmd)
                if prog.commands[k].queue is Queue.COMPUTE]
        span = max(e for _, e in comp) - min(s for s, _ in comp)
        stall = span - sum(e - s for s, e in comp)
        if stall >= 0.25 * span and stall >= 0.01 * total:
            ci = i
            break
    if ci is None:
        return None
    nodes = {m.name: m for m in lw.g.nodes}
    node = nodes[prog.layers[ci].name]
    g = lw._conv_geom(node)
    res = Residency(id(node.inputs[0]) in lw.res, id(node.output) in lw.res,
                    g.has_shortcut and id(node.input(3)) in lw.res)
    c_base = lw.op_base.get(id(node), 0)
    raw = g.o * g.kh * g.kw * g.cin_g + g.o * PARAM_RECORD_BYTES
    al, bw = t.sram_align_bytes, t.dram_bytes_per_cycle

    def top(j: int) -> int:   # op j's tile buffers
        return prog.layers[j].sram_bytes - lw.op_base.get(id(nodes[prog.layers[j].name]), 0)

    best = None
    need, idle = 0, 0
    for j in range(ci - 1, -1, -1):
        li = prog.layers[j]
        if li.cmds is not None or li.name not in nodes:
            break
        if j < ci - 1:
            need = max(need, lw.op_base.get(id(nodes[li.name]), 0) + top(j) + top(j + 1))
        else:
            need = li.sram_bytes
        area = min((t.sram_bytes - need) // al * al, align_up(raw, al))
        if area <= 0:
            break
        idle += sum(gap_after.get(k, 0) for k in range(li.first_cmd, li.end_cmd))
        value = min(area, idle * bw * idle_share)
        if best is None or value > best[0]:
            best = (value, j, area)
    if best is None or best[0] < 16 * 1024:
        return None
    _, j0, area = best
    while area >= 16 * 1024:   # the consumer's tiles must fit below the area
        try:
            plan_conv(g, t, t.sram_bytes - c_base - area, res)
            break
        except ScheduleError:
            area = area // 2 // al * al
    else:
        return None
    win = prog.layers[j0:ci]
    gaps = tuple(tuple(gap_after.get(k, 0) for k in range(li.first_cmd, li.end_cmd)
                       if prog.commands[k].queue is Queue.LOAD) for li in win)
    return Hoist(prog.layers[ci].name, tuple(li.name for li in win), area, gaps, eager)


#: (eager, idle_share) of the prefetch plans (:func:`plan_hoist`) :func:`lower` tries.
HOIST_VARIANTS = ((True, 1.0), (False, 0.5))

#: Resident-zone sizes :func:`lower` tries, as fractions of the SRAM (0 = no residency).
ZONE_FRACTIONS = (0.0, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875)


def lower(graph: Graph, target: Target,
          zone_fractions: tuple[float, ...] = ZONE_FRACTIONS,
          compress_weights: bool = False, cascade: bool = True,
          prefetch: bool = True) -> Program:
    """Lower a quantized graph to an NPU :class:`Program`.

    The SRAM holds a resident zone (whole tensors kept on chip, see
    :meth:`Lowering._plan_resident`) below each op's tile area, which starts at the top of the
    resident tensors live during the op and the op before it; every zone size (the cap of the
    resident set) in ``zone_fractions``
    (fractions of ``target.sram_bytes``, aligned) is lowered and the program with the lowest
    replayed latency (:func:`tcc_compiler.schedule.cost.replay`) is kept, ties going to the
    smaller zone. Zones that leave too little SRAM for some op's tiles are skipped.
    ``compress_weights`` stores weights and parameters DEFLATE-compressed per channel block
    (loaded by DMA_LOAD_Z, specs/weights.md); one memoising compressor serves all tries.
    With ``cascade``, each zone is also lowered with the chains worth cascading
    (schedule/cascade.py) run band by band, and that program competes on replayed latency
    with the one without cascades (so cascading never makes the estimate worse).
    With ``prefetch``, the best program is lowered again with each cross-op weight prefetch
    plan of :data:`HOIST_VARIANTS` (:func:`plan_hoist`), kept only when its replay is faster.

    Raises:
        ScheduleError: an op cannot be tiled into the target's SRAM.
        UnsupportedError: a tensor shape the NPU cannot hold.
    """
    from tcc_compiler.schedule.cost import replay

    compressor = BlockCompressor() if compress_weights else None
    best: tuple[int, Program] | None = None
    for frac in sorted(set(zone_fractions)):
        zone = int(target.sram_bytes * frac) // target.sram_align_bytes \
            * target.sram_align_bytes
        for casc in ((True, False) if cascade else (False,)):
            try:
                lw = Lowering(graph, target, zone, compressor, cascade=casc)
                prog = lw.run()
            except ScheduleError:
                if zone == 0 and not casc:
                    raise
                log.debug("resident zone %d bytes leaves too little SRAM for tiles", zone)
                continue
            cycles = max((e for _, e in replay(prog.commands, target)), default=0)
            log.debug("resident zone %d bytes, %d cascaded chains: %d cycles", zone,
                      len(lw.chains), cycles)
            if best is None or cycles < best[0]:
                best = (cycles, prog, lw, zone, casc)
            if casc and not lw.chains:   # the same program as without cascading
                break
    assert best is not None
    cycles, prog, lw, zone, casc = best
    spans = replay(prog.commands, target) if prefetch else []
    for eager, share in (HOIST_VARIANTS if prefetch else ()):
        hoist = plan_hoist(lw, best[1], spans, target, eager, share)
        if hoist is None:
            break
        try:
            prog2 = Lowering(graph, target, zone, compressor, cascade=casc,
                             hoist=hoist).run()
        except ScheduleError:
            log.debug("prefetch for %s: tiles no longer fit", hoist.consumer)
            continue
        cycles2 = max((e for _, e in replay(prog2.commands, target)), default=0)
        log.debug("prefetch %d bytes of %s during %d ops: %d -> %d cycles",
                  hoist.area_bytes, hoist.consumer, len(hoist.window), best[0], cycles2)
        if cycles2 < cycles:
            cycles, prog = cycles2, prog2
    return prog


__all__ = ["Program", "LayerInfo", "IoTensor", "lower", "ScheduleError", "math"]
