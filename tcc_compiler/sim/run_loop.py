"""The executor's general run loop (:class:`RunLoop`, a part of
:class:`~tcc_compiler.sim.executor.Executor`): fresh memories and registers, every command in
stream order, each core's stream interleaved (several cores) or in a random legal order,
optional hazard tracking (:class:`~tcc_compiler.sim.hazards.ShadowMemory`), the provenance of
the SRAM bytes each command writes (:mod:`tcc_compiler.sim.provenance`), and a handler's
numpy failure turned into an :class:`~tcc_compiler.errors.ExecutionError` naming the command.
A repeat in-order run of one core is handed to :mod:`tcc_compiler.sim.repeat_runs` instead.
"""

from __future__ import annotations

import logging

from tcc_compiler.errors import ExecutionError, first_line
from tcc_compiler.isa import spec
from tcc_compiler.isa.commands import Command, End, Registers, Space
from tcc_compiler.sim.blas import blas_threads
from tcc_compiler.sim.exec_stats import ExecStats
from tcc_compiler.sim.hazards import HazardError, Ordering, ShadowMemory
from tcc_compiler.sim.memory import Memory
from tcc_compiler.sim.provenance import Provenance, sram_write_hull, weight_source

log = logging.getLogger("tcc_compiler.sim.executor")

#: Largest DRAM region (ACT, OUTPUT; bytes) a run takes over from the run before, refilled
#: (:meth:`RunLoop._fresh_dram`): a larger one is mapped anew, so a header claiming a huge
#: region never has all its pages written by a refill.
REUSE_DRAM_MAX = 1 << 20


