"""Repeat in-order runs of one core replay the per-command steps made once
(tcc_compiler/sim/replay.py): same bytes and counters as a fresh executor, no general loop,
failures still naming the command, other schedules unaffected."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from tcc_compiler.errors import ExecutionError
from tcc_compiler.isa import commands as C
from tcc_compiler.runtime import load_program
from tcc_compiler.sim import Executor


def _inputs(n_bytes: int, n: int = 3) -> list[bytes]:
    rng = np.random.default_rng(11)
    return [rng.integers(0, 256, n_bytes, dtype=np.uint8).tobytes() for _ in range(n)]


def _general_loop_off(ex, monkeypatch) -> None:
    """Make every command the general loop runs fail: only a replay can run now."""
    def refuse(handler, i, cmd, stats):
        raise AssertionError(f"general loop ran command {i}")
    monkeypatch.setattr(ex, "_dispatch", refuse)


def test_repeat_runs_replay_with_fresh_bytes_and_counters(small_folder, monkeypatch):
    _, out = small_folder
    prog = load_program(out)
    ex = prog.executor
    inputs = _inputs(ex.cmd.input_bytes)
    for x in inputs[:2]:   # a recording run, then a reusing run: the replay is made
        ex.run(x)
    _general_loop_off(ex, monkeypatch)
    for x in inputs + inputs[:1]:
        got, stats = ex.run_with_stats(x)
        fresh = Executor(ex.cmd, prog.weights, ex.target)
        want, want_stats = fresh.run_with_stats(x, check=True)
        assert got == want
        assert stats.commands == want_stats.commands
        assert stats.bytes_per_queue == want_stats.bytes_per_queue
        assert stats.macs == want_stats.macs
        assert ex.stats is stats


def test_the_second_run_already_replays(small_folder, monkeypatch):
    # the first in-order run records the sources and keeps every tile's operands and route:
    # the replay is made after it, so the second run (the first timed one of a benchmark
    # with one warm-up image) runs no general loop, and gives a fresh executor's bytes
    _, out = small_folder
    prog = load_program(out)
    ex = prog.executor
    inputs = _inputs(ex.cmd.input_bytes)
    first = ex.run(inputs[0])
    assert ex._replay is not None
    _general_loop_off(ex, monkeypatch)
    got = [ex.run(x) for x in inputs]
    want = [Executor(ex.cmd, prog.weights, ex.target).run(x, check=True) for x in inputs]
    assert got == want and first == want[0]


def test_other_schedules_between_replays_keep_their_bytes(small_folder):
    _, out = small_folder
    prog = load_program(out)
    ex = prog.executor
    inputs = _inputs(ex.cmd.input_bytes, 4)
    want = [Executor(ex.cmd, prog.weights, ex.target).run(x) for x in inputs]
    got = []
    for k, x in enumerate(inputs * 2):   # in order, random, checked, in order, ...
        kw = ({}, {"schedule": "random", "seed": k}, {"check": True})[k % 3]
        got.append(ex.run(x, **kw))
    assert ex._replay is not None
    assert got == want + want


def test_a_failing_replayed_command_is_named(small_folder):
    _, out = small_folder
    prog = load_program(out)
    ex = prog.executor
    x = _inputs(ex.cmd.input_bytes, 1)[0]
    ex.run(x)
    ex.run(x)
    j, _ = ex._replay.steps[len(ex._replay.steps) // 2]

    def broken():
        raise ValueError("operand out of range")
    ex._replay.steps[len(ex._replay.steps) // 2] = (j, broken)
    name = ex.cmd.commands[j].name
    with pytest.raises(ExecutionError, match=rf"command {j} \({name}\): cannot execute "
                                             r"\(ValueError: operand out of range\)"):
        ex.run(x)


def _replay_made(small_folder):
    """A loaded program's executor after a recording and a reusing run (its replay made)."""
    _, out = small_folder
    prog = load_program(out)
    ex = prog.executor
    x = _inputs(ex.cmd.input_bytes, 1)[0]
    ex.run(x)
    ex.run(x)
    assert ex._replay is not None
    return prog, ex, x


