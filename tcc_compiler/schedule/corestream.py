"""The stream program of a two-core chip: several images per run, each core on its own images
(``--cores 2``; specs/target.md "Two cores", specs/manifest.md "Stream program").

A one-core program is copied onto each core with its activation, input and output DRAM
addresses moved to the core's image slots (image ``i`` of a run: INPUT at ``i * input
stride``, OUTPUT at ``i * output stride``, ACT at ``i * arena stride``); the WEIGHTS region is
shared and read-only, so the cores never touch the same writable bytes and need no semaphore.
The per-core program runs one image (the one-core program, resident zone, cascades and
prefetch included) or ``batch`` images with one weight load per weight block for all of them:
the network's head image by image with the whole SRAM for its resident zone and its
weight-heavy tail op by op for all the images
(:func:`~tcc_compiler.schedule.batchtail.lower_tail_batch`), or, when the network cannot be
cut at one tensor, the whole network op by op
(:func:`~tcc_compiler.schedule.batch.lower_batch`): for networks bound by the DRAM link, the
gain.

Cost model: :func:`~tcc_compiler.schedule.coretime.replay_cores` of the whole program (the
DRAM bandwidth shared); its end over the images is the stream period the report gives, and
:func:`lower_stream` keeps the candidate with the shortest one.
"""

from __future__ import annotations

import dataclasses

from tcc_compiler.errors import InternalError, ScheduleError
from tcc_compiler.ir.graph import Graph
from tcc_compiler.isa import commands as C
from tcc_compiler.isa.spec import Region, dram_address, split_dram_address
from tcc_compiler.isa.wcodec import BlockCompressor
from tcc_compiler.schedule import cost
from tcc_compiler.schedule.batch import activation_bytes, batch_plan, lower_batch
from tcc_compiler.schedule.batchtail import const_elems, cuts, lower_tail_batch
from tcc_compiler.schedule.coretime import replay_cores
from tcc_compiler.schedule.program import Program
from tcc_compiler.target import Target

#: Images per core the stream candidates try besides one (op by op, one weight load per
#: block for all of them), and the resident zone of each image (fractions of the SRAM).
BATCHES = (2, 3)
ZONE_FRACTIONS = (0.125, 0.2, 0.25, 0.3)
#: Batch candidates lowered and replayed: those with the lowest :func:`batch_estimate`.
#: Measured on ResNet-50 224x224 (8 candidates), the replay's best had the third lowest
#: estimate (b = 3 at 0.2 of the SRAM: 1.84 ms per image; the estimate misses how small the
#: tile area left above three zones of 0.3 gets).
FINALISTS = 3
#: Tail batching (schedule/batchtail.py): cuts whose tails hold at least these shares of the
#: weights (the latest such cut each), (images per core, each image's tail zone as a fraction
#: of the SRAM) pairs, the head's zone. Measured on ResNet-50 and MobileNetV2 at 224x224
#: (estimates; cuts at 0.98 / 0.94 / 0.88 of the weights, 3 or 4 images, zones 0.15 / 0.2,
#: head zones 0.75 / 0.875): the best were 1.31 ms per image (0.88 share, 4 images, zone
#: 0.15) and 0.19 ms (0.98, 4 images, either zone); 3 images at zone 0.2 came second on
#: ResNet-50 (1.34 ms); a head zone of 0.75 lost 15 %.
TAIL_SHARES = (0.97, 0.85)
TAIL_BATCHES = ((4, 0.15), (4, 0.2), (3, 0.2))
HEAD_ZONE_FRACTION = 0.875


