"""Concurrent-queue model of the NPU: the order the waits guarantee, legal interleavings, hazards.

specs/isa.md: three queues (LOAD, COMPUTE, STORE) run concurrently, each strictly in order (a
queue starts its next command when the previous one has finished). A command with wait field
``n < 7`` for queue ``p`` starts only when ``p`` has at most ``n`` commands outstanding among
those dispatched to ``p`` before it, i.e. when ``p``'s first ``before_p - n`` commands have
finished (``before_p`` = commands of ``p`` earlier in the stream). END waits for everything.

From this, :class:`Ordering` computes the *happens-before* relation as vector clocks: for each
command ``j`` and queue ``p``, ``clock[j][p]`` is the stream index of the latest command of
``p`` guaranteed finished before ``j`` starts (-1 if none), closed transitively over queue order
and waits. Two commands are *ordered* iff one's clock covers the other; all dependency edges go
from earlier to later stream positions, so ``a < b`` are ordered iff ``clock[b][queue(a)] >= a``
(or both sit on one queue).

:class:`ShadowMemory` is a happens-before race detector (the vector-clock idea of FastTrack,
Flanagan & Freund, PLDI 2009) on byte granularity: for every byte of SRAM and of the writable
DRAM regions it keeps, per queue, the stream index of the last command of that queue that wrote
it and of the last that read it, plus whether the byte was ever written (by the host or a
command). An access by command ``j`` is a hazard when a recorded conflicting access (a write,
or a read if ``j`` writes) on another queue is not ordered before ``j``. Keeping only the last
access per queue is enough: an earlier access of the same queue happens before the later one,
so if ``j`` is ordered after the later one it is ordered after both (transitivity). A strided
access (:class:`~tcc_compiler.isa.access.Access` with ``run > 0``) is checked and recorded on
exactly its bytes, through a numpy strided view of the per-byte arrays. Because the
check is against the happens-before relation and not against the order actually executed, a
missing wait is reported whichever legal interleaving runs, including stream order.

Everything here uses only the ISA's abstractions (``Command.queue``, ``.waits``,
``.accesses(regs)``, ``Registers.update``), never specific opcodes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import as_strided

from tcc_compiler.errors import ExecutionError
from tcc_compiler.isa import spec
from tcc_compiler.isa.commands import Access, Command, Registers, Space
from tcc_compiler.sim.cores import base_order

log = logging.getLogger(__name__)

#: Queues that run commands (END is handled by the parser, queue CONTROL).
RUN_QUEUES = tuple(spec.WAIT_QUEUES)
_NQ = len(RUN_QUEUES)


class HazardError(ExecutionError):
    """Two commands not ordered by the waits touch overlapping bytes and one writes.

    Attributes:
        hazard: the :class:`Hazard` found.
    """

    def __init__(self, hazard: "Hazard"):
        self.hazard = hazard
        super().__init__(hazard.message())


@dataclass(frozen=True)
class Hazard:
    """One unordered conflicting pair.

    Attributes:
        kind: "RAW" (``second`` reads what ``first`` writes), "WAR" (``second`` writes what
            ``first`` reads) or "WAW".
        first, second: stream indices of the two commands (``first < second``).
        first_name, second_name: their mnemonics.
        space: the memory (SRAM or a DRAM region). start, end: the conflicting byte range
            ``[start, end)`` (offsets inside ``space``; the hull of the conflicting bytes).
        field: the field of ``second`` that addresses the access (e.g. "in_sram"), or "".
        first_queue: queue name of ``first`` (the queue ``second`` must wait on).
    """

    kind: str
    first: int
    second: int
    first_name: str
    second_name: str
    space: Space
    start: int
    end: int
    field: str = ""
    first_queue: str = ""

    def message(self) -> str:
        """One line naming both commands, the region and the missing order."""
        verb = {"RAW": ("reads", "writes"), "WAR": ("writes", "reads"),
                "WAW": ("writes", "writes")}[self.kind]
        where = f" (field {self.field})" if self.field else ""
        return (f"{self.kind} hazard: command {self.second} ({self.second_name}) {verb[0]} "
                f"{self.space.value} [{self.start:#x}, {self.end:#x}){where} that command "
                f"{self.first} ({self.first_name}) {verb[1]}, and no wait orders them "
                f"(add a wait on queue {self.first_queue or '?'})")


def _queue_index(cmd: Command) -> int | None:
    """Position of the command's queue in :data:`RUN_QUEUES`, None for the parser (END)."""
    q = cmd.queue
    return RUN_QUEUES.index(q) if q in RUN_QUEUES else None


