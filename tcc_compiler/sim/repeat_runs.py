"""What a repeat in-order run of one core leaves out or replays (:class:`RepeatRuns`, a part of
:class:`~tcc_compiler.sim.executor.Executor`): the DMA_LOAD_Z commands nothing reads on such a
run (:mod:`tcc_compiler.sim.zskip`), found after the first one, and the per-command steps made
once after it (:mod:`tcc_compiler.sim.replay`), which later such runs call instead of the
general loop (:mod:`tcc_compiler.sim.run_loop`).
"""

from __future__ import annotations

from collections import Counter

from tcc_compiler.errors import first_line
from tcc_compiler.isa import spec
from tcc_compiler.sim.blas import blas_threads
from tcc_compiler.sim.conv_operands import RECORD, REUSE
from tcc_compiler.sim.exec_stats import ExecStats
from tcc_compiler.sim.replay import Replay, make_replay
from tcc_compiler.sim.zskip import unread_weight_loads


class RepeatRuns:
    """Skipped loads and replays of repeat in-order runs (module docstring)."""

    def _replay_for_run(self) -> Replay | None:
        """The replay this run takes: on a repeat in-order run of one core (:attr:`_z_reuse`),
        the one made after such a run, provided it was made from the current per-command
        handlers (:meth:`Replay.made_from`; one made before a handler was replaced, or
        restored, is dropped and made again after this run); else None (the general loop)."""
        rp = self._replay
        if rp is None or not self._z_reuse:
            return None
        if not rp.made_from(self._steps):
            self._replay = None
            return None
        return rp

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

    def _skips_for_run(self, other: bool) -> None:
        """Set the DMA_LOAD_Z commands this run leaves out: those nothing reads
        (:meth:`_unread_loads`, once found) on a repeat in-order run of one core with no
        hazard tracking, else (``other``: tracked, or several cores) none; and whether this
        run is an in-order run of one core with no hazard tracking (:attr:`_plain_run`: the
        first one too, whose sources are recorded)."""
        self._plain_run = not other and self._ops.mode in (RECORD, REUSE)
        self._z_reuse = not other and self._ops.mode == REUSE
        self._z_skip = (self._z_unread or frozenset()) if self._z_reuse else frozenset()

    def _after_run(self, stats: ExecStats) -> None:
        """After a run of the general loop went through every command: the sources are
        complete (:meth:`ConvOperands.finish`), the unread loads found; after an in-order run
        of one core with no hazard tracking (the first one included: every tile's kept
        operands are made there), later repeat such runs replay it
        (:mod:`tcc_compiler.sim.replay`), so the second run already takes the replay."""
        self._ops.finish()
        self._found_unread()
        if self._plain_run and self._z_unread is not None:
            self._replay = make_replay(self.cmd.commands, self._steps, self._ops.ready,
                                       self._z_unread, self._conv_tile, ExecStats(), stats,
                                       self._writes)

    def _found_unread(self) -> None:
        """After a complete in-order run of one core (every tile's kept operands known):
        find the loads later repeat such runs leave out, once."""
        if self._plain_run and self._z_unread is None:
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
