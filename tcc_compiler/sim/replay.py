"""The per-command steps of a repeat in-order run of one core, made once (:class:`Replay`).

Why: on EfficientNet-Lite0 an image is ~280 commands; the general run loop
(:meth:`~tcc_compiler.sim.executor.Executor.run_with_stats`) spends a few microseconds on each
(counting its mnemonic, the hazard-tracking test, looking its handler up, the error wrapper,
the provenance hook, and for a conv tile its plan and kept operands looked up again), about a
tenth of the executor's time per image. On a repeat in-order run of one core with no hazard
tracking every one of those answers is the same as on the run before: the commands, their
order, the layer registers each sees, each tile's plan and kept operands
(:attr:`~tcc_compiler.sim.conv_operands.ConvOperands.ready`) and the weight loads nothing reads
(:mod:`tcc_compiler.sim.zskip`). So a :class:`Replay` is made after one such run, from what that
run found, and later such runs call only each command's remaining work.

Exactness: each step is the call the general loop makes for that command on such a run (the
handler itself, a layer register update, a tile's :func:`~tcc_compiler.sim.conv_exec.plain_step`
with the handler as its fallback), in the same order, on the same memories; a skipped
DMA_LOAD_Z is one the general loop skips too. The run's :class:`ExecStats` are those of the run
the replay was made from: every counter is a function of the command stream only (mnemonics
executed, bytes named by each command, each tile's MACs), which a repeat in-order run repeats.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tcc_compiler.isa.commands import Command, ConvTile, DmaLoadZ, End, Registers


@dataclass
class Replay:
    """The steps of a repeat in-order run of one core (module docstring).

    Attributes:
        steps: (command index, zero-argument callable) in stream order, up to the first END;
            commands with no work left (a skipped DMA_LOAD_Z) are left out.
        regs: the layer registers the steps update and the handlers read (cleared by
            :meth:`start`, as a run starts from empty registers).
        commands, bytes_per_queue, macs: the :class:`~tcc_compiler.sim.executor.ExecStats`
            counters of the run it was made from.
    """

    steps: list[tuple[int, Callable[[], object]]]
    regs: Registers
    commands: Counter
    bytes_per_queue: Counter
    macs: int

    def start(self) -> Registers:
        """Clear :attr:`regs` (a run starts with no CONV_CFG, POOL_CFG or ADD_CFG) and return
        it: the executor's current registers for the run."""
        self.regs.conv = self.regs.pool = self.regs.add = None
        return self.regs


def make_replay(cmds: Sequence[Command], steps: Sequence, ready: dict, skip: frozenset,
                conv_tile: Callable, scratch, stats) -> Replay:
    """A :class:`Replay` of the in-order stream ``cmds`` (one core).

    Args:
        cmds: the commands, in stream order. steps: per command index its handler
            ``handler(i, cmd, stats)``, or None for a register or sync command.
        ready: the tiles' kept operands (:attr:`~tcc_compiler.sim.conv_operands.ConvOperands.
            ready`: index -> (plan, params, weights, accumulator, plain step or None)).
        skip: the DMA_LOAD_Z indices a repeat run leaves out (:mod:`tcc_compiler.sim.zskip`).
        conv_tile: the executor's CONV_TILE handler, the fallback of a plain step that
            declines (compiled kernels switched off since).
        scratch: an ExecStats the handlers count into during a replay (discarded: the
            replay's counters are ``stats``'s). stats: the ExecStats of the run it is made from.
    """
    regs = Registers()
    out: list[tuple[int, Callable[[], object]]] = []
    for i, cmd in enumerate(cmds):
        handler = steps[i]
        if handler is None:
            if isinstance(cmd, End):
                break
            out.append((i, _bind(regs.update, cmd)))
        elif isinstance(cmd, DmaLoadZ) and i in skip:
            continue
        elif isinstance(cmd, ConvTile) and i in ready and ready[i][4] is not None:
            out.append((i, _plain_or(ready[i][4], conv_tile, i, cmd, scratch)))
        else:
            out.append((i, _bind3(handler, i, cmd, scratch)))
    return Replay(out, regs, Counter(stats.commands), Counter(stats.bytes_per_queue),
                  stats.macs)


def _bind(fn, a):
    def step():
        return fn(a)
    return step


def _bind3(fn, a, b, c):
    def step():
        return fn(a, b, c)
    return step


def _plain_or(plain: Callable[[], bool], conv_tile: Callable, i: int, cmd: ConvTile, scratch):
    """The tile's plain step, or its handler when the step declines (writes nothing then)."""
    def step():
        if not plain():
            conv_tile(i, cmd, scratch)
    return step