class Ordering:
    """The happens-before relation of a command stream under the wait semantics.

    Args:
        cmds: the decoded stream (END last, as the container guarantees); for a multi-core
            program the per-core streams one after the other, each ending with END.
        ranges: [start, end) of each core's stream in ``cmds`` (None: one core, the whole
            stream).

    Queues are numbered globally: core ``c``'s LOAD, COMPUTE, STORE are ``3c``, ``3c + 1``,
    ``3c + 2``. A SEM_WAIT is ordered after the ``count``-th SEM_SIGNAL on its semaphore
    (counters only grow; each semaphore has one signalling core, cmdfile.cores_problem).

    Attributes:
        cmds: the stream. queue_of: int8 [n] global queue index (-1 for END). core_of: int
            [n] core of each command.
        clock: int64 [n, 3 * cores]: ``clock[j, p]`` = index of the latest command of global
            queue ``p`` that finishes before command ``j`` starts (-1 if none).
        need: int64 [n, 3 * cores]: ``need[j, p]`` = how many commands of queue p must have
            finished before ``j`` may start (0 if none), the run-time form of the waits.
        by_queue: per global queue, the indices of its commands in order.
        base_order: a legal execution order of all commands (stream order for one core;
            with several, each core's stream in order, switching core at a SEM_WAIT not yet
            released): the executor's deterministic ``inorder`` schedule.
        sem_need: j -> (semaphore, count) of every SEM_WAIT.

    Raises:
        ExecutionError: the cores' waits deadlock (no order runs every command).
    """

    def __init__(self, cmds: list[Command], ranges: list[tuple[int, int]] | None = None):
        self.cmds = cmds
        n = len(cmds)
        self.ranges = ranges or [(0, n)]
        self.nq = _NQ * len(self.ranges)
        self.core_of = np.zeros(n, dtype=np.int64)
        for c, (a, b) in enumerate(self.ranges):
            self.core_of[a:b] = c
        self.queue_of = np.full(n, -1, dtype=np.int8)
        self.clock = np.full((n, self.nq), -1, dtype=np.int64)
        self.need = np.zeros((n, self.nq), dtype=np.int64)
        self.by_queue: list[list[int]] = [[] for _ in range(self.nq)]
        self.sem_need: dict[int, tuple[int, int]] = {}
        self._signals: dict[int, list[int]] = {}
        self._accesses: list[list[Access]] | None = None
        self.base_order = base_order(cmds, self.ranges)
        for j in self.base_order:
            self._add(j)

    def _add(self, j: int) -> None:
        """Compute command ``j``'s clock from its dependencies (all already added)."""
        cmd, base = self.cmds[j], _NQ * int(self.core_of[j])
        qi = _queue_index(cmd)
        if qi is None:   # END: waits for all queues of its core to drain
            for p in range(base, base + _NQ):
                self.need[j, p] = len(self.by_queue[p])
                self.clock[j, p] = self.by_queue[p][-1] if self.by_queue[p] else -1
            return
        qi += base
        self.queue_of[j] = qi
        deps = []
        if self.by_queue[qi]:
            deps.append(self.by_queue[qi][-1])          # in-order queue
            self.need[j, qi] = len(self.by_queue[qi])
        for p, wait in enumerate(cmd.waits, start=base):
            if wait == spec.WAIT_NONE:
                continue
            k = len(self.by_queue[p]) - wait            # first k of p must be done
            if k > 0:
                deps.append(self.by_queue[p][k - 1])
                self.need[j, p] = max(self.need[j, p], k)
        if cmd.opcode == spec.SEM_WAIT.opcode:          # after the count-th signal
            deps.append(self._signals[cmd.sem][cmd.count - 1])
            self.sem_need[j] = (cmd.sem, cmd.count)
        elif cmd.opcode == spec.SEM_SIGNAL.opcode:
            self._signals.setdefault(cmd.sem, []).append(j)
        c = self.clock[j]
        for d in deps:
            np.maximum(c, self.clock[d], out=c)
            dq = self.queue_of[d]
            c[dq] = max(c[dq], d)
        self.by_queue[qi].append(j)

    def accesses(self) -> list[list[Access]]:
        """Every command's :meth:`Command.accesses`, with the registers of stream order (the
        COMPUTE queue is in order, so these are the registers every legal run sees; each
        core's stream has its own registers). A tile command without its configuration gets
        [] here (the executor reports it when run). SRAM accesses of core ``c`` are shifted
        by ``c * sram_bytes`` once :meth:`set_sram` gave the per-core size."""
        if self._accesses is None:
            regs, out = Registers(), []
            for j, cmd in enumerate(self.cmds):
                try:
                    out.append(self.shift(j, cmd.accesses(regs)))
                except ExecutionError:
                    out.append([])
                regs.update(cmd)
                if cmd.opcode == spec.END.opcode:
                    regs = Registers()
            self._accesses = out
        return self._accesses

    sram_bytes = 0

    def set_sram(self, sram_bytes: int) -> None:
        """Per-core SRAM size: core ``c``'s SRAM is tracked as bytes ``[c * sram_bytes,
        (c + 1) * sram_bytes)`` of one SRAM space (the cores' SRAMs are distinct)."""
        self.sram_bytes = sram_bytes

    def shift(self, j: int, accs: list[Access]) -> list[Access]:
        """``accs`` of command ``j`` with SRAM addresses moved into its core's SRAM part."""
        off = int(self.core_of[j]) * self.sram_bytes
        if not off:
            return accs
        return [a._replace(start=a.start + off, end=a.end + off) if a.space is Space.SRAM
                else a for a in accs]

    def queue_label(self, j: int) -> str:
        """The queue of command ``j`` as messages name it ("LOAD"; "LOAD of core 1" when the
        program has several cores: a cross-core wait is a SEM_WAIT)."""
        name = self.cmds[j].queue.name
        return name if len(self.ranges) == 1 else f"{name} of core {int(self.core_of[j])}"

    def ordered_before(self, a: int, b: int) -> bool:
        """True if command ``a`` finishes before command ``b`` starts in every legal run."""
        same = self.core_of[a] == self.core_of[b]
        if a == b or (same and a > b):
            return False
        qa = self.queue_of[a]
        if qa < 0:
            return bool(same)
        return bool(self.clock[b, qa] >= a)

    def random_order(self, seed: int) -> list[int]:
        """A random legal execution order (command indices), the ENDs last.

        At each step one queue (of any core) whose head command may start (its waits and,
        for a SEM_WAIT, its semaphore count are met, treating commands as finishing in the
        order they run) is chosen uniformly at random.
        """
        rng = np.random.default_rng(seed)
        nq = self.nq
        done = [0] * nq
        heads = [0] * nq
        counts: dict[int, int] = {}
        order: list[int] = []
        end = [j for j, q in enumerate(self.queue_of) if q < 0]
        total = len(self.cmds) - len(end)
        while len(order) < total:
            ready = []
            for q in range(nq):
                if heads[q] < len(self.by_queue[q]):
                    j = self.by_queue[q][heads[q]]
                    sem = self.sem_need.get(j)
                    if sem is not None and counts.get(sem[0], 0) < sem[1]:
                        continue
                    if all(done[p] >= self.need[j, p] for p in range(nq)):
                        ready.append(q)
            if not ready:  # cannot happen for waits that only name earlier commands
                raise ExecutionError("schedule: no queue can proceed (wait deadlock)")
            q = ready[int(rng.integers(len(ready)))]
            j = self.by_queue[q][heads[q]]
            if self.cmds[j].opcode == spec.SEM_SIGNAL.opcode:
                counts[self.cmds[j].sem] = counts.get(self.cmds[j].sem, 0) + 1
            order.append(j)
            heads[q] += 1
            done[q] += 1
        return order + end