@dataclasses.dataclass(frozen=True)
class StreamProgram:
    """A multi-image program: ``images`` images per run, ``batch`` per core.

    Attributes:
        program: the multi-core program (``program.cores`` streams; ``input_bytes`` etc. are
            the whole run's: ``images`` slots).
        images, batch: images per run, images per core.
        input_stride_bytes, output_stride_bytes, act_stride_bytes: bytes from one image's
            INPUT / OUTPUT / ACT slot to the next (image ``i`` at ``i * stride``).
        run_cycles: the replayed cycles of one run (all cores, shared DRAM);
        period_cycles: ``ceil(run_cycles / images)``, cycles per image of a stream.
        tail_from: with tail batching (schedule/batchtail.py), the tensor the head hands the
            tail (only the tail's weights are read once per ``batch`` images), else None;
        tail_weight_share: the tail's share of the weights' elements (None: no tail batch).
    """

    program: Program
    images: int
    batch: int
    input_stride_bytes: int
    output_stride_bytes: int
    act_stride_bytes: int
    run_cycles: int
    period_cycles: int
    tail_from: str | None = None
    tail_weight_share: float | None = None


def _moved(cmd: C.Command, shift: dict[Region, int]) -> C.Command:
    """``cmd`` with its DRAM address moved by ``shift[region]`` bytes (a DMA outside WEIGHTS)."""
    if not isinstance(cmd, (C.DmaLoad, C.DmaStore)):
        return cmd
    region, off = split_dram_address(cmd.dram)
    d = shift.get(region, 0)
    return dataclasses.replace(cmd, dram=dram_address(region, off + d)) if d else cmd


