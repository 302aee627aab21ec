"""The cycle model of a multi-core program: every core's queues replayed together, the DRAM
bandwidth shared (specs/target.md "Two cores").

Same queue and wait rules as :func:`~tcc_compiler.schedule.cost.replay`, per core, plus:

* a SEM_WAIT starts no earlier than ``sem_latency_cycles`` after the ``count``-th SEM_SIGNAL
  on its semaphore has finished; SEM_SIGNAL and SEM_WAIT take no cycles themselves;
* shared DRAM bandwidth (an ASSUMPTION of the target file): a DMA command first takes its
  ``dma_setup_cycles`` (no bandwidth), then its transfer, whose length at the full rate is
  the single-core model's (``ceil(bytes / bw)``; DMA_LOAD_Z: the longer of its read and its
  decompression). The transfer progresses at the full rate while no transfer of another core
  is in flight and at half the rate while one is (each core gets half). A core's own LOAD and
  STORE queues overlap as in the single-core model.

This is a discrete-event simulation in cycles (floats, rounded up at the end); with one core
it gives the single-core replay's times.
"""

from __future__ import annotations

import math

from tcc_compiler.isa import commands as C
from tcc_compiler.isa.spec import WAIT_NONE, Queue
from tcc_compiler.ir.ops import Op
from tcc_compiler.schedule.cost import command_cycles, compute_cycles, conv_pixel_cycles
from tcc_compiler.schedule.geom import conv_geom
from tcc_compiler.target import Target

_QUEUES = (Queue.LOAD, Queue.COMPUTE, Queue.STORE)
_EPS = 1e-6


def core_ranges(cmds: list[C.Command]) -> list[tuple[int, int]]:
    """[start, end) of each END-terminated core stream of ``cmds``."""
    out, start = [], 0
    for i, c in enumerate(cmds):
        if isinstance(c, C.End):
            out.append((start, i + 1))
            start = i + 1
    return out


class _Plan:
    """Per command: core, global queue, waits as (queue, count done), semaphore need, fixed
    and transfer cycles."""

    def __init__(self, cmds: list[C.Command], t: Target):
        self.ranges = core_ranges(cmds)
        nq = 3 * len(self.ranges)
        self.by_queue: list[list[int]] = [[] for _ in range(nq)]
        self.core, self.gq, self.need, self.sem = [], [], [], {}
        self.fixed, self.xfer = [], []
        for c, (a, b) in enumerate(self.ranges):
            regs = C.Registers()
            for j in range(a, b):
                cmd = cmds[j]
                self.core.append(c)
                cyc = command_cycles(cmd, regs, t)
                regs.update(cmd)
                if isinstance(cmd, (C.DmaLoad, C.DmaStore, C.DmaLoadZ)):
                    self.fixed.append(t.dma_setup_cycles)
                    self.xfer.append(cyc - t.dma_setup_cycles)
                elif isinstance(cmd, (C.SemSignal, C.SemWait, C.End)):
                    self.fixed.append(0)
                    self.xfer.append(0)
                else:
                    self.fixed.append(cyc)
                    self.xfer.append(0)
                if cmd.queue is Queue.CONTROL:
                    self.gq.append(-1)
                    self.need.append([])
                    continue
                q = 3 * c + _QUEUES.index(cmd.queue)
                need = []
                for p, n in enumerate(cmd.waits):
                    k = len(self.by_queue[3 * c + p]) - n
                    if n != WAIT_NONE and k > 0:
                        need.append((3 * c + p, k))
                self.need.append(need)
                if isinstance(cmd, C.SemWait):
                    self.sem[j] = (cmd.sem, cmd.count)
                self.gq.append(q)
                self.by_queue[q].append(j)