def access_field(cmd: Command, acc: Access) -> str:
    """The address field of ``cmd`` an access starts at (e.g. "in_sram", "dram"), or ""."""
    for name in cmd.SPEC.field_names:
        v = getattr(cmd, name)
        if acc.space is Space.SRAM and name.endswith("sram") and v == acc.start:
            return name
        if acc.space is not Space.SRAM and name == "dram":
            region, off = spec.split_dram_address(v)
            if Space.of_region(region) is acc.space:
                return name
    for name in cmd.SPEC.field_names:  # core c > 0: SRAM accesses shifted past the field
        if acc.space is Space.SRAM and name.endswith("sram"):
            return name
    return ""


def _view(hist: np.ndarray, acc: Access) -> np.ndarray:
    """The elements of 1-D per-byte array ``hist`` (one entry per byte of ``acc.space``) that
    stand for the bytes ``acc`` touches: a slice for a contiguous access, else a strided view
    [n2, n1, run] (no copy; assignments write through). ``acc`` must lie inside ``hist``
    (:meth:`ShadowMemory._in_bounds` checked its hull)."""
    if not acc.run:
        return hist[acc.start:acc.end]
    isz = hist.itemsize
    return as_strided(hist[acc.start:], shape=(acc.n2, acc.n1, acc.run),
                      strides=(acc.s2 * isz, acc.s1 * isz, isz))


