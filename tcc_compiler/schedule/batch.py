"""One core running several images op by op, one weight load serving all of them (the stream
program's ``images_per_core`` > 1, schedule/corestream.py; specs/manifest.md "Stream program").

Image ``k``'s DRAM tensors are the one-image memory plan's moved by ``k`` strides (INPUT,
OUTPUT, ACT regions; WEIGHTS is shared). Ops run in graph order; a conv/FC runs its tiles for
every image under each weight block before the next block
(:func:`~tcc_compiler.schedule.ops.conv.lower_conv` with ``OpContext.images``), so a network
bound by its weight traffic reads its weights once per ``images`` images; any other op runs
once per image. No resident zone, no cascades, no cross-op prefetch: those keep one image's
tensors in SRAM. The emitter's waits order everything as for one image.
"""

from __future__ import annotations

from tcc_compiler.errors import ScheduleError
from tcc_compiler.ir.graph import Graph, Node
from tcc_compiler.ir.ops import CHANNEL_OPS, HOST_OPS, Op, VIEW_OPS
from tcc_compiler.isa import commands as C
from tcc_compiler.isa.spec import Region
from tcc_compiler.isa.wcodec import BlockCompressor
from tcc_compiler.isa.wlayout import WeightLayoutBuilder
from tcc_compiler.schedule.emitter import Emitter
from tcc_compiler.schedule.geom import elem_bytes, hwc
from tcc_compiler.schedule.lowering import lower_one
from tcc_compiler.schedule.memory import MemoryPlan, plan_memory
from tcc_compiler.schedule.ops.context import OpContext, new_info
from tcc_compiler.schedule.program import Program
from tcc_compiler.target import Target


class _MovedPlan:
    """One image's view of a memory plan: DRAM tensors moved by ``shift`` (bytes by region),
    resident tensors ``sram`` bytes higher; everything else is the plan's."""

    def __init__(self, mem: MemoryPlan, shift: dict, sram: int):
        self._mem, self._shift, self._sram = mem, shift, sram

    def __getattr__(self, name):
        return getattr(self._mem, name)

    def tensor(self, v):
        """The DRAM tensor of ``v`` for this image (None: none)."""
        x = self._mem.tensor(v)
        return x.moved(self._shift) if x is not None else None

    def resident(self, v):
        """The resident tensor of ``v`` for this image (None: not resident)."""
        r = self._mem.resident(v)
        return r.moved(self._sram) if r is not None else None


def _op_res(views, n: Node) -> list[tuple[int, int]]:
    """SRAM intervals of the resident tensors op ``n`` reads or writes, in each of ``views``."""
    out = views[0].conv_output(n) if n.op is Op.CONV else n.output
    return [(r.sram, r.sram + r.nbytes) for m in views
            for r in (m.resident(v) for v in [*n.inputs, out] if v is not None)
            if r is not None]


class OnceWeights:
    """A weight-layout builder that lays each layer out once (an op lowered once per image,
    or once per core for its share of the rows (schedule/cores.py), adds its table once)."""

    def __init__(self, builder: WeightLayoutBuilder):
        self._b, self._seen = builder, {}

    def __getattr__(self, name):
        return getattr(self._b, name)

    def add_layer(self, name, *args, **kw):
        """:meth:`WeightLayoutBuilder.add_layer`, once per layer name."""
        if name not in self._seen:
            self._seen[name] = self._b.add_layer(name, *args, **kw)
        return self._seen[name]


def strides(mem: MemoryPlan, t: Target) -> dict[Region, int]:
    """Bytes from one image's INPUT / OUTPUT / ACT slot to the next: the one-image sizes of
    ``mem`` aligned to ``t.dram_align_bytes``."""
    a = t.dram_align_bytes
    return {r: -(-n // a) * a for r, n in ((Region.INPUT, mem.input_bytes),
                                           (Region.OUTPUT, mem.output_bytes),
                                           (Region.ACT, mem.arena_bytes))}


