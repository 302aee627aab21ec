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
from dataclasses import dataclass, field

from tcc_compiler.isa.commands import Command, ConvTile, DmaLoadZ, End, Registers
from tcc_compiler.numerics.accumulator import shared_input
from tcc_compiler.sim.conv_exec import plain_step
from tcc_compiler.sim.gemm_groups import shared_input_groups
from tcc_compiler.sim.row_groups import row_group_step, row_groups


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
        runs: replays started (the identity of the current one, :meth:`start`).
        groups: the tiles sharing one GEMM (:mod:`tcc_compiler.sim.gemm_groups`), command
            indices in run order.
        rows: the tiles sharing one GEMM over their joined inputs
            (:mod:`tcc_compiler.sim.row_groups`), command indices in run order; a group is one
            step (at its first member's index).
        source: the per-command handlers it was made from (:meth:`made_from`).
    """

    steps: list[tuple[int, Callable[[], object]]]
    regs: Registers
    commands: Counter
    bytes_per_queue: Counter
    macs: int
    runs: int = 0
    groups: list[list[int]] = field(default_factory=list)
    rows: list[list[int]] = field(default_factory=list)
    source: list = field(default_factory=list)

    def start(self) -> Registers:
        """Count a new replay and clear :attr:`regs` (a run starts with no CONV_CFG,
        POOL_CFG or ADD_CFG); return them: the executor's current registers for the run."""
        self.runs += 1
        self.regs.conv = self.regs.pool = self.regs.add = None
        return self.regs

    def run_id(self) -> int:
        """The current replay's identity (:attr:`runs`)."""
        return self.runs

    def made_from(self, steps: Sequence) -> bool:
        """Whether it was made from these per-command handlers (the executor's list, compared
        item by item: the same bound methods): a handler replaced since (a hook) is one its
        steps do not call."""
        return list(steps) == self.source   # identical items compare equal without a call


def make_replay(cmds: Sequence[Command], steps: Sequence, ready: dict, skip: frozenset,
                conv_tile: Callable, scratch, stats, writes: dict) -> Replay:
    """A :class:`Replay` of the in-order stream ``cmds`` (one core).

    Args:
        cmds: the commands, in stream order. steps: per command index its handler
            ``handler(i, cmd, stats)``, or None for a register or sync command.
        ready: the tiles' kept operands (:attr:`~tcc_compiler.sim.conv_operands.ConvOperands.
            ready`: index -> (plan, params, weights, accumulator, plain step or None)).
        skip: the DMA_LOAD_Z indices a repeat run leaves out (:mod:`tcc_compiler.sim.zskip`).
        conv_tile: the executor's CONV_TILE handler ``conv_tile(i, cmd, stats, acc=None)``
            (``acc``: an accumulator routine in place of the kept one): the fallback of a
            plain step that declines (compiled kernels switched off since), and the step of a
            grouped tile with no plain step.
        scratch: an ExecStats the handlers count into during a replay (discarded: the
            replay's counters are ``stats``'s). stats: the ExecStats of the run it is made from.
        writes: command index -> (SRAM write hull or None, ...) of every handled command
            (the executor's record), for :func:`~tcc_compiler.sim.gemm_groups.
            shared_input_groups`.
    """
    regs = Registers()
    order = _order(cmds, steps, skip)
    rp = Replay([], regs, Counter(stats.commands), Counter(stats.bytes_per_queue), stats.macs,
                source=list(steps))
    handled = lambda i: steps[i] is not None   # noqa: E731
    rp.groups = shared_input_groups(order, ready, writes, handled)
    plain, shared = _shared_steps(rp, ready)
    rp.rows = row_groups(order, ready, handled, {i for g in rp.groups for i in g})
    own = {}
    for i in order:
        cmd, handler = cmds[i], steps[i]
        if handler is None:
            own[i] = _bind(regs.update, cmd)
        elif isinstance(cmd, ConvTile) and plain.get(i) is not None:
            own[i] = _plain_or(plain[i], conv_tile, i, cmd, scratch)
        elif i in shared:   # the general route, its accumulator the shared GEMM's part
            own[i] = _bind4(conv_tile, i, cmd, scratch, shared[i])
        else:
            own[i] = _bind3(handler, i, cmd, scratch)
    first = {g[0]: g for g in rp.rows}
    later = {i for g in rp.rows for i in g[1:]}
    for i in order:
        if i in first:      # the group's joined GEMM and every member's epilogue
            g = first[i]
            rp.steps.append((i, _group_or(row_group_step([ready[k] for k in g]),
                                          [own[k] for k in g])))
        elif i not in later:
            rp.steps.append((i, own[i]))
    return rp


def _order(cmds: Sequence[Command], steps: Sequence, skip: frozenset) -> list[int]:
    """The command indices a repeat in-order run executes: up to the first END, the skipped
    DMA_LOAD_Z commands left out."""
    order: list[int] = []
    for i, cmd in enumerate(cmds):
        if steps[i] is None and isinstance(cmd, End):
            break
        if not (isinstance(cmd, DmaLoadZ) and i in skip):
            order.append(i)
    return order


def _shared_steps(rp: Replay, ready: dict) -> tuple[dict, dict]:
    """(command index -> plain step, command index -> shared accumulator part of a tile with
    no plain step): the tiles' kept plain steps, those of :attr:`Replay.groups`' members
    remade over their part of the shared GEMM."""
    plain = {i: r[4] for i, r in ready.items() if r[4] is not None}
    shared = {}
    for group in rp.groups:
        fns = shared_input([ready[i][3] for i in group], rp.run_id)
        for i, fn in zip(group, fns):
            pl, cp, cw = ready[i][:3]
            if plain.get(i) is not None:
                plain[i] = plain_step(pl, cp, cw, fn)
            else:
                shared[i] = fn
    return plain, shared


def _bind(fn, a):
    def step():
        return fn(a)
    return step


def _bind3(fn, a, b, c):
    def step():
        return fn(a, b, c)
    return step


def _bind4(fn, a, b, c, d):
    def step():
        return fn(a, b, c, d)
    return step


def _group_or(group: Callable[[], bool], own: list[Callable[[], object]]):
    """A row group's step (:func:`~tcc_compiler.sim.row_groups.row_group_step`), or, when
    it declines (writes nothing then), each member's own step in order."""
    def step():
        if not group():
            for f in own:
                f()
    return step


def _plain_or(plain: Callable[[], bool], conv_tile: Callable, i: int, cmd: ConvTile, scratch):
    """The tile's plain step, or its handler when the step declines (writes nothing then)."""
    def step():
        if not plain():
            conv_tile(i, cmd, scratch)
    return step