class RunLoop:
    """The general run loop of the executor (module docstring); the executor's state is set
    up by :class:`~tcc_compiler.sim.executor.Executor`'s constructor."""

    def _run_locked(self, input_bytes: bytes, schedule: str, seed: int,
                    check: bool) -> tuple[bytes, ExecStats]:
        """:meth:`run_with_stats` after its argument checks, under :attr:`_lock`."""
        c = self.cmd
        self._fresh_srams(c.cores)
        self._regs_of = [Registers() for _ in range(c.cores)]
        self._provs = [Provenance() for _ in range(c.cores)]
        self._sram, self._regs, self._prov = self._srams[0], self._regs_of[0], self._provs[0]
        self._dram = {
            spec.Region.WEIGHTS: self._weights_mem,
            spec.Region.ACT: self._fresh_dram("ACT", c.act_arena_bytes),
            spec.Region.INPUT: Memory("INPUT", bytearray(input_bytes), True),
            spec.Region.OUTPUT: self._fresh_dram("OUTPUT", c.output_bytes),
        }
        stats = ExecStats()
        cmds = c.commands
        order: range | list[int] = range(len(cmds))
        shadow = None
        multi = c.cores > 1
        if multi:   # each core's stream in order, switching core at an unreleased SEM_WAIT
            order = self._ordering().base_order
        if schedule == "random" or check:
            ordering = self._ordering()
            if schedule == "random":
                order = ordering.random_order(seed)
            shadow = ShadowMemory(ordering, self._sizes())
        names, steps = self._names, self._steps
        track = self._ops.start(schedule, self._track)
        self._skips_for_run(shadow is not None or multi)
        replay = self._replay_for_run()
        if replay is not None:
            return self._run_replay(replay)
        with blas_threads(self.blas_threads):
            for pos, i in enumerate(order):
                cmd = cmds[i]
                if multi:
                    self._enter(i)
                stats.commands[names[i]] += 1
                if shadow is not None:
                    shadow.record(i, cmd, self._accesses(i, cmd))
                handler = steps[i]
                if handler is not None:
                    try:
                        self._dispatch(handler, i, cmd, stats)
                    except HazardError:
                        raise
                    except ExecutionError:
                        if shadow is not None:  # garbage read through a race: name the race
                            self._raise_later_hazard(shadow, cmds, list(order)[pos + 1:])
                        raise
                    track(i, cmd)
                elif isinstance(cmd, End):
                    if not multi:
                        break
                else:
                    self._regs.update(cmd)
        self._after_run(stats)
        self.stats = stats
        log.debug("executed %d commands: %s", len(c.commands), dict(stats.commands))
        return bytes(self._dram[spec.Region.OUTPUT].buf), stats

    def _raise_later_hazard(self, shadow: ShadowMemory, cmds, rest: list[int]) -> None:
        """Record the accesses of the commands ``rest`` (not executed) after a command failed
        on the bytes it read; raise the first :class:`HazardError` found, as a racing write
        (not yet run in this order) explains garbage a command read. Returns when none is
        found (the caller re-raises the original error)."""
        for j in rest:
            cmd = cmds[j]
            if self.cmd.cores > 1:
                self._enter(j)
            try:
                if self._handlers.get(type(cmd)) is None:
                    if isinstance(cmd, End):
                        if self.cmd.cores > 1:
                            continue
                        return
                    self._regs.update(cmd)
                shadow.record(j, cmd, self._accesses(j, cmd))
            except HazardError:
                raise
            except ExecutionError:
                return

    def _ordering(self) -> Ordering:
        """The stream's happens-before relation (computed once, reused across runs); the
        cores' SRAMs are tracked as consecutive parts of one SRAM space.

        Raises:
            ExecutionError: the cores' semaphore waits deadlock."""
        if self._order_cache is None:
            ranges = self.cmd.core_ranges() if self.cmd.cores > 1 else None
            self._order_cache = Ordering(list(self.cmd.commands), ranges)
            self._order_cache.set_sram(self.target.sram_capacity_bytes)
        return self._order_cache

    def _enter(self, i: int) -> None:
        """Make command ``i``'s core current: its SRAM and its layer registers."""
        core = int(self._ordering().core_of[i])
        self._sram, self._regs = self._srams[core], self._regs_of[core]
        self._prov = self._provs[core]

    def _track(self, i: int, cmd: Command) -> None:
        """After command ``i`` ran: forget the weight sources of the SRAM bytes it wrote, and
        record its own when it is a weight load (sim/provenance.py). Its write hull is a
        function of the command and the layer registers, which the in-order COMPUTE queue
        fixes: computed once per command index."""
        info = self._writes.get(i)
        if info is None:
            try:
                hull = sram_write_hull(cmd.accesses(self._regs))
            except ExecutionError as exc:
                raise self._err(i, cmd, str(exc)) from None
            info = self._writes[i] = (hull, weight_source(cmd) if hull else None)
        hull, source = info
        if hull is not None:
            if source is None:
                self._prov.written(*hull)
            else:
                self._prov.loaded(*hull, source)

    def _fresh_dram(self, name: str, size: int) -> Memory:
        """A DRAM region of ``size`` bytes filled with ``fill``: the previous run's memory of
        that name refilled when it is at most :data:`REUSE_DRAM_MAX` bytes (the run's result
        is a copy of its bytes, nothing keeps a view of it), else a new one (zero-filled: an
        anonymous mmap, whose pages cost RAM only once written).

        Why: a new mmap costs a page fault per page the run writes, about 3 us each on this
        machine (a 4 KiB output region: 13 us for the map, the fault and the unmap, of
        EfficientNet-Lite0's ~6 ms an image); refilling a small region is a memset."""
        kept = self._kept_dram.get(name)
        if kept is not None and kept.size == size:
            kept.arr[:] = self.fill
            return kept
        m = Memory.filled(name, size, self.fill)
        if size <= REUSE_DRAM_MAX:
            self._kept_dram[name] = m
        return m

    def _fresh_srams(self, cores: int) -> None:
        """Every core's SRAM filled with ``fill``: the previous run's SRAM objects refilled
        (the conv plans' views stay valid), else new ones."""
        if len(self._srams) == cores:
            for m in self._srams:
                m.arr[:] = self.fill
        else:
            self._srams = [Memory.filled("SRAM", self.target.sram_capacity_bytes, self.fill)
                           for _ in range(cores)]

    def _sizes(self) -> dict[Space, int]:
        return {Space.SRAM: self._sram.size * len(self._srams),
                **{Space.of_region(r): m.size for r, m in self._dram.items()}}

    def _accesses(self, i: int, cmd: Command) -> list:
        try:
            return self._ordering().shift(i, cmd.accesses(self._regs))
        except ExecutionError as exc:
            raise self._err(i, cmd, str(exc)) from None

    def _dispatch(self, handler, i: int, cmd: Command, stats: ExecStats) -> None:
        """Run one handler; numpy/arithmetic failures on hostile field values (huge shapes,
        overflowing sizes) become an ExecutionError naming the command, never a traceback."""
        try:
            handler(i, cmd, stats)
        except (ValueError, IndexError, OverflowError, MemoryError, TypeError) as exc:
            raise self._err(i, cmd, f"cannot execute ({type(exc).__name__}: "
                                    f"{first_line(exc, 160)})") from None