def replay_cores(cmds: list[C.Command], t: Target) -> list[tuple[int, int]]:
    """(start, end) cycle of every command of a multi-core program (END: its core's last end).

    Raises:
        ValueError: the waits deadlock (a compiler bug; the executor reports it for a file).
    """
    pl = _Plan(cmds, t)
    n, nq = len(cmds), len(pl.by_queue)
    start, end = [0.0] * n, [0.0] * n
    head, done = [0] * nq, [0] * nq
    run: list[list | None] = [None] * nq   # [j, setup end, transfer cycles left]
    sig_end: dict[int, list[float]] = {}
    now, left = 0.0, sum(len(q) for q in pl.by_queue)
    while left:
        _start_ready(pl, cmds, t, now, head, done, run, start, end, sig_end)
        left = sum(len(q) - h for q, h in zip(pl.by_queue, head)) + sum(
            r is not None for r in run)
        if not left:
            break
        rate = _rates(pl, run, now)
        nxt = min([r[1] if now < r[1] - _EPS else now + r[2] / rate[pl.core[r[0]]]
                   for r in run if r is not None]
                  + [_next_release(pl, t, head, now, sig_end)])
        if nxt == math.inf:
            raise ValueError("multi-core replay: the waits deadlock")
        _advance(pl, cmds, run, now, nxt, rate, end, done, sig_end)
        now = nxt
    for c, (a, b) in enumerate(pl.ranges):   # END: its core's last end
        last = max((end[j] for j in range(a, b - 1)), default=0.0)
        start[b - 1] = end[b - 1] = last
    return [(math.ceil(s - _EPS), math.ceil(e - _EPS)) for s, e in zip(start, end)]


def _rates(pl: _Plan, run, now: float) -> list[float]:
    """Per core, the share of the DRAM rate its transfers get at ``now``: half while another
    core has a transfer in flight, else all."""
    busy = [False] * len(pl.ranges)
    for r in run:
        if r is not None and now >= r[1] - _EPS and r[2] > _EPS:
            busy[pl.core[r[0]]] = True
    return [0.5 if any(busy[:c] + busy[c + 1:]) else 1.0 for c in range(len(busy))]


def _advance(pl: _Plan, cmds, run, now: float, nxt: float, rate, end, done, sig_end) -> None:
    """Move every running command from ``now`` to ``nxt``; finish those done by then."""
    for q, r in enumerate(run):
        if r is None:
            continue
        if now >= r[1] - _EPS:
            r[2] -= (nxt - now) * rate[pl.core[r[0]]]
        if nxt >= r[1] - _EPS and r[2] <= _EPS:
            end[r[0]] = nxt
            done[q] += 1
            run[q] = None
            if isinstance(cmds[r[0]], C.SemSignal):
                sig_end.setdefault(cmds[r[0]].sem, []).append(nxt)


def _ready(pl: _Plan, t: Target, j: int, now: float, done, sig_end) -> bool:
    if any(done[q] < k for q, k in pl.need[j]):
        return False
    sem = pl.sem.get(j)
    if sem is None:
        return True
    ends = sig_end.get(sem[0], [])
    return len(ends) >= sem[1] and now >= ends[sem[1] - 1] + t.sem_latency_cycles - _EPS


def _start_ready(pl, cmds, t, now, head, done, run, start, end, sig_end) -> float:
    """Start every queue head that may start at ``now``; zero-cycle commands finish at once."""
    moved = True
    while moved:
        moved = False
        for q, lst in enumerate(pl.by_queue):
            if run[q] is not None or head[q] >= len(lst):
                continue
            j = lst[head[q]]
            if not _ready(pl, t, j, now, done, sig_end):
                continue
            head[q] += 1
            start[j] = now
            moved = True
            if pl.fixed[j] == 0 and pl.xfer[j] == 0:
                end[j] = now
                done[q] += 1
                if isinstance(cmds[j], C.SemSignal):
                    sig_end.setdefault(cmds[j].sem, []).append(now)
            else:
                run[q] = [j, now + pl.fixed[j], float(pl.xfer[j])]
    return now