def _addresses(acc: Access, idx: tuple[np.ndarray, ...]) -> np.ndarray:
    """Byte offsets in ``acc.space`` of the elements ``idx`` (``np.nonzero`` of a
    :func:`_view` of ``acc``)."""
    if not acc.run:
        return acc.start + idx[0]
    i2, i1, k = idx
    return acc.start + i2 * acc.s2 + i1 * acc.s1 + k


class ShadowMemory:
    """Per-byte access history for race and uninitialised-read detection.

    Args:
        ordering: the stream's happens-before relation.
        sizes: bytes of each space (SRAM and every DRAM region).
        initialized: spaces whose bytes count as written at start (WEIGHTS, INPUT: the host
            fills them).

    Memory: for each tracked space, 6 int32 arrays (last writer / last reader per queue) and
    one bool array, i.e. 25 bytes per byte of SRAM + ACT + INPUT + OUTPUT. WEIGHTS is read-only
    and always initialised, so it is not tracked.
    """

    def __init__(self, ordering: Ordering, sizes: dict[Space, int],
                 initialized: tuple[Space, ...] = (Space.WEIGHTS, Space.INPUT)):
        self.ordering = ordering
        self.sizes = dict(sizes)
        self.initialized = set(initialized)
        self._w: dict[Space, np.ndarray] = {}
        self._r: dict[Space, np.ndarray] = {}
        self._init: dict[Space, np.ndarray] = {}
        for sp, size in sizes.items():
            if sp is Space.WEIGHTS:
                continue
            self._w[sp] = np.full((ordering.nq, size), -1, dtype=np.int32)
            self._r[sp] = np.full((ordering.nq, size), -1, dtype=np.int32)
            self._init[sp] = np.full(size, sp in self.initialized, dtype=bool)

    def _hazard(self, kind, other, j, cmd, acc, hist_row, fld) -> HazardError:
        """The hazard between command ``j`` (access ``acc``) and recorded command ``other``.

        A random interleaving can run a later command first; the pair is then reported in
        stream order (the later command is the one that lacks the wait; the kind is mirrored
        and the field, which belongs to ``j``, is left out).
        """
        cmds = self.ordering.cmds
        other = int(other)
        addr = _addresses(acc, np.nonzero(hist_row == other))
        lo, hi = int(addr.min()), int(addr.max()) + 1
        first, second = other, j
        if other > j:
            first, second, fld = j, other, ""
            kind = {"RAW": "WAR", "WAR": "RAW"}.get(kind, kind)
        return HazardError(Hazard(kind, first, second, cmds[first].name, cmds[second].name,
                                  acc.space, lo, hi, fld, self.ordering.queue_label(first)))

    def record(self, j: int, cmd: Command, accesses: list[Access]) -> None:
        """Check command ``j``'s accesses against the history, then record them.

        Raises:
            ExecutionError: an access outside its space, or a read of bytes never written
                (message names the command index and field).
            HazardError: a conflicting access by a command not ordered with ``j``.
        """
        clock = self.ordering.clock[j]
        qj = self.ordering.queue_of[j]
        for acc in accesses:
            fld = access_field(cmd, acc)
            if not self._in_bounds(j, cmd, acc, fld):
                continue   # a read of WEIGHTS: read-only, never written, never a hazard
            for p in range(self.ordering.nq):
                if p != qj:
                    self._check_queue(p, clock[p], j, cmd, acc, fld)
            if not acc.is_write:
                self._check_initialised(j, cmd, acc, fld)
        for acc in accesses:
            if acc.space is Space.WEIGHTS:
                continue
            if acc.is_write:
                _view(self._w[acc.space][qj], acc)[...] = j
                _view(self._init[acc.space], acc)[...] = True
            else:
                _view(self._r[acc.space][qj], acc)[...] = j

    def _in_bounds(self, j: int, cmd: Command, acc: Access, fld: str | None) -> bool:
        """False for a WEIGHTS read (nothing to track); raises on an access outside its space
        or a write to WEIGHTS."""
        size = self.sizes.get(acc.space)
        if size is None or acc.start < 0 or acc.end > size:
            raise ExecutionError(
                f"command {j} ({cmd.name}): field {fld or '?'}: {acc.space.value} range "
                f"[{acc.start:#x}, {acc.end:#x}) outside the space (size {size})")
        if acc.space is Space.WEIGHTS:
            if acc.is_write:
                raise ExecutionError(f"command {j} ({cmd.name}): field {fld or '?'}: "
                                     "write to read-only region WEIGHTS")
            return False
        return True

    def _check_queue(self, p: int, seen: int, j: int, cmd: Command, acc: Access,
                     fld: str | None) -> None:
        """RAW/WAW against queue ``p``'s writers and WAR against its readers that command
        ``j`` is not ordered after (``seen``: the last command of ``p`` ordered before ``j``)."""
        w = _view(self._w[acc.space][p], acc)
        if int(w.max(initial=-1)) > seen:
            kind = "WAW" if acc.is_write else "RAW"
            raise self._hazard(kind, self._first_unordered(w, seen), j, cmd, acc, w, fld)
        if acc.is_write:
            r = _view(self._r[acc.space][p], acc)
            if int(r.max(initial=-1)) > seen:
                raise self._hazard("WAR", self._first_unordered(r, seen), j, cmd, acc, r, fld)

    def _check_initialised(self, j: int, cmd: Command, acc: Access, fld: str | None) -> None:
        """A read of bytes nothing wrote: a hazard if an unordered writer exists (a random
        interleaving overtook it), else a program bug."""
        a, b = acc.start, acc.end
        init = _view(self._init[acc.space], acc)
        if init.all():
            return
        bad = int(_addresses(acc, np.nonzero(~init)).min())
        writer = self._pending_writer(j, acc.space, bad)
        if writer is not None:   # an out-of-order run overtook its producer
            h = Hazard("RAW", writer, j, self.ordering.cmds[writer].name,
                       cmd.name, acc.space, bad, bad + 1, fld,
                       self.ordering.queue_label(writer))
            raise HazardError(h)
        raise ExecutionError(
            f"command {j} ({cmd.name}): field {fld or '?'}: reads {acc.space.value}"
            f" byte {bad:#x} that nothing wrote before (range [{a:#x}, {b:#x}))")

    def _pending_writer(self, j: int, space: Space, byte: int) -> int | None:
        """An earlier command, not ordered before ``j``, that writes ``byte`` of ``space``.

        Only reachable when a random interleaving ran ``j`` before that writer (in stream order
        every earlier writer has run, so the byte would be initialised).
        """
        accs = self.ordering.accesses()
        cands = range(j - 1, -1, -1) if len(self.ordering.ranges) == 1 else \
            range(len(accs) - 1, -1, -1)   # several cores: a later command may run first
        for i in cands:
            if i == j or self.ordering.ordered_before(i, j) \
                    or self.ordering.ordered_before(j, i):
                continue
            if any(a.is_write and a.space is space and a.covers(byte) for a in accs[i]):
                return i
        return None

    @staticmethod
    def _first_unordered(hist: np.ndarray, bound: int) -> int:
        """Smallest recorded stream index above ``bound`` (the oldest unordered access)."""
        v = hist[hist > bound]
        return int(v.min())


