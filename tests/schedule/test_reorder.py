"""Exact waits for early loads (schedule/reorder.py): a LOAD whose dependency lies more than
6 commands back in another queue moves up the stream instead of waiting for a later command;
nothing else changes meaning, and lowered programs stay hazard-free and bit-exact."""

from __future__ import annotations

import numpy as np
from conftest import run_program_impl
from helpers.prefetch_net import quantized_prefetch_net

from tcc_compiler.isa import commands as C
from tcc_compiler.isa.spec import WAIT_MAX, Queue
from tcc_compiler.isa.wlayout import WeightLayoutBuilder
from tcc_compiler.quant import run_golden
from tcc_compiler.schedule.cost import replay
from tcc_compiler.schedule.emitter import WaitTracker, flat_fields
from tcc_compiler.schedule.lowering import Lowering
from tcc_compiler.schedule.program import Program
from tcc_compiler.schedule.reorder import exact_waits
from tcc_compiler.target import load_target

N = 4096   # bytes per tile operand


def _load(w: WaitTracker, deps, name: str, sram: int, nbytes: int = N):
    return w.emit(C.DmaLoad, deps, name, dram=0, sram=sram, **flat_fields(nbytes))


def _add(w: WaitTracker, deps, name: str, a: int, out: int):
    return w.emit(C.AddTile, deps, name, a_sram=a, b_sram=a, out_sram=out, n=N)


def _program(w: WaitTracker) -> Program:
    w.emit(C.End, [], "end")
    return Program(w.cmds, w.comments, WeightLayoutBuilder(None).build(), 8 * N, 0, 4 * N, N,
                   [], [], [], w.slots, deps=w.deps)


def _clamped_stream(passed_dep: bool = False) -> Program:
    """op A (a load, one add), op B (8 adds on other SRAM), then op C's load over A's input,
    which depends on A's add: 8 compute commands back, so its wait is clamped to B's second
    add; C's add waits for that load, the last to end. With ``passed_dep`` 6 more loads
    follow A's and B's last add also waits for A's load, an exact wait of 6 that one more load
    before it would turn into 7."""
    w = WaitTracker()
    w.emit(C.AddCfg, [], "cfg", zp_a=0, zp_b=0, zp_out=0, act_lo=-128, act_hi=127, shift=0,
           mult_a=1, mult_b=1)
    la = _load(w, [], "A in", 0)
    for _ in range(6 if passed_dep else 0):
        _load(w, [], "D in", 5 * N)
    a = _add(w, [la], "A", 0, N)
    for i in range(8):
        _add(w, [la] if passed_dep and i == 7 else [], "B", 2 * N, 3 * N)
    lc = _load(w, [a], "C in", 0, 4 * N)   # long enough to end after B
    _add(w, [lc], "C", 0, 4 * N)
    return _program(w)


def _end(prog: Program) -> int:
    return max(e for _, e in replay(prog.commands, load_target()))


def test_clamped_load_moves_up_to_an_exact_wait():
    prog = _clamped_stream()
    i_old = prog.comments.index("C in")
    assert prog.commands[i_old].wait_compute == WAIT_MAX   # clamped: 8 back
    moved = exact_waits(prog)
    i_new = moved.comments.index("C in")
    assert i_new == moved.comments.index("A") + 1
    assert moved.commands[i_new].wait_compute == 0         # A's add, exactly
    spans_old, spans_new = (replay(p.commands, load_target()) for p in (prog, moved))
    a_end = spans_new[moved.comments.index("A")][1]
    assert spans_new[i_new][0] == a_end < spans_old[i_old][0]
    assert _end(moved) < _end(prog)
    # the queue orders are unchanged, and every other command keeps its wait fields

    def per_queue(p: Program, q: Queue) -> list:
        return [(m, c.waits if m != "C in" else None)
                for m, c in zip(p.comments, p.commands) if c.queue is q]

    for q in (Queue.LOAD, Queue.COMPUTE, Queue.STORE):
        assert per_queue(moved, q) == per_queue(prog, q)
    assert moved.commands[-1].queue is Queue.CONTROL


def test_load_does_not_pass_a_command_whose_load_wait_would_clamp():
    """B's last add waits for A's load with wait_load = 6: with C's load before it, the same
    wait would need 7 (clamped to a later load), so C's load stops after it."""
    prog = _clamped_stream(passed_dep=True)
    moved = exact_waits(prog)
    b_last = max(i for i, m in enumerate(moved.comments) if m == "B")
    assert moved.comments.index("C in") == b_last + 1
    assert moved.commands[b_last].waits == prog.commands[
        max(i for i, m in enumerate(prog.comments) if m == "B")].waits


def test_layer_ranges_follow_the_moved_commands():
    g, _ = quantized_prefetch_net(512, (256, 512))
    t = load_target().with_sram(128 * 1024)
    prog = Lowering(g, t, 64 * 1024).run()
    moved = exact_waits(prog)
    assert moved is not prog
    for a, b in zip(prog.layers, moved.layers):
        own = a.cmds if a.cmds is not None else range(a.first_cmd, a.end_cmd)
        own_new = b.cmds if b.cmds is not None else range(b.first_cmd, b.end_cmd)
        assert sorted(prog.comments[i] for i in own) == sorted(moved.comments[i]
                                                               for i in own_new)


def test_lowered_program_stays_hazard_free_and_bit_exact():
    g, x = quantized_prefetch_net(512, (256, 512))
    budget = 128 * 1024
    prog = exact_waits(Lowering(g, load_target().with_sram(budget), 64 * 1024).run())
    gold = run_golden(g, x)
    for schedule, seed in (("inorder", 0), ("random", 1), ("random", 2)):
        got, hazards = run_program_impl(prog, budget, g, x, schedule, seed)
        assert hazards == []
        for o in prog.outputs:
            np.testing.assert_array_equal(got[o.name], gold["int:" + o.name].reshape(-1))
