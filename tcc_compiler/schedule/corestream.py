"""The stream program of a two-core chip: several images per run, each core on its own images
(``--cores 2``; specs/target.md "Two cores", specs/manifest.md "Stream program").

A one-core program is copied onto each core with its activation, input and output DRAM
addresses moved to the image's slot (image ``i`` of a run: INPUT at ``i * input stride``,
OUTPUT at ``i * output stride``, ACT at ``i * arena stride``); the WEIGHTS region is shared
and read-only, so the cores never touch the same writable bytes and need no semaphore. With
``batch`` = 2 images per core, a core runs its two images segment by segment (a segment: the
commands of one op, or of a cascaded chain): image a's segment, then image b's, and b's copy
drops every weight load whose SRAM bytes nothing else in the segment writes -- image a's load
left them in place, so one weight load serves both images (for networks bound by the DRAM
link, the gain). That needs a one-core program whose SRAM holds nothing from one segment to
the next (no resident zone, no cross-op weight prefetch): :func:`lower_stream` lowers one.

Order: every segment copy starts with a barrier (its first command of each queue waits for
every earlier command of the core: wait 0 on all three queues), so two copies never share
SRAM bytes in flight; inside a copy each command waits for the same commands as in the
one-core program (recounted without the dropped loads; a wait on a dropped load becomes a
wait on the queue's command before it, the weights having arrived before the barrier).

Cost model: :func:`~tcc_compiler.schedule.coretime.replay_cores` of the whole program (the
DRAM bandwidth shared); its end over the images is the stream period the report gives.
"""

from __future__ import annotations

import dataclasses

from tcc_compiler.errors import InternalError, ScheduleError
from tcc_compiler.ir.graph import Graph
from tcc_compiler.isa import commands as C
from tcc_compiler.isa.spec import WAIT_MAX, WAIT_NONE, Queue, Region, dram_address
from tcc_compiler.isa.spec import split_dram_address
from tcc_compiler.schedule.coretime import replay_cores
from tcc_compiler.schedule.program import Program
from tcc_compiler.schedule.search import search
from tcc_compiler.target import Target

_QUEUES = (Queue.LOAD, Queue.COMPUTE, Queue.STORE)


@dataclasses.dataclass(frozen=True)
class StreamProgram:
    """A multi-image program: ``images`` images per run, ``batch`` per core.

    Attributes:
        program: the two-core program (``program.cores`` streams; ``input_bytes`` etc. are
            the whole run's: ``images`` slots).
        images, batch: images per run, images per core.
        input_stride_bytes, output_stride_bytes, act_stride_bytes: bytes from one image's
            INPUT / OUTPUT / ACT slot to the next (image ``i`` at ``i * stride``).
        run_cycles: the replayed cycles of one run (both cores, shared DRAM);
        period_cycles: ``ceil(run_cycles / images)``, cycles per image of a stream.
        dropped_weight_loads: weight loads the batch saved (commands, all cores).
    """

    program: Program
    images: int
    batch: int
    input_stride_bytes: int
    output_stride_bytes: int
    act_stride_bytes: int
    run_cycles: int
    period_cycles: int
    dropped_weight_loads: int


def segments(prog: Program) -> list[tuple[int, int]]:
    """[start, end) command ranges of ``prog`` (one core, END last) such that no op's
    commands cross two ranges: each op's span, spans that overlap (a cascaded chain's ops)
    merged; commands between two ops join the following range. END is left out."""
    n = len(prog.commands) - 1
    spans = sorted((min(li.cmds), max(li.cmds) + 1) if li.cmds else (li.first_cmd, li.end_cmd)
                   for li in prog.layers if (li.cmds or li.end_cmd > li.first_cmd))
    cuts, reach = [0], 0
    for a, b in spans:
        if a >= reach and a > cuts[-1]:
            cuts.append(a)
        reach = max(reach, b)
    return [(a, b) for a, b in zip(cuts, cuts[1:] + [n]) if b > a]