def stream_program(per_core: Program, t: Target, batch: int, st: dict[Region, int],
                   cores: int = 2) -> StreamProgram:
    """``cores`` copies of the one-core program ``per_core`` (which runs ``batch`` images at
    per-image strides ``st``), core ``k`` on image slots ``k * batch ..``; replayed with the
    shared bandwidth.

    Raises:
        InternalError: ``per_core`` is a multi-core program.
    """
    if per_core.cores != 1:
        raise InternalError("stream_program: the per-core program must be a one-core program")
    cmds, comments, slots = [], [], []
    for k in range(cores):
        shift = {r: k * batch * s for r, s in st.items()}
        cmds += [_moved(c, shift) for c in per_core.commands]
        comments += [f"core {k}: {c}" for c in per_core.comments]
        slots += list(per_core.slots)
    images = cores * batch
    prog = dataclasses.replace(
        per_core, commands=cmds, comments=comments, slots=slots, layers=[], cores=cores,
        estimates={}, act_arena_bytes=images * st[Region.ACT],
        input_bytes=images * st[Region.INPUT], output_bytes=images * st[Region.OUTPUT])
    run = max((e for _, e in replay_cores(prog.commands, t)), default=0)
    return StreamProgram(prog, images, batch, st[Region.INPUT], st[Region.OUTPUT],
                         st[Region.ACT], run, -(-run // images))


def batch_estimate(graph: Graph, t: Target, images: int, mem, weight_bytes: int,
                   single_cycles: int) -> float:
    """Estimated stream period (cycles per image) of :func:`lower_batch` programs of
    ``images`` images per core under their memory plan ``mem`` (:func:`batch_plan`), on two
    cores, without lowering them: the longer of half a core's time per image (the one-image
    program's replayed ``single_cycles`` less the weight reads the batch shares) and the
    shared link's time per image (``weight_bytes`` / images plus the activation bytes the
    plan moves, :func:`activation_bytes`). A few ms per candidate; for ranking only: the
    replay of the lowered program decides."""
    w = cost.transfer_cycles(weight_bytes, t)
    ld, st = activation_bytes(graph, mem)
    link = cost.transfer_cycles(weight_bytes / images + ld + st, t)
    return max((single_cycles - w * (1 - 1 / images)) / 2, link)


def lower_stream(graph: Graph, t: Target, compressor: BlockCompressor | None,
                 single: Program, cores: int = 2, single_cycles: int | None = None
                 ) -> StreamProgram:
    """The stream program with the shortest replayed period per image among: ``single`` (the
    one-core program, any zone, cascades or prefetch) one image per core, and programs of
    several images per core reading each weight block once for all of them: the network's
    weight-heavy tail batched after its head ran image by image
    (:func:`tail_candidates`), or, for a network that cannot be cut at one tensor, the whole
    network batched (:func:`whole_candidates`). Batching is tried only when reading the
    weights takes at least half the one-image candidate's period (it gains nothing
    elsewhere: an image's activations are what the link carries). ``single_cycles``:
    ``single``'s replayed cycles (None: replayed here).

    Raises:
        ScheduleError: the one-image candidate cannot be built (the batches are skipped when
            they cannot be lowered).
    """
    one_st = {Region.INPUT: _align(single.input_bytes, t),
              Region.OUTPUT: _align(single.output_bytes, t),
              Region.ACT: _align(single.act_arena_bytes, t)}
    cands = [stream_program(single, t, 1, one_st, cores)]
    wbytes = single.weights.stored_bytes
    if 2 * cost.transfer_cycles(wbytes, t) >= cands[0].period_cycles:
        batched = tail_candidates(graph, t, compressor, cores)
        if not batched:
            if single_cycles is None:
                single_cycles = max((e for _, e in cost.replay(single.commands, t)),
                                    default=0)
            batched = whole_candidates(graph, t, compressor, wbytes, single_cycles, cores)
        cands += batched
    return min(cands, key=lambda s: (s.period_cycles, s.batch))


def tail_candidates(graph: Graph, t: Target, compressor: BlockCompressor | None,
                    cores: int = 2) -> list[StreamProgram]:
    """Stream programs batching the network's tail
    (:func:`~tcc_compiler.schedule.batchtail.lower_tail_batch`): for each share ``s`` of
    :data:`TAIL_SHARES`, the latest cut (:func:`~tcc_compiler.schedule.batchtail.cuts`)
    whose tail holds at least ``s`` of the weights, with each of :data:`TAIL_BATCHES`' images
    per core and tail zone per image (a fraction of the SRAM), the head's zone
    :data:`HEAD_ZONE_FRACTION`. [] when the network has no such cut; a candidate that
    cannot be tiled is skipped."""
    cs = cuts(graph)
    total = sum(const_elems(n) for n in graph.nodes)
    chosen = []
    for share in TAIL_SHARES:
        ok = [c for c in cs if c.tail_weight_elems >= share * total]
        if ok and ok[-1] not in chosen:
            chosen.append(ok[-1])
    head_zone = int(HEAD_ZONE_FRACTION * t.sram_capacity_bytes)
    out = []
    for cut in chosen:
        for b, f in TAIL_BATCHES:
            try:
                prog, st = lower_tail_batch(graph, t, b, cut, compressor, head_zone,
                                            int(f * t.sram_capacity_bytes))
            except ScheduleError:
                continue
            out.append(dataclasses.replace(stream_program(prog, t, b, st, cores),
                                           tail_from=cut.boundary,
                                           tail_weight_share=cut.tail_weight_elems / total))
    return out


def whole_candidates(graph: Graph, t: Target, compressor: BlockCompressor | None,
                     wbytes: int, single_cycles: int, cores: int = 2) -> list[StreamProgram]:
    """Stream programs batching the whole network
    (:func:`~tcc_compiler.schedule.batch.lower_batch`): :data:`BATCHES` images per core, each
    image with a resident zone of one of :data:`ZONE_FRACTIONS` of the SRAM; every
    candidate's memory plan is priced by :func:`batch_estimate` (``wbytes``: stored weight
    bytes, ``single_cycles``: the one-image program's replayed cycles) and only the
    :data:`FINALISTS` lowest are lowered and replayed."""
    ranked = []
    for b in BATCHES:
        for f in ZONE_FRACTIONS:
            zone = int(f * t.sram_capacity_bytes)
            try:
                mem = batch_plan(graph, t, b, zone)
            except ScheduleError:
                continue
            ranked.append((batch_estimate(graph, t, b, mem, wbytes, single_cycles), b,
                           zone, mem))
    out = []
    for _, b, zone, mem in sorted(ranked, key=lambda r: r[:3])[:FINALISTS]:
        try:
            prog, st = lower_batch(graph, t, b, compressor, zone, mem)
        except ScheduleError:
            continue
        out.append(stream_program(prog, t, b, st, cores))
    return out


def _align(n: int, t: Target) -> int:
    a = t.dram_align_bytes
    return -(-n // a) * a