def check_stream(cmds: list[Command], sizes: dict[Space, int],
                 ranges: list[tuple[int, int]] | None = None) -> list[Hazard]:
    """Statically check a stream for hazards and bad accesses, without computing any data.

    Replays every command's :meth:`Command.accesses` in the deterministic order
    (:attr:`Ordering.base_order`: stream order for one core) through a :class:`ShadowMemory`.
    Whatever legal interleaving runs, a pair of unordered conflicting commands exists iff this
    finds one (see the module docstring), so an empty result means every legal execution
    computes the same bytes as that order.

    Args:
        cmds: decoded stream. sizes: bytes of SRAM (of one core) and each DRAM region.
        ranges: [start, end) of each core's stream (None: one core).

    Returns:
        [] if the stream is hazard-free, else the first hazard found (a one-element list).

    Raises:
        ExecutionError: out-of-bounds access, read of never-written memory, a tile command
            without its configuration (message names the command index), or a deadlock.
    """
    ordering = Ordering(cmds, ranges)
    ordering.set_sram(sizes[Space.SRAM])
    sizes = dict(sizes)
    sizes[Space.SRAM] *= len(ordering.ranges)
    shadow = ShadowMemory(ordering, sizes)
    regs = [Registers() for _ in ordering.ranges]
    for j in ordering.base_order:
        cmd, r = cmds[j], regs[int(ordering.core_of[j])]
        try:
            accs = ordering.shift(j, cmd.accesses(r))
        except ExecutionError as exc:
            raise ExecutionError(f"command {j} ({cmd.name}): {exc}") from None
        try:
            shadow.record(j, cmd, accs)
        except HazardError as exc:
            return [exc.hazard]
        r.update(cmd)
    return []
