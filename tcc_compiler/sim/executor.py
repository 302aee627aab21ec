"""Reference executor: runs ``npu_cmd.bin`` + ``quantized_network.bin`` bit-exactly.

The machine (specs/isa.md) is the program's :class:`~tcc_compiler.target.Target` (the one in its
``manifest.json``): an SRAM of ``target.sram_capacity_bytes`` bytes and four DRAM regions
(WEIGHTS = the weight file's data section, read-only; ACT = activation arena; INPUT; OUTPUT).
Before anything runs, :func:`tcc_compiler.sim.limits.check_program` checks every command against
that target (SRAM extents, image mode and its lanes) and refuses a program that exceeds it.
A multi-core program (``npu_cmd.bin`` header ``cores`` > 1) has one SRAM and one set of layer
registers per core and shares the DRAM regions; its cores' streams run interleaved in the
deterministic order of :attr:`~tcc_compiler.sim.hazards.Ordering.base_order` (each core in
order, switching at a SEM_WAIT not yet released), or in a random legal interleaving of all
cores' queues. Commands run in stream order (always a legal execution of the three concurrent
queues) or, with
``schedule="random"``, in a random legal interleaving of the queues
(:mod:`tcc_compiler.sim.hazards`); ``check=True`` (implied by the random schedule) adds the
hazard and never-written-read checks of :class:`~tcc_compiler.sim.hazards.ShadowMemory`.
Arithmetic is delegated to :mod:`tcc_compiler.numerics`, never re-done here. Every memory access
is bounds-checked; an illegal command raises :class:`ExecutionError`
naming the command index and mnemonic.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from tcc_compiler.binfmt.cmdfile import CmdFile, cores_problem
from tcc_compiler.binfmt.weightfile import WeightFile
from tcc_compiler.errors import ExecutionError, InputError, first_line
from tcc_compiler.isa import spec
from tcc_compiler.isa.commands import (
    AddTile,
    Command,
    ConvTile,
    DmaLoad,
    DmaLoadZ,
    DmaStore,
    End,
    EwTile,
    LutTile,
    PoolTile,
    Registers,
    ResizeTile,
    Space,
    box_strides,
)
from tcc_compiler.sim.blas import blas_threads
from tcc_compiler.sim.conv_exec import conv_result
from tcc_compiler.sim.conv_operands import REUSE, ConvOperands
from tcc_compiler.sim.conv_tile import ConvPlan, conv_setup_problem, make_plan
from tcc_compiler.sim.dma import run_dma, run_dma_z
from tcc_compiler.sim.vector_ops import (run_add_tile, run_ew_tile, run_lut_tile, run_pool_tile,
                                        run_resize_tile)
from tcc_compiler.sim.hazards import HazardError, Ordering, ShadowMemory
from tcc_compiler.sim.limits import check_program
from tcc_compiler.sim.provenance import Provenance, sram_write_hull, weight_source
from tcc_compiler.sim.replay import Replay, make_replay
from tcc_compiler.sim.memory import INT_DTYPES, ByteBox, Memory
from tcc_compiler.sim.zskip import unread_weight_loads
from tcc_compiler.target import Target

log = logging.getLogger(__name__)

#: Operand dtype -> its little-endian form (multi-byte elements are little-endian).
_LE = {t: np.dtype(t).newbyteorder("<") for t in (np.int8, np.int16, np.int32, np.uint8,
                                                  np.uint16)}

#: Execution orders :meth:`Executor.run_with_stats` offers.
SCHEDULES = ("inorder", "random")

@dataclass
class ExecStats:
    """Counters of one run.

    Attributes:
        commands: mnemonic -> number of commands executed.
        bytes_per_queue: queue name -> bytes moved: LOAD/STORE = bytes transferred by DMA,
            COMPUTE = SRAM bytes read + written by tile commands.
        macs: multiply-accumulates done by CONV_TILE commands (padding taps included).
    """

    commands: Counter = field(default_factory=Counter)
    bytes_per_queue: Counter = field(default_factory=Counter)
    macs: int = 0


class Executor:
    """Runs one program on the modelled NPU.

    Args:
        cmd: decoded ``npu_cmd.bin``.
        weights: decoded ``quantized_network.bin`` (its data section is the WEIGHTS region), or
            None for a program that loads no weights.
        target: the machine to run on (a compiled folder's is its manifest's ``target``): its
            SRAM capacity sizes the SRAM, and every command is checked against its limits
            (:func:`tcc_compiler.sim.limits.check_program`) before the first run.
        fill: initial byte value of SRAM, ACT and OUTPUT (0; set e.g. 0xA5 in tests to make reads
            of never-written memory visible).
        blas_threads: OpenBLAS threads while running (default 1, see :mod:`tcc_compiler.sim.blas`
            for the measurement behind it; None leaves numpy's setting alone).

    Attributes:
        target: the target the program runs on.
        stats: :class:`ExecStats` of the last run (None before the first).

    Threads: one executor may be run from several threads (a ``tc.load`` model shared by a
    server's threads); its runs take turns (a lock around the command loop), each giving the
    bytes it gives alone. Executors of different folders run side by side.

    Raises:
        ExecutionError: the program exceeds ``target`` (its SRAM peak, an operand outside the
            SRAM, image mode the target lacks or wider than its array): one line naming
            ``cmd.path`` and the header field or the command index and mnemonic.
    """

    def __init__(self, cmd: CmdFile, weights: WeightFile | None, target: Target,
                 fill: int = 0, blas_threads: int | None = 1):
        check_program(cmd, target)
        self.cmd = cmd
        self.weights_data = weights.data if weights is not None else b""
        self._weight_file = weights   # named in messages about its bytes
        # WEIGHTS is read-only (no command writes it): one read-only view of the file's bytes
        # serves every run, instead of a copy of the whole data section per run
        self._weights_mem = Memory("WEIGHTS", bytes(self.weights_data), False)
        self.target = target
        self.fill = fill
        self.blas_threads = blas_threads
        self.stats: ExecStats | None = None
        self._order_cache: Ordering | None = None
        self._handlers = {DmaLoad: self._dma, DmaStore: self._dma, ConvTile: self._conv_tile,
                          PoolTile: self._pool_tile, AddTile: self._add_tile,
                          DmaLoadZ: self._dma_z, LutTile: self._lut_tile,
                          EwTile: self._ew_tile, ResizeTile: self._resize_tile}
        # per command index: its mnemonic and handler (None: a register or sync command)
        self._names = [c.name for c in cmd.commands]
        self._steps = [self._handlers.get(type(c)) for c in cmd.commands]
        # (WEIGHTS offset, src_bytes, dst_bytes) -> expanded block; WEIGHTS is read-only, so a
        # block decoded once stays valid for every later run of this executor
        self._inflated: dict[tuple[int, int, int], np.ndarray] = {}
        # command index -> (hull of the SRAM bytes it writes, or None; its weight source)
        self._writes: dict[int, tuple] = {}
        # conv tiles' decoded params, GEMM-ready weights and accumulator routines, found by
        # their bytes' sources (sim/conv_operands.py); the two caches named for tests
        self._ops = ConvOperands(weights, cmd.path)
        self._weights, self._params = self._ops.weights, self._ops.params
        # command index -> its ConvPlan (sim/conv_tile.py), valid while its CONV_CFG and SRAM
        # are the same objects; the SRAMs are kept (and refilled) across runs for that
        self._plans: dict[int, ConvPlan] = {}
        self._srams: list[Memory] = []
        # command index -> (SRAM, its decoded block) of a DMA_LOAD_Z that ran (checked) before:
        # the command, WEIGHTS (read-only) and the SRAM's size fix both
        self._z_done: dict[int, tuple] = {}
        # DMA_LOAD_Z indices whose bytes nothing reads on a repeat in-order run (sim/zskip.py),
        # found after the first run that reused every tile's sources; the current run's set
        self._z_unread: frozenset[int] | None = None
        self._z_skip: frozenset[int] = frozenset()
        self._z_reuse = False   # the current run is a repeat in-order run of one core
        # such a run's per-command steps, made once after one (sim/replay.py)
        self._replay: Replay | None = None
        # a run keeps its SRAMs, DRAM regions, registers and provenance in the attributes
        # above: runs from several threads (one tc.load model shared) take turns
        self._lock = threading.Lock()

    # -- public API ----------------------------------------------------------------------------

    def run(self, input_bytes: bytes, schedule: str = "inorder", seed: int = 0,
            check: bool = False) -> bytes:
        """Execute the program on one input and return the OUTPUT region.

        Args:
            input_bytes: contents of the INPUT region (``cmd.input_bytes`` bytes).
            schedule, seed, check: see :meth:`run_with_stats`.

        Returns:
            The OUTPUT region, ``cmd.output_bytes`` bytes.

        Raises:
            InputError: ``input_bytes`` has the wrong length.
            ExecutionError: an illegal command (index and mnemonic in the message).
        """
        return self.run_with_stats(input_bytes, schedule, seed, check)[0]

    def run_with_stats(self, input_bytes: bytes, schedule: str = "inorder", seed: int = 0,
                       check: bool = False) -> tuple[bytes, ExecStats]:
        """Like :meth:`run`, also returning the run's :class:`ExecStats`.

        Args:
            input_bytes: contents of the INPUT region.
            schedule: "inorder" (stream order) or "random" (a random legal interleaving of the
                three queues drawn with ``seed``; implies ``check``).
            seed: seed of the random schedule.
            check: track every byte's accesses and raise on a hazard (two commands the waits
                do not order touch overlapping bytes and one writes) or on a read of bytes
                nothing wrote. Measured 2.7x slower on ResNet-50 224 (3.2 s vs 1.2 s), 4x on
                ResNet-18 64x64 (0.66 s vs 0.17 s).

        Raises:
            InputError: wrong input length or unknown ``schedule``.
            ExecutionError: an illegal command; :class:`~tcc_compiler.sim.hazards.HazardError`
                for a hazard (both commands and the byte range named).
        """
        if schedule not in SCHEDULES:
            raise InputError(f"schedule {schedule!r} unknown (choose from "
                             f"{', '.join(SCHEDULES)})")
        c = self.cmd
        if len(input_bytes) != c.input_bytes:
            raise InputError(f"{c.path}: input is {len(input_bytes)} bytes, the program expects "
                             f"{c.input_bytes}")
        problem = cores_problem(list(c.commands), c.cores)
        if problem:
            raise ExecutionError(f"{c.path}: {problem}")
        with self._lock:   # one run at a time: its memories and registers are attributes
            return self._run_locked(input_bytes, schedule, seed, check)

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
            spec.Region.ACT: Memory.filled("ACT", c.act_arena_bytes, self.fill),
            spec.Region.INPUT: Memory("INPUT", bytearray(input_bytes), True),
            spec.Region.OUTPUT: Memory.filled("OUTPUT", c.output_bytes, self.fill),
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
        if self._z_reuse and self._replay is not None:
            return self._run_replay(self._replay)
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

    # -- run-loop helpers ----------------------------------------------------------------------

    def _run_replay(self, replay: Replay) -> tuple[bytes, ExecStats]:
        """A repeat in-order run of one core by its :class:`~tcc_compiler.sim.replay.Replay`
        (the memories already set up by :meth:`_run_locked`); failures as in
        :meth:`_dispatch`."""
        self._regs = self._regs_of[0] = replay.start()
        i = -1
        try:
            with blas_threads(self.blas_threads):
                for i, step in replay.steps:
                    step()
        except (ValueError, IndexError, OverflowError, MemoryError, TypeError) as exc:
            cmd = self.cmd.commands[i]
            raise self._err(i, cmd, f"cannot execute ({type(exc).__name__}: "
                                    f"{first_line(exc, 160)})") from None
        self._ops.finish()
        self.stats = stats = ExecStats(Counter(replay.commands),
                                       Counter(replay.bytes_per_queue), replay.macs)
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

    def _skips_for_run(self, other: bool) -> None:
        """Set the DMA_LOAD_Z commands this run leaves out: those nothing reads
        (:meth:`_unread_loads`, once found) on a repeat in-order run of one core with no
        hazard tracking, else (``other``: tracked, or several cores) none."""
        self._z_reuse = not other and self._ops.mode == REUSE
        self._z_skip = (self._z_unread or frozenset()) if self._z_reuse else frozenset()

    def _after_run(self, stats: ExecStats) -> None:
        """After a run of the general loop went through every command: the sources are
        complete (:meth:`ConvOperands.finish`), the unread loads found; after a repeat in-order
        run of one core, later such runs replay it (:mod:`tcc_compiler.sim.replay`)."""
        self._ops.finish()
        self._found_unread()
        if self._z_reuse and self._z_unread is not None:
            self._replay = make_replay(self.cmd.commands, self._steps, self._ops.ready,
                                       self._z_unread, self._conv_tile, ExecStats(), stats,
                                       self._writes)

    def _found_unread(self) -> None:
        """After a complete repeat in-order run (every tile's kept operands known): find the
        loads later such runs leave out, once."""
        if self._z_reuse and self._z_unread is None:
            self._z_unread = self._unread_loads()

    def _unread_loads(self) -> frozenset[int]:
        """The DMA_LOAD_Z commands a repeat in-order run may skip
        (:func:`~tcc_compiler.sim.zskip.unread_weight_loads`): the tiles that keep their
        operands (:attr:`ConvOperands.ready`) read neither their weight nor their parameter
        bytes."""
        cmds = self.cmd.commands
        fed = {}
        for i, (pl, *_) in self._ops.ready.items():
            t = cmds[i]
            fed[i] = frozenset({(t.w_sram, t.w_sram + pl.w.nbytes),
                                (t.p_sram, t.p_sram + pl.p_raw.size)})
        return unread_weight_loads(cmds, frozenset(self._handlers), fed)

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

    # -- memory helpers ------------------------------------------------------------------------

    @staticmethod
    def _err(i: int, cmd: Command, msg: str) -> ExecutionError:
        return ExecutionError(f"command {i} ({cmd.name}): {msg}")

    def _sram_view(self, i: int, cmd: Command, what: str, addr: int, nbytes: int) -> np.ndarray:
        """uint8 view of SRAM [addr, addr + nbytes), bounds-checked."""
        if addr + nbytes > self._sram.size:
            raise self._err(i, cmd, f"sram range {addr:#x}-{addr + nbytes:#x} ({what}) outside "
                                    f"SRAM (size {self._sram.size})")
        return self._sram.arr[addr:addr + nbytes]

    def _sram_box(self, i: int, cmd: Command, what: str, addr: int, shape: tuple,
                  px_stride: int, row_stride: int, dtype=np.int8,
                  write: bool = False) -> np.ndarray:
        """[h, w, c] view of a strided SRAM operand (strides in bytes, 0 = packed, see
        :func:`~tcc_compiler.isa.commands.box_strides`), bounds-checked: writable for int8
        and packed operands; a strided multi-byte operand is a copy when read, a
        :class:`ByteBox` when ``write``."""
        h, w, c = shape
        eb = np.dtype(dtype).itemsize
        if not (px_stride or row_stride):
            return self._sram_tensor(i, cmd, what, addr, shape, dtype)
        try:
            px, row = box_strides(w, c * eb, px_stride, row_stride)
        except ExecutionError as exc:
            raise self._err(i, cmd, f"{what}: {exc}") from None
        end = addr + (h - 1) * row + (w - 1) * px + c * eb if h and w and c else addr
        self._sram_view(i, cmd, what, addr, end - addr)
        if eb == 1:   # an ndarray over the SRAM's buffer: a few times cheaper than as_strided
            return np.ndarray((h, w, c), dtype, self._sram.buf, addr, (row, px, 1))
        raw = np.ndarray((h, w, c * eb), np.uint8, self._sram.buf, addr, (row, px, 1))
        if not write:
            return np.ascontiguousarray(raw).view(np.dtype(dtype).newbyteorder("<"))
        return ByteBox(raw, dtype)

    def _sram_tensor(self, i, cmd, what, addr, shape, dtype=np.int8) -> np.ndarray:
        dt = _LE[dtype] if dtype in _LE else np.dtype(dtype).newbyteorder("<")
        n = math.prod(shape) * dt.itemsize
        if addr + n > self._sram.size:
            self._sram_view(i, cmd, what, addr, n)   # raises, naming the range
        return np.ndarray(shape, dt, self._sram.buf, addr)

    # -- command handlers ----------------------------------------------------------------------

    def _dma(self, i: int, cmd: DmaLoad | DmaStore, stats: ExecStats) -> None:
        region, _ = spec.split_dram_address(cmd.dram)
        run_dma(i, cmd, self._dram[region], self._sram, self._err)
        stats.bytes_per_queue[cmd.queue.name] += cmd.total_bytes

    def _dma_z(self, i: int, cmd: DmaLoadZ, stats: ExecStats) -> None:
        stats.bytes_per_queue["LOAD"] += cmd.src_bytes
        if i in self._z_skip:   # ran (checked) before; nothing reads its bytes (sim/zskip.py)
            return
        hit = self._z_done.get(i)
        if hit is not None and hit[0] is self._sram:   # checked and decoded on a past run
            self._sram.arr[cmd.sram:cmd.sram + cmd.dst_bytes] = hit[1]
        else:
            region, off = spec.split_dram_address(cmd.dram)
            run_dma_z(i, cmd, self._dram[region], self._sram, self._inflated, self._err)
            self._z_done[i] = (self._sram, self._inflated[(off, cmd.src_bytes, cmd.dst_bytes)])

    def _conv_plan(self, i: int, t: ConvTile) -> ConvPlan:
        """Tile ``i``'s :class:`~tcc_compiler.sim.conv_tile.ConvPlan` under the current
        CONV_CFG over the current SRAM: the one made on an earlier run when both are the same
        objects, else made (and checked) now."""
        plan = self._plans.get(i)
        cfg = self._regs.conv
        if plan is not None and plan.cfg is cfg and plan.sram is self._sram:
            return plan
        problem = conv_setup_problem(cfg, t, self.target.array_in_channels)
        if problem:
            raise self._err(i, t, problem)
        plan = self._plans[i] = make_plan(i, t, cfg, self._sram, self._sram_box,
                                          self._sram_tensor, self._sram_view)
        return plan

    def _conv_tile(self, i: int, t: ConvTile, stats: ExecStats, acc=None) -> None:
        """CONV_TILE ``i``; ``acc``: an accumulator routine for its kept operands in place of
        the kept one (a replay's shared GEMM, sim/replay.py), else None."""
        pl = self._conv_plan(i, t)
        ready = self._ops.ready.get(i)
        if ready is not None and ready[0] is pl:   # remembered sources: the same objects
            _, cp, cw, acc_fn, step = ready
            acc_fn = acc or acc_fn
            if step is not None and step():   # the plainest route, chosen once
                stats.bytes_per_queue["COMPUTE"] += pl.read_fixed + pl.direct.nbytes
                stats.macs += pl.macs
                return
        cfg = pl.cfg
        x = pl.x
        if x is None:   # a strided multi-byte input: read as a copy
            x = self._sram_box(i, t, "input", t.in_sram, (t.in_h, t.in_w, t.in_c),
                               t.in_px_stride, t.in_row_stride, INT_DTYPES[cfg.in_bytes])
        if ready is None or ready[0] is not pl:
            cp, cw, acc_fn = self._ops.get(i, t, pl, self._prov, self._err)
        shape = (pl.oh, pl.ow, t.oc)
        part = pl.part
        if part is None and cfg.accumulate:
            part = self._sram_box(i, t, "partial sums", t.sc_sram, shape, t.sc_px_stride,
                                  t.sc_row_stride, np.dtype("<i4"))
        sc = pl.sc
        if sc is None and cfg.has_shortcut and not cfg.out_mode & spec.OUT_MODE_INT32:
            sc = self._sram_box(i, t, "shortcut", t.sc_sram, shape, t.sc_px_stride,
                                t.sc_row_stride, INT_DTYPES[cfg.sc_bytes])
        y = conv_result(pl, cp, x, cw, t.pads, part, sc, acc_fn)
        stats.bytes_per_queue["COMPUTE"] += pl.read_fixed + y.nbytes
        if y is not pl.direct:
            pl.out[...] = y
        stats.macs += pl.macs

    def _pool_tile(self, i: int, t: PoolTile, stats: ExecStats) -> None:
        stats.bytes_per_queue["COMPUTE"] += run_pool_tile(i, t, self._regs.pool, self._sram_box,
                                                          self._err)

    def _add_tile(self, i: int, t: AddTile, stats: ExecStats) -> None:
        stats.bytes_per_queue["COMPUTE"] += run_add_tile(i, t, self._regs.add, self._sram_tensor,
                                                         self._err)

    def _lut_tile(self, i: int, t: LutTile, stats: ExecStats) -> None:
        stats.bytes_per_queue["COMPUTE"] += run_lut_tile(i, t, self._sram_tensor, self._err)

    def _ew_tile(self, i: int, t: EwTile, stats: ExecStats) -> None:
        stats.bytes_per_queue["COMPUTE"] += run_ew_tile(i, t, self._sram_tensor, self._err)

    def _resize_tile(self, i: int, t: ResizeTile, stats: ExecStats) -> None:
        stats.bytes_per_queue["COMPUTE"] += run_resize_tile(i, t, self._sram_tensor, self._err)
