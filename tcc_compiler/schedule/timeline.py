"""The estimated timeline of a program: every command's start and end on its queue, the unit
that runs it, the op it belongs to, and what held it back.

Built from the cost model's replay (:func:`tcc_compiler.schedule.cost.replay`, the one cycle
model; specs/target.md "Timing model"), so its total equals report.json's
``estimated_cycles``. :mod:`tcc_compiler.emit.trace` writes it as a Chrome trace-event file;
:mod:`tcc_compiler.report.html` draws it.

A command *stalls* when it starts later than its queue became free: the cycles in between are
charged to the queue whose command it waited for (the wait that finished last). A COMPUTE
command stalled on LOAD is compute waiting for DMA -- the sign of a DRAM-bound op.
"""

from __future__ import annotations

from dataclasses import dataclass

from tcc_compiler.isa import commands as C
from tcc_compiler.isa.spec import CONV_FLAG_DEPTHWISE, Queue, WAIT_NONE
from tcc_compiler.schedule.cost import command_cycles
from tcc_compiler.schedule.program import Program
from tcc_compiler.target import Target

#: Units a command can run on, in the order the trace lists them.
UNITS = ("dma", "decompress", "mac_array", "depthwise", "vector", "config")
#: The queues a trace shows (CONTROL's END takes no time).
QUEUES = (Queue.LOAD, Queue.COMPUTE, Queue.STORE)


@dataclass(frozen=True)
class Span:
    """One command on the estimated timeline.

    Attributes:
        index: position in the command stream. name: mnemonic ("CONV_TILE").
        queue: the queue it is dispatched to. unit: which hardware unit runs it
            (:data:`UNITS`: "dma", "decompress" for DMA_LOAD_Z, "mac_array", "depthwise" for a
            CONV_TILE in depthwise mode, "vector" for POOL/ADD/LUT/EW tiles, "config" for the
            *_CFG register writes).
        start, end: cycles from the program's start (end - start = the command's cycles).
        layer: name of the IR op the command belongs to ("" for END or an unowned command).
        dram_bytes: bytes the command moves over the DRAM link (DMA commands; 0 otherwise).
        stall: cycles between its queue becoming free and its start. stalled_on: the queue
            whose command it waited for (None when ``stall`` is 0).
        core: the NPU core whose queue runs it (0 in a single-core program).
    """

    index: int
    name: str
    queue: Queue
    unit: str
    start: int
    end: int
    layer: str
    dram_bytes: int
    stall: int
    stalled_on: Queue | None
    core: int = 0


def _unit(cmd: C.Command, regs: C.Registers) -> str:
    """The unit of :data:`UNITS` that runs ``cmd`` under the layer registers ``regs``."""
    if isinstance(cmd, (C.DmaLoad, C.DmaStore)):
        return "dma"
    if isinstance(cmd, C.DmaLoadZ):
        return "decompress"
    if isinstance(cmd, C.ConvTile):
        return "depthwise" if regs.conv.flags & CONV_FLAG_DEPTHWISE else "mac_array"
    if isinstance(cmd, (C.PoolTile, C.AddTile, C.LutTile, C.EwTile)):
        return "vector"
    return "config"


def _dram_bytes(cmd: C.Command) -> int:
    """Bytes ``cmd`` moves over the DRAM link (compressed bytes for DMA_LOAD_Z)."""
    if isinstance(cmd, (C.DmaLoad, C.DmaStore)):
        return cmd.total_bytes
    if isinstance(cmd, C.DmaLoadZ):
        return cmd.src_bytes
    return 0


def command_layers(program: Program) -> list[str]:
    """Name of the op owning each command of ``program`` ("" when no op lists it): an op's
    commands are its ``cmds`` when cascaded, else its ``[first_cmd, end_cmd)`` range."""
    owner = [""] * len(program.commands)
    for li in program.layers:
        for i in (li.cmds if li.cmds is not None else range(li.first_cmd, li.end_cmd)):
            if 0 <= i < len(owner) and not owner[i]:
                owner[i] = li.name
    return owner