def _is_weight_load(cmd: C.Command) -> bool:
    if isinstance(cmd, C.DmaLoadZ):
        return True
    return isinstance(cmd, C.DmaLoad) and split_dram_address(cmd.dram)[0] == Region.WEIGHTS


def write_hulls(cmds: list[C.Command]) -> list[tuple[int, int] | None]:
    """Per command of one core's stream, the hull [lo, hi) of the SRAM bytes it writes (None:
    it writes none), its layer registers followed through the stream."""
    regs, out = C.Registers(), []
    for cmd in cmds:
        w = [x for x in cmd.accesses(regs) if x.is_write and x.space is C.Space.SRAM]
        out.append((min(x.start for x in w), max(x.end for x in w)) if w else None)
        regs.update(cmd)
    return out


def droppable(cmds: list[C.Command], hulls: list, seg: tuple[int, int]) -> set[int]:
    """Indices in ``seg`` of ``cmds`` (one core's stream; ``hulls`` its :func:`write_hulls`)
    of the weight loads whose SRAM bytes no other command of the segment writes: a second
    image's copy of the segment may skip them, the first copy's loads having left the bytes
    in place."""
    a, b = seg
    out = set()
    for i in range(a, b):
        if not _is_weight_load(cmds[i]) or hulls[i] is None:
            continue
        lo, hi = hulls[i]
        if all(hulls[j] is None or j == i or hulls[j][1] <= lo or hulls[j][0] >= hi
               for j in range(a, b)):
            out.add(i)
    return out


def _absolute_waits(cmds: list[C.Command]) -> list[list[tuple[int, int]]]:
    """Per command of a one-core stream, the commands it waits for: (queue position p, index
    j of the last command of queue p it needs done) for each queue with a wait."""
    by_q: list[list[int]] = [[], [], []]
    out = []
    for j, cmd in enumerate(cmds):
        need = []
        if cmd.queue is not Queue.CONTROL:
            for p, n in enumerate(cmd.waits):
                k = len(by_q[p]) - n
                if n != WAIT_NONE and k > 0:
                    need.append((p, by_q[p][k - 1]))
            by_q[_QUEUES.index(cmd.queue)].append(j)
        out.append(need)
    return out


def _shifted(cmd: C.Command, shift: dict[Region, int]) -> C.Command:
    if not isinstance(cmd, (C.DmaLoad, C.DmaStore)):
        return cmd
    region, off = split_dram_address(cmd.dram)
    d = shift.get(region, 0)
    return dataclasses.replace(cmd, dram=dram_address(region, off + d)) if d else cmd


class _CoreStream:
    """One core's stream: copies of the one-core program ``single``'s segments, each for an
    image slot (DRAM addresses moved by ``strides`` per slot)."""

    def __init__(self, single: Program, strides: dict[Region, int]):
        self.single = single
        self.strides = strides
        self.need = _absolute_waits(single.commands)
        self.cmds: list[C.Command] = []
        self.comments: list[str] = []
        self.slots: list[int] = []
        self.count = [0, 0, 0]
        self.dropped = 0

    def copy(self, seg: tuple[int, int], image: int, drop: set[int]) -> None:
        """Append segment ``seg`` for image slot ``image`` without the commands ``drop``."""
        a, b = seg
        src = self.single.commands
        shift = {r: image * s for r, s in self.strides.items()}
        new_idx: dict[int, int | None] = {}   # source index -> index in its queue (None: none)
        last = [None, None, None]
        first = [True, True, True]
        for j in range(a, b):
            cmd = src[j]
            p = None if cmd.queue is Queue.CONTROL else _QUEUES.index(cmd.queue)
            if j in drop:   # a wait on it becomes one on its queue's command before it
                new_idx[j] = last[p]
                self.dropped += 1
                continue
            new = _shifted(cmd, shift)
            if p is not None:
                waits = self._waits(j, a, new_idx, first[p])
                first[p] = False
                new = dataclasses.replace(new, wait_load=waits[0], wait_compute=waits[1],
                                          wait_store=waits[2])
                new_idx[j] = last[p] = self.count[p]
                self.count[p] += 1
            self.cmds.append(new)
            self.comments.append(f"image {image}: {self.single.comments[j]}"
                                 if j < len(self.single.comments) else f"image {image}")
            self.slots.append(self.single.slots[j] if j < len(self.single.slots) else 0)

    def _waits(self, j: int, a: int, new_idx: dict, barrier: bool) -> list[int]:
        """The wait fields of source command ``j`` copied: all-zero (wait for everything
        before) for the copy's first command of its queue, else its dependencies inside the
        segment recounted (those before it are before the barrier)."""
        if barrier:
            return [0 if self.count[q] else WAIT_NONE for q in range(3)]
        waits = [WAIT_NONE] * 3
        for q, tgt in self.need[j]:
            k = new_idx.get(tgt) if tgt >= a else None
            if k is not None:
                waits[q] = min(waits[q], self.count[q] - 1 - k, WAIT_MAX)
        return waits

    def end(self) -> None:
        """Close the stream with END."""
        self.cmds.append(C.End(wait_load=WAIT_NONE, wait_compute=WAIT_NONE,
                               wait_store=WAIT_NONE))
        self.comments.append("end")
        self.slots.append(0)