def _next_release(pl: _Plan, t: Target, head, now: float, sig_end) -> float:
    """The earliest future time a SEM_WAIT at a queue head is released by latency alone."""
    best = math.inf
    for q, lst in enumerate(pl.by_queue):
        if head[q] < len(lst):
            sem = pl.sem.get(lst[head[q]])
            if sem is not None:
                ends = sig_end.get(sem[0], [])
                if len(ends) >= sem[1]:
                    at = ends[sem[1] - 1] + t.sem_latency_cycles
                    if at > now + _EPS:
                        best = min(best, at)
    return best


def compute_floor_cycles(graph, layers, t: Target) -> int:
    """A lower bound (cycles) on the compute commands of one image, however the ops are tiled
    or split between cores: per plain conv (one group, off the depthwise datapath) the
    cycle model's per-pixel cost with all its output channels in one block, ``oh * ow *
    min(kh * kw * ceil(cin / array_in), kh * ceil(kw * cin / array_in) if image mode may
    apply) * ceil(o / array_out)`` (:func:`~tcc_compiler.schedule.cost.conv_pixel_cycles`: a
    tile of ``oc`` channels pays ``ceil(oc / array_out)``, and ceilings of parts sum to at
    least the ceiling of the whole; int16 only slows it down); per other conv/FC its MACs at
    its unit's peak (:func:`~tcc_compiler.schedule.cost.compute_cycles`); per add, table or
    element-wise op its output elements over ``vector_lanes``; pools, resizes and copies
    count nothing. Never below the roofline's compute term, which it tightens for convs that
    leave MAC-array lanes idle (16 output channels of 64).

    Args:
        graph: the quantized graph the program ``layers`` (LayerInfo) were lowered from.
    """
    return math.floor(sum(layer_floor_cycles(graph, layers, t, pools=False, setup=False)))


def layer_floor_cycles(graph, layers, t: Target, pools: bool = True,
                       setup: bool = True) -> list[float]:
    """Per layer of ``layers`` (LayerInfo, execution order), a lower bound on the cycles of
    its compute commands on one core: the terms of :func:`compute_floor_cycles`; with
    ``pools`` also a max/average pool's or global average pool's window work, ``out_h * out_w
    * c * kh * kw / vector_lanes`` (the POOL_TILE cost summed over any tiling; a global pool's
    window is its whole input); with ``setup`` one ``compute_setup_cycles`` for every layer
    that has any of these terms (it runs at least one compute command). 0 for a layer the
    graph does not name or that runs no compute (copies, nearest resizes, shuffles)."""
    nodes = {n.name: n for n in graph.nodes}
    ai = t.array_in_channels
    out: list[float] = []
    for li in layers:
        n = nodes.get(li.name)
        f = None
        if n is None:
            pass
        elif n.op is Op.CONV and not li.depthwise and conv_geom(n, t).group == 1:
            g = conv_geom(n, t)
            pix = conv_pixel_cycles(g.kh, g.kw, g.o, g.cin_g, 1, False, t)
            if t.image_mode and g.kw * g.cin_g <= ai:
                pix = min(pix, conv_pixel_cycles(g.kh, g.kw, g.o, g.cin_g, 1, True, t))
            f = g.oh * g.ow * pix
        elif n.op in (Op.CONV, Op.FC):
            f = compute_cycles(li.macs, li.macs if li.depthwise else 0, t)
        elif n.op in (Op.ADD, Op.LUT, Op.MUL, Op.SUB):
            f = math.prod(n.output.shape) / t.vector_lanes
        elif pools and n.op is Op.GAP:
            f = math.prod(n.inputs[0].shape) / t.vector_lanes
        elif pools and n.op in (Op.MAXPOOL, Op.AVGPOOL):
            f = math.prod(n.output.shape) * math.prod(n.attrs.kernel) / t.vector_lanes
        out.append(0.0 if f is None else f + (t.compute_setup_cycles if setup else 0))
    return out


#: Images sharing one weight read that :func:`two_core_bounds` also bounds (the stream
#: candidates' largest batch per core, schedule/corestream.py TAIL_BATCHES and BATCHES).
BOUND_BATCH = 4