def test_a_hooked_step_runs_instead_of_the_replay(small_folder):
    # a replay is made from the executor's per-command handlers: one hooked after (as
    # tests/sim/test_executor_threads.py does) must run, and the hooked replay must not
    # outlive the hook
    prog, ex, x = _replay_made(small_folder)
    want = ex.run(x)
    k = next(i for i, c in enumerate(ex.cmd.commands) if isinstance(c, C.DmaStore))
    step, calls = ex._steps[k], []

    def hooked(i, cmd, stats):
        calls.append(i)
        step(i, cmd, stats)

    ex._steps[k] = hooked
    assert ex.run(x) == want
    assert calls == [k]
    ex._steps[k] = step
    for _ in range(3):
        assert ex.run(x) == want
    assert calls == [k]
    assert ex._replay is not None   # made again, from the handlers without the hook


def test_a_different_program_is_not_replayed(small_folder):
    # ex.cmd swapped for another program (as tests/sim/test_hazards.py does): its runs are
    # that program's, never the replay (or plans, sources, skipped loads) of the first
    prog, ex, x = _replay_made(small_folder)
    saved = ex.cmd
    cmds = list(saved.commands)
    k = max(i for i, c in enumerate(cmds) if isinstance(c, C.DmaStore))
    other = dataclasses.replace(saved, commands=tuple(cmds[:k] + cmds[k + 1:]))
    want_other = Executor(other, prog.weights, ex.target).run(x)
    want = ex.run(x)
    assert want_other != want
    ex.cmd = other
    assert ex.run(x) == want_other
    assert ex.run(x) == want_other
    ex.cmd = saved
    assert ex.run(x) == want
    assert ex.run(x) == want


@pytest.fixture(scope="module")
def gemm_folder(tmp_path_factory):
    """conftest's residual net at 48x48 with 16 channels, compiled: its padded 3x3 convs are
    large enough for the integer GEMM (numerics/int8_gemm.py ``worth``)."""
    import onnx

    import tcc_compiler as tc
    from conftest import residual_net_impl

    d = tmp_path_factory.mktemp("gemm")
    onnx.save(residual_net_impl(hw=48, c=16), d / "m.onnx")
    tc.compile(str(d / "m.onnx"), "48x48x3").save(d / "out")
    return d / "out"


def test_kernels_switched_off_after_runs_keep_the_bytes(gemm_folder):
    """``jit.set_enabled(False)`` after runs that kept accumulator routines: the kept integer
    GEMM routines of padded convs made their patch matrix with the compiled im2col, which
    then returned None, and ONNX Runtime failed on a missing input (an internal error, found
    by the session-14 attack); the replay's plain steps decline, the kept routines must still
    give the numpy path's bytes."""
    from tcc_compiler.numerics import jit

    if not jit.available():
        pytest.skip("numba kernels not installed")
    from tcc_compiler.numerics.accumulator import GemmRoutine

    prog = load_program(gemm_folder)
    ex = prog.executor
    inputs = _inputs(ex.cmd.input_bytes, 2)
    for x in inputs:   # a recording run, then a replay is made
        ex.run(x)
    assert ex._replay is not None
    assert any(isinstance(r[3], GemmRoutine) and ex.cmd.commands[i].pads != (0, 0, 0, 0)
               for i, r in ex._ops.ready.items())   # a padded conv's kept GEMM routine
    old = jit.set_enabled(False)
    try:
        want = [Executor(ex.cmd, prog.weights, ex.target).run(x) for x in inputs]
        got = [ex.run(x) for x in inputs + inputs[:1]]
        got.append(ex.run(inputs[1], check=True))
    finally:
        jit.set_enabled(old)
    assert got == want + want[:1] + want[1:]
