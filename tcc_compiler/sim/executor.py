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

This module is the :class:`Executor`'s public API, its state and its command handlers; the
general run loop is :mod:`tcc_compiler.sim.run_loop`'s, the skipped loads and replays of repeat
in-order runs :mod:`tcc_compiler.sim.repeat_runs`'s, the SRAM views
:mod:`tcc_compiler.sim.sram_access`'s.
"""

from __future__ import annotations

import threading

import numpy as np

from tcc_compiler.binfmt.cmdfile import CmdFile, cores_problem
from tcc_compiler.binfmt.weightfile import WeightFile
from tcc_compiler.errors import ExecutionError, InputError
from tcc_compiler.isa import spec
from tcc_compiler.isa.commands import (
    AddTile,
    ConvTile,
    DmaLoad,
    DmaLoadZ,
    DmaStore,
    EwTile,
    LutTile,
    PoolTile,
    ResizeTile,
)
from tcc_compiler.sim.conv_exec import conv_result
from tcc_compiler.sim.conv_operands import ConvOperands
from tcc_compiler.sim.conv_tile import ConvPlan, conv_setup_problem, make_plan
from tcc_compiler.sim.dma import run_dma, run_dma_z
from tcc_compiler.sim.exec_stats import ExecStats
from tcc_compiler.sim.hazards import Ordering
from tcc_compiler.sim.limits import check_program
from tcc_compiler.sim.memory import INT_DTYPES, Memory
from tcc_compiler.sim.repeat_runs import RepeatRuns
from tcc_compiler.sim.replay import Replay
from tcc_compiler.sim.run_loop import RunLoop
from tcc_compiler.sim.sram_access import SramAccess
from tcc_compiler.sim.vector_ops import (run_add_tile, run_ew_tile, run_lut_tile, run_pool_tile,
                                        run_resize_tile)
from tcc_compiler.target import Target

__all__ = ["SCHEDULES", "ExecStats", "Executor"]   # ExecStats: re-exported (sim/exec_stats.py)

#: Execution orders :meth:`Executor.run_with_stats` offers.
SCHEDULES = ("inorder", "random")


class Executor(RunLoop, RepeatRuns, SramAccess):
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
        cmd: the program (settable: :attr:`cmd`).
        target: the target the program runs on (read-only).
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
        self.weights_data = weights.data if weights is not None else b""
        self._weight_file = weights   # named in messages about its bytes
        # WEIGHTS is read-only (no command writes it): one read-only view of the file's bytes
        # serves every run, instead of a copy of the whole data section per run
        self._weights_mem = Memory("WEIGHTS", bytes(self.weights_data), False)
        self._target = target   # read-only (:attr:`target`): _bind checks the program on it
        self.fill = fill
        self.blas_threads = blas_threads
        self.stats: ExecStats | None = None
        self._handlers = {DmaLoad: self._dma, DmaStore: self._dma, ConvTile: self._conv_tile,
                          PoolTile: self._pool_tile, AddTile: self._add_tile,
                          DmaLoadZ: self._dma_z, LutTile: self._lut_tile,
                          EwTile: self._ew_tile, ResizeTile: self._resize_tile}
        # (WEIGHTS offset, src_bytes, dst_bytes) -> expanded block; WEIGHTS is read-only, so a
        # block decoded once stays valid for every later run of this executor
        self._inflated: dict[tuple[int, int, int], np.ndarray] = {}
        # a run keeps its SRAMs, DRAM regions, registers and provenance in the attributes
        # below: runs from several threads (one tc.load model shared) take turns
        self._lock = threading.Lock()
        self._bind(cmd)

    @property
    def target(self) -> Target:
        """The target the program runs on; read-only (every command was checked against it
        and the SRAM sized from it: another target takes a new executor)."""
        return self._target

    @property
    def cmd(self) -> CmdFile:
        """The program (decoded ``npu_cmd.bin``). Setting another one (tests swap in altered
        streams) checks it against :attr:`target` and forgets everything remembered per
        command index of the old one (its ordering, plans, sources, skipped loads, replay),
        waiting for a run in progress to end.

        Raises:
            ExecutionError: (on setting) the program exceeds :attr:`target`; the executor
                keeps its old program then.
        """
        return self._cmd

    @cmd.setter
    def cmd(self, cmd: CmdFile) -> None:
        with self._lock:
            self._bind(cmd)

    def _bind(self, cmd: CmdFile) -> None:
        """Make ``cmd`` the program, with fresh per-program state (:attr:`cmd`)."""
        check_program(cmd, self.target)
        self._cmd = cmd
        # why the stream is not well-terminated per core, or None: raised by every run (a
        # frozen CmdFile holding a tuple: found once, not per run)
        self._cores_problem = cores_problem(list(cmd.commands), cmd.cores)
        self._order_cache: Ordering | None = None
        # per command index: its mnemonic and handler (None: a register or sync command)
        self._names = [c.name for c in cmd.commands]
        self._steps = [self._handlers.get(type(c)) for c in cmd.commands]
        # command index -> (hull of the SRAM bytes it writes, or None; its weight source)
        self._writes: dict[int, tuple] = {}
        # conv tiles' decoded params, GEMM-ready weights and accumulator routines, found by
        # their bytes' sources (sim/conv_operands.py); the two caches named for tests
        self._ops = ConvOperands(self._weight_file, cmd.path)
        self._weights, self._params = self._ops.weights, self._ops.params
        # command index -> its ConvPlan (sim/conv_tile.py), valid while its CONV_CFG and SRAM
        # are the same objects; the SRAMs are kept (and refilled) across runs for that
        self._plans: dict[int, ConvPlan] = {}
        self._srams: list[Memory] = []
        self._kept_dram: dict[str, Memory] = {}   # small DRAM regions reused (run_loop.py)
        # command index -> (SRAM, its decoded block) of a DMA_LOAD_Z that ran (checked) before:
        # the command, WEIGHTS (read-only) and the SRAM's size fix both
        self._z_done: dict[int, tuple] = {}
        # DMA_LOAD_Z indices whose bytes nothing reads on a repeat in-order run (sim/zskip.py),
        # found after the first run that reused every tile's sources; the current run's set
        self._z_unread: frozenset[int] | None = None
        self._z_skip: frozenset[int] = frozenset()
        self._z_reuse = False   # the current run is a repeat in-order run of one core
        self._plain_run = False   # ... an in-order run of one core, no hazard tracking
        # such a run's per-command steps, made once after one (sim/replay.py), used while the
        # handlers are those it was made from (sim/repeat_runs.py)
        self._replay: Replay | None = None

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
        with self._lock:   # one run at a time: its memories and registers are attributes
            c = self.cmd   # checked under the lock: the program this run runs
            if len(input_bytes) != c.input_bytes:
                raise InputError(f"{c.path}: input is {len(input_bytes)} bytes, the program "
                                 f"expects {c.input_bytes}")
            if self._cores_problem:
                raise ExecutionError(f"{c.path}: {self._cores_problem}")
            return self._run_locked(input_bytes, schedule, seed, check)

    # -- command handlers (the general loop, sim/run_loop.py, and replays, sim/repeat_runs.py,
    # -- call them; SRAM views from sim/sram_access.py) -------------------------------------

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
                self._count_plain(pl, stats)
                return
        cfg = pl.cfg
        x = pl.x
        if x is None:   # a strided multi-byte input: read as a copy
            x = self._sram_box(i, t, "input", t.in_sram, (t.in_h, t.in_w, t.in_c),
                               t.in_px_stride, t.in_row_stride, INT_DTYPES[cfg.in_bytes])
        if ready is None or ready[0] is not pl:
            cp, cw, acc_fn = self._ops.get(i, t, pl, self._prov, self._err)
            made = self._ops.ready.get(i)   # kept just now (an in-order run): its route
            if made is not None and made[0] is pl and made[4] is not None and made[4]():
                self._count_plain(pl, stats)   # from the first run on, so a run's kernels
                return                         # are those of every later run (loaded once)
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

    @staticmethod
    def _count_plain(pl: ConvPlan, stats: ExecStats) -> None:
        """Count a tile its plain step computed (the counters :func:`conv_result`'s route
        counts: its output is ``pl.direct``)."""
        out = pl.direct if pl.direct is not None else pl.out   # int32 output: not direct
        stats.bytes_per_queue["COMPUTE"] += pl.read_fixed + out.nbytes
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