def two_core_bounds(compute_cycles: int, load_bytes: int, store_bytes: int, t: Target,
                    weight_bytes: int = 0, batch: int = BOUND_BATCH) -> dict:
    """Lower bounds (cycles) of a network on two cores under this module's DRAM model.

    Derivation (specs/target.md "Two cores", "Bound"): a transfer of core ``c`` runs at the
    full rate only while the other core has none in flight, else at half; so the LOAD queues
    of both cores together move at most ``bw`` bytes per cycle (one core alone: ``bw``; both
    loading: ``bw / 2`` each), and likewise the STORE queues, while loads and stores overlap.
    A DMA_LOAD_Z's transfer takes at least its stored bytes at ``bw``. The compute commands
    of both cores do at least ``compute_cycles`` between them. Hence one image takes at
    least ``max(compute / 2, load_bytes / bw, store_bytes / bw)`` with ``load_bytes`` =
    stored weights + input and ``store_bytes`` = the outputs (activations kept on chip move
    nothing, so this holds for every schedule). A stream whose weight loads serve ``b``
    images needs per image at least ``max(compute / 2, (weight_bytes / b + input) / bw,
    outputs / bw)``.

    Args:
        compute_cycles: compute cycles every schedule of one image needs: the roofline's
            (:func:`~tcc_compiler.schedule.report.roofline`) or :func:`compute_floor_cycles`.
        load_bytes, store_bytes: minimal bytes loaded (stored weights and parameters + the
            input) and stored (the outputs) per image.
        weight_bytes: the stored weights and parameters among ``load_bytes``.
        batch: images per weight read of the batched stream bound.

    Returns:
        ``{"latency_cycles", "stream_cycles_per_image", "batched_stream_cycles_per_image",
        "batch", "bound_by"}``: the one-image latency bound (also the bound of a stream that
        reads the weights once per image), the stream bound with ``batch`` images per weight
        read, and which term limits the latency bound ("compute", "DRAM loads", "DRAM
        stores").
    """
    bw = t.dram_bytes_per_cycle
    terms = {"compute": compute_cycles / 2, "DRAM loads": load_bytes / bw,
             "DRAM stores": store_bytes / bw}
    lat = max(terms.values())
    shared = max(terms["compute"], (load_bytes - weight_bytes + weight_bytes / batch) / bw,
                 terms["DRAM stores"])
    return {"latency_cycles": math.ceil(lat), "stream_cycles_per_image": math.ceil(lat),
            "batched_stream_cycles_per_image": math.ceil(shared), "batch": batch,
            "bound_by": max(terms, key=terms.get)}


def stalls(cmds: list[C.Command], times: list[tuple[int, int]]
           ) -> list[tuple[int, Queue | None]]:
    """(stall cycles, queue waited for) of every command of a multi-core program under
    ``times`` (:func:`replay_cores`): the cycles between its queue becoming free and its
    start, charged to the queue whose wait finished last (a SEM_WAIT's: STORE, where the
    other core's SEM_SIGNAL runs)."""
    out: list[tuple[int, Queue | None]] = []
    for a, b in core_ranges(cmds):
        ends: dict[Queue, list[int]] = {q: [] for q in _QUEUES}
        for j in range(a, b):
            cmd, (s, e) = cmds[j], times[j]
            if cmd.queue is Queue.CONTROL:
                out.append((0, None))
                continue
            free = ends[cmd.queue][-1] if ends[cmd.queue] else 0
            on, ready = None, free
            for q, n in zip(_QUEUES, cmd.waits):
                k = len(ends[q]) - n
                if n != WAIT_NONE and k > 0 and ends[q][k - 1] > ready:
                    on, ready = q, ends[q][k - 1]
            if isinstance(cmd, C.SemWait) and s > ready:
                on = Queue.STORE
            out.append((max(0, s - free), on if s > free else None))
            ends[cmd.queue].append(e)
    return out