def _stride(nbytes: int, t: Target) -> int:
    a = t.dram_align_bytes
    return -(-nbytes // a) * a


def stream_program(single: Program, t: Target, batch: int, cores: int = 2) -> StreamProgram:
    """``cores`` x ``batch`` images per run of the one-core program ``single``: core ``k``
    runs image slots ``k * batch ..``, segment by segment when ``batch`` > 1 (the weight
    loads of the later copies dropped where :func:`droppable` allows; ``single`` must carry
    nothing in SRAM from one segment to the next). Replayed with the shared bandwidth.

    Raises:
        InternalError: ``single`` is a multi-core program.
    """
    if single.cores != 1:
        raise InternalError("stream_program: the per-core program must be a one-core program")
    strides = {Region.INPUT: _stride(single.input_bytes, t),
               Region.OUTPUT: _stride(single.output_bytes, t),
               Region.ACT: _stride(single.act_arena_bytes, t)}
    if batch > 1:
        segs = segments(single)
        hulls = write_hulls(single.commands)
        drops = [droppable(single.commands, hulls, s) for s in segs]
    else:
        segs, drops = [(0, len(single.commands) - 1)], [set()]
    streams = []
    for k in range(cores):
        cs = _CoreStream(single, strides)
        for seg, drop in zip(segs, drops):
            for i in range(batch):
                cs.copy(seg, k * batch + i, drop if i else set())
        cs.end()
        streams.append(cs)
    images = cores * batch
    prog = dataclasses.replace(
        single, commands=[c for s in streams for c in s.cmds],
        comments=[c for s in streams for c in s.comments],
        slots=[c for s in streams for c in s.slots], layers=[], cores=cores, estimates={},
        act_arena_bytes=images * strides[Region.ACT],
        input_bytes=images * strides[Region.INPUT],
        output_bytes=images * strides[Region.OUTPUT])
    run = max((e for _, e in replay_cores(prog.commands, t)), default=0)
    return StreamProgram(prog, images, batch, strides[Region.INPUT], strides[Region.OUTPUT],
                         strides[Region.ACT], run, -(-run // images),
                         sum(s.dropped for s in streams))


def lower_stream(graph: Graph, t: Target, compress_weights: bool, single: Program,
                 cores: int = 2) -> StreamProgram:
    """The stream program with the shortest replayed period per image among: ``single`` (the
    one-core program, any zone or prefetch) one image per core, and a one-core lowering
    without resident zone, cascades or cross-op prefetch two images per core (one weight
    load per two images).

    Raises:
        ScheduleError: no candidate can be lowered (an op cannot be tiled into the SRAM).
    """
    cands = [stream_program(single, t, 1, cores)]
    try:
        flat = search(graph, t, (0.0,), compress_weights, cascade=False, prefetch=False)
    except ScheduleError:
        flat = None
    if flat is not None:
        cands.append(stream_program(flat, t, 2, cores))
    return min(cands, key=lambda s: (s.period_cycles, s.batch))