def batch_plan(graph: Graph, t: Target, images: int, zone_bytes: int) -> MemoryPlan:
    """The one-image memory plan :func:`lower_batch` uses for ``images`` images per core with
    a resident zone of ``zone_bytes`` each (aligned here): planned in the SRAM left above
    the other images' zones (a few ms; no commands).

    Raises:
        ScheduleError: the zones exceed the SRAM.
    """
    zone_bytes = -(-zone_bytes // t.sram_align_bytes) * t.sram_align_bytes
    zones = (images - 1) * zone_bytes
    if zones >= t.sram_capacity_bytes:
        raise ScheduleError(f"{images} zones of {zone_bytes} B exceed the SRAM")
    return plan_memory(graph, t.with_sram(t.sram_capacity_bytes - zones), zone_bytes, False)


def activation_bytes(graph: Graph, mem: MemoryPlan) -> tuple[int, int]:
    """(bytes loaded, bytes stored) per image by the activation traffic of the ops the
    lowering visits under ``mem``: every non-constant, non-resident operand read once and
    every non-resident result written once (NHWC sizes; an op's halo and re-reads not
    counted: an estimate for ranking, schedule/corestream.py)."""
    ld = st = 0
    for n in graph.nodes:
        if n.op in HOST_OPS or n.op in VIEW_OPS or id(n) in mem.fused_luts:
            continue
        if n.op in CHANNEL_OPS and id(n) not in mem.views.copies:
            continue
        out = mem.conv_output(n) if n.op is Op.CONV else n.output
        ld += sum(_nbytes(v, mem) for v in n.inputs)
        st += _nbytes(out, mem)
    return ld, st


def _nbytes(v, mem: MemoryPlan) -> int:
    if v is None or v.const is not None or mem.resident(v) is not None:
        return 0
    h, w, c = hwc(v)
    return h * w * c * elem_bytes(v)


def lower_batch(graph: Graph, t: Target, images: int,
                compressor: BlockCompressor | None = None, zone_bytes: int = 0,
                mem: MemoryPlan | None = None, builder: WeightLayoutBuilder | None = None
                ) -> tuple[Program, dict]:
    """A one-core program running ``images`` images (see the module docstring), each with a
    resident zone of ``zone_bytes`` (image ``k``'s at ``k * zone_bytes``; the tile areas
    above all of them). ``mem``: :func:`batch_plan`'s plan of the same arguments, when the
    caller has it (None: planned here). ``builder``: the WEIGHTS layout to add the layers to
    (one shared by several parts of a program, schedule/batchtail.py; None: a new one).

    Returns:
        (the program, its per-image strides by region, :func:`strides`); the program's
        ``input_bytes`` / ``output_bytes`` / ``act_arena_bytes`` hold ``images`` slots.

    Raises:
        ScheduleError: an op cannot be tiled into the SRAM left above the zones.
    """
    zone_bytes = -(-zone_bytes // t.sram_align_bytes) * t.sram_align_bytes
    zones = (images - 1) * zone_bytes   # the other images' zones, below every tile area
    if mem is None:
        mem = batch_plan(graph, t, images, zone_bytes)
    st = strides(mem, t)
    views = tuple(_MovedPlan(mem, {r: k * s for r, s in st.items()}, k * zone_bytes)
                  for k in range(images))
    em = Emitter(t.sram_capacity_bytes, t.sram_align_bytes)
    builder = builder if builder is not None else WeightLayoutBuilder(compressor)
    weights, memo = OnceWeights(builder), {}
    layers = []
    source = graph.meta.get("source", "")
    for n in graph.nodes:
        if n.op in HOST_OPS or n.op in VIEW_OPS or id(n) in mem.fused_luts:
            continue
        if n.op in CHANNEL_OPS and id(n) not in mem.views.copies:
            continue
        info, first = new_info(n), em.n_cmds
        base = zones + mem.base(n)
        if n.op in (Op.CONV, Op.FC):
            lower_one(OpContext(em, mem, weights, t, source, base=base, memo=memo,
                                op_res=_op_res(views, n), images=views), n, info, None)
        else:
            for m in views:
                lower_one(OpContext(em, m, weights, t, source, base=base, memo=memo,
                                    op_res=_op_res((m,), n)), n, info, None)
        info.first_cmd, info.end_cmd = first, em.n_cmds
        layers.append(info)
    em.emit(C.End, [], "end")
    w = em.w
    prog = Program(w.cmds, w.comments, builder.build(), em.sram_peak,
                   images * st[Region.ACT], images * st[Region.INPUT],
                   images * st[Region.OUTPUT], list(mem.inputs), list(mem.outputs), layers,
                   w.slots)
    return prog, st
