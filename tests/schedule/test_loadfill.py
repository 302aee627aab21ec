"""Filling the LOAD queue's stalls (schedule/loadfill.py): a later weight load that waits for
nothing moves ahead of a load waiting for a compute, only when its dependencies are all
earlier and no passed command touches its SRAM; the program stays hazard-free and bit-exact."""

from __future__ import annotations

from tcc_compiler.isa import commands as C
from tcc_compiler.isa.access import Space
from tcc_compiler.isa.spec import Queue, Region, dram_address
from tcc_compiler.isa.wlayout import WeightLayoutBuilder
from tcc_compiler.schedule.cost import replay
from tcc_compiler.schedule.emitter import WaitTracker, flat_fields
from tcc_compiler.schedule.loadfill import fill_load_stalls
from tcc_compiler.schedule.program import Program
from tcc_compiler.sim.hazards import check_stream
from tcc_compiler.target import load_target

N = 4096   # bytes per tile operand


def _add(w: WaitTracker, deps, name: str, a: int, out: int):
    return w.emit(C.AddTile, deps, name, a_sram=a, b_sram=a, out_sram=out, n=N)


def _weights(w: WaitTracker, deps, name: str, sram: int, nbytes: int = N):
    return w.emit(C.DmaLoadZ, deps, name, dram=dram_address(Region.WEIGHTS, 0), sram=sram,
                  src_bytes=nbytes, dst_bytes=nbytes)


def _stream(overlap: bool = False) -> Program:
    """A's input load and 8 adds reading it; B's load over A's input (it waits for A's last
    add); then C's weight load into free SRAM (``overlap``: into A's output, which A's adds
    write) and C's add reading it, which ends last. In stream order C's load queues behind
    B's and so waits for A's adds too."""
    w = WaitTracker()
    w.emit(C.AddCfg, [], "cfg", zp_a=0, zp_b=0, zp_out=0, act_lo=-128, act_hi=127, shift=0,
           mult_a=1, mult_b=1)
    la = w.emit(C.DmaLoad, [], "A in", dram=0, sram=0, **flat_fields(N))
    a = None
    for _ in range(8):
        a = _add(w, [la], "A", 0, N)
    lb = w.emit(C.DmaLoad, [a], "B in", dram=0, sram=0, **flat_fields(N))
    _add(w, [lb], "B", 0, 2 * N)
    at = N if overlap else 4 * N
    lc = _weights(w, [], "C w", at)
    _add(w, [lc], "C", at, 3 * N)
    w.emit(C.End, [], "end")
    return Program(w.cmds, w.comments, WeightLayoutBuilder(None).build(), 8 * N, 0, 4 * N, N,
                   [], [], [], w.slots, deps=w.deps)


def _end(prog: Program) -> int:
    return max(e for _, e in replay(prog.commands, load_target()))


def test_free_weight_load_moves_ahead_of_a_stalled_load():
    prog = _stream()
    t = load_target()
    filled, cycles = fill_load_stalls(prog, t, _end(prog))
    assert cycles == _end(filled) < _end(prog)
    loads = [m for m, c in zip(filled.comments, filled.commands) if c.queue is Queue.LOAD]
    assert loads == ["A in", "C w", "B in"]
    # B's load still waits for A's last add, C's add for its weights
    spans = replay(filled.commands, t)
    i_b, i_c = filled.comments.index("B in"), filled.comments.index("C w")
    last_a = max(i for i, m in enumerate(filled.comments) if m == "A")
    assert spans[i_b][0] >= spans[last_a][1]
    assert spans[filled.comments.index("C")][0] >= spans[i_c][1]
    # compute commands keep their order
    assert ([m for m, c in zip(filled.comments, filled.commands) if c.queue is Queue.COMPUTE]
            == [m for m, c in zip(prog.comments, prog.commands) if c.queue is Queue.COMPUTE])


def test_load_into_sram_a_passed_command_touches_stays():
    prog = _stream(overlap=True)
    filled, cycles = fill_load_stalls(prog, load_target(), _end(prog))
    assert filled is prog and cycles == _end(prog)


def test_filled_stream_is_hazard_free():
    """The static checker (every legal interleaving of the queues) finds no hazard in the
    filled stream: B's load still follows A's adds, C's add its weights."""
    prog = _stream()
    filled, _ = fill_load_stalls(prog, load_target(), _end(prog))
    assert filled is not prog
    sizes = {Space.SRAM: 8 * N, Space.WEIGHTS: 4 * N, Space.ACT: 0, Space.INPUT: N,
             Space.OUTPUT: 0}
    assert check_stream(filled.commands, sizes) == []


def test_move_over_touched_sram_would_be_a_hazard():
    """What the SRAM check prevents: C's weights moved ahead of B's load into the output A's
    adds write are an unordered write-write pair the checker reports."""
    from tcc_compiler.schedule.loadfill import _program
    prog = _stream(overlap=True)
    c, b = prog.comments.index("C w"), prog.comments.index("B in")
    order = list(range(len(prog.commands)))
    order.remove(c)
    order.insert(b, c)
    sizes = {Space.SRAM: 8 * N, Space.WEIGHTS: 4 * N, Space.ACT: 0, Space.INPUT: N,
             Space.OUTPUT: 0}
    assert check_stream(prog.commands, sizes) == []
    assert check_stream(_program(prog, order).commands, sizes) != []


def test_a_trial_replays_only_the_commands_after_those_it_shares(monkeypatch):
    """The program is replayed in full once; each trial's replay resumes after the leading
    commands it shares with the best program so far (``cost.replay``'s ``prefix``), and the
    kept trial's replay serves the next round: same moves, same cycles as full replays."""
    from tcc_compiler.schedule import loadfill
    calls = []

    def counted(cmds, t, prefix=None):
        calls.append(prefix[0] if prefix is not None else 0)
        return replay(cmds, t, prefix)

    monkeypatch.setattr(loadfill, "replay", counted)
    prog = _stream()
    filled, cycles = fill_load_stalls(prog, load_target(), _end(prog))
    assert filled is not prog and cycles == _end(filled)
    assert calls[0] == 0 and len(calls) >= 2
    assert all(k > 0 for k in calls[1:])   # the commands before the moved load: not again


def test_a_trial_built_on_the_previous_program_is_the_same_program():
    """_program's ``base``: a trial that reuses the previous order's commands outside the
    moved stretch gives exactly the program derived from scratch (commands, waits, deps)."""
    from tcc_compiler.schedule.loadfill import _program
    prog = _stream()
    c, b = prog.comments.index("C w"), prog.comments.index("B in")
    order = list(range(len(prog.commands)))
    trial = order[:b] + [c] + order[b:c] + order[c + 1:]
    built = _program(prog, order)
    got = _program(prog, trial, base=(order, built, b, c))
    want = _program(prog, trial)
    assert got.commands == want.commands and got.deps == want.deps
    assert got.commands != built.commands
    assert got.commands[0] is built.commands[0]   # before the stretch: taken over