def timeline(program: Program, t: Target) -> list[Span]:
    """Replay ``program`` on the cycle model of ``t`` and return one :class:`Span` per command
    (END included, zero length), in stream order.

    Same rule as :func:`~tcc_compiler.schedule.cost.replay`: a command on queue q starts when
    the previous command of q has ended and, for each queue p with wait n < 7, when all but
    the last n commands dispatched to p before it have ended. A multi-core program is replayed
    by :func:`~tcc_compiler.schedule.coretime.replay_cores` (shared bandwidth, semaphores);
    its ENDs are placed at the program's end.
    """
    if getattr(program, "cores", 1) > 1:
        return _timeline_cores(program, t)
    ends: dict[Queue, list[int]] = {q: [] for q in QUEUES}
    regs = C.Registers()
    owner = command_layers(program)
    spans: list[Span] = []
    for i, cmd in enumerate(program.commands):
        if cmd.queue is Queue.CONTROL:
            t_end = max((e[-1] for e in ends.values() if e), default=0)
            spans.append(Span(i, cmd.SPEC.name, cmd.queue, "config", t_end, t_end, owner[i],
                              0, 0, None))
            continue
        free = ends[cmd.queue][-1] if ends[cmd.queue] else 0
        start, stalled_on = free, None
        for q, n in zip(QUEUES, cmd.waits):
            if n == WAIT_NONE or len(ends[q]) - n <= 0:
                continue
            ready = ends[q][len(ends[q]) - n - 1]  # queues end in order
            if ready > start:
                start, stalled_on = ready, q
        unit = _unit(cmd, regs)
        cyc = command_cycles(cmd, regs, t)
        regs.update(cmd)
        ends[cmd.queue].append(start + cyc)
        spans.append(Span(i, cmd.SPEC.name, cmd.queue, unit, start, start + cyc, owner[i],
                          _dram_bytes(cmd), start - free, stalled_on))
    return spans


def _timeline_cores(program: Program, t: Target) -> list[Span]:
    """:func:`timeline` of a multi-core program."""
    from tcc_compiler.schedule.coretime import core_ranges, replay_cores, stalls

    times = replay_cores(program.commands, t)
    total = max((e for _, e in times), default=0)
    st = stalls(program.commands, times)
    owner = command_layers(program)
    spans: list[Span] = []
    for core, (a, b) in enumerate(core_ranges(program.commands)):
        regs = C.Registers()
        for i in range(a, b):
            cmd = program.commands[i]
            s, e = times[i]
            if cmd.queue is Queue.CONTROL:
                s = e = total
            spans.append(Span(i, cmd.SPEC.name, cmd.queue, _unit(cmd, regs), s, e, owner[i],
                              _dram_bytes(cmd), st[i][0], st[i][1], core))
            regs.update(cmd)
    return spans


def per_core(spans: list[Span]) -> list[dict]:
    """Per core: busy cycles of its COMPUTE queue and their share of the program's cycles
    (its utilisation), and its DRAM bytes."""
    total = max((s.end for s in spans), default=0)
    cores: dict[int, dict] = {}
    for s in spans:
        d = cores.setdefault(s.core, {"core": s.core, "compute_busy_cycles": 0,
                                      "dram_bytes": 0})
        if s.queue is Queue.COMPUTE:
            d["compute_busy_cycles"] += s.end - s.start
        d["dram_bytes"] += s.dram_bytes
    for d in cores.values():
        d["utilisation"] = round(d["compute_busy_cycles"] / total, 4) if total else 0.0
    return [cores[k] for k in sorted(cores)]


def summary(spans: list[Span]) -> dict:
    """Where the time goes: per queue, busy cycles and stall cycles by the queue waited for;
    per op, its compute cycles and the cycles its compute commands waited for LOAD.

    Returns:
        ``{"total_cycles", "queues": {"load"|"compute"|"store": {"busy_cycles",
        "stall_cycles": {queue: cycles}}}, "units": {unit: busy cycles},
        "compute_waits_for_dma": [{"layer", "compute_cycles", "wait_load_cycles"}, ...]}``,
        the list sorted by ``wait_load_cycles``, largest first (ops with none left out).
    """
    total = max((s.end for s in spans), default=0)
    queues: dict[str, dict] = {q.name.lower(): {"busy_cycles": 0, "stall_cycles": {}}
                               for q in QUEUES}
    units: dict[str, int] = {}
    per_layer: dict[str, list[int]] = {}
    for s in spans:
        if s.queue is Queue.CONTROL:
            continue
        entry = queues[s.queue.name.lower()]
        entry["busy_cycles"] += s.end - s.start
        units[s.unit] = units.get(s.unit, 0) + s.end - s.start
        if s.stalled_on is not None:
            key = s.stalled_on.name.lower()
            entry["stall_cycles"][key] = entry["stall_cycles"].get(key, 0) + s.stall
        if s.queue is Queue.COMPUTE:
            acc = per_layer.setdefault(s.layer, [0, 0])
            acc[0] += s.end - s.start
            if s.stalled_on is Queue.LOAD:
                acc[1] += s.stall
    waits = [{"layer": k, "compute_cycles": v[0], "wait_load_cycles": v[1]}
             for k, v in per_layer.items() if v[1]]
    waits.sort(key=lambda d: (-d["wait_load_cycles"], d["layer"]))
    return {"total_cycles": total, "queues": queues, "units": units,
            "compute_waits_for_dma": waits}
