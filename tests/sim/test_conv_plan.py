"""A CONV_TILE's plan (checks, output size, SRAM operand views) is made once per command and
reused on later runs over the same, refilled SRAM (tcc_compiler/sim/conv_tile.py); the
epilogue's checked-once kernel call (numerics/jit.epilogue_into) gives the int64 definition's
bytes; the integer GEMM's direct binding call is used only when it passes the probe."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from tcc_compiler.numerics import int8_gemm as I
from tcc_compiler.numerics import jit
from tcc_compiler.numerics.epilogue import conv_epilogue_int64
from tcc_compiler.runtime import load_program
from tcc_compiler.sim import executor as E
from tcc_compiler.sim.executor import Executor


def test_plans_made_once_and_reused_across_runs(small_folder, monkeypatch):
    _, out = small_folder
    prog = load_program(out)
    ex = Executor(prog.cmd, prog.weights, prog.target, fill=0xA5)
    made = []
    real = E.make_plan

    def counting(*args):
        made.append(args[0])
        return real(*args)

    monkeypatch.setattr(E, "make_plan", counting)
    rng = np.random.default_rng(0)
    xs = [rng.integers(0, 256, prog.cmd.input_bytes, dtype=np.uint8).tobytes()
          for _ in range(3)]
    first = ex.run(xs[0])
    n_tiles = len(made)
    assert n_tiles and n_tiles == len(set(made))    # one plan per CONV_TILE
    plans = dict(ex._plans)
    srams = list(ex._srams)
    outs = [ex.run(x) for x in xs]
    assert len(made) == n_tiles                     # no plan made again
    assert all(ex._plans[i] is p for i, p in plans.items())
    assert all(a is b for a, b in zip(ex._srams, srams))
    fresh = Executor(ex.cmd, prog.weights, prog.target, fill=0xA5)
    assert outs[0] == first
    assert outs == [fresh.run(x) for x in xs]


def test_kept_sram_is_refilled(small_folder):
    _, out = small_folder
    prog = load_program(out)
    ex = Executor(prog.cmd, prog.weights, prog.target, fill=0xA5)
    ex.run(bytes(ex.cmd.input_bytes))
    sram = ex._srams[0]
    sram.arr[:] = 7                                 # what a run leaves behind
    ex._fresh_srams(1)
    assert ex._srams[0] is sram and (sram.arr == 0xA5).all()


@pytest.mark.skipif(not jit.available(), reason="numba kernels not installed")
@pytest.mark.parametrize("with_sc", [False, True])
def test_epilogue_into_matches_the_definition(with_sc):
    rng = np.random.default_rng(3)
    o = 24
    acc = rng.integers(-2 ** 31, 2 ** 31, (5, 6, o), dtype=np.int64).astype(np.int32)
    bias = rng.integers(-2 ** 20, 2 ** 20, o).astype(np.int32)
    mult = rng.integers(1, 2 ** 31, o).astype(np.int32)
    shift = rng.integers(20, 45, o).astype(np.int8)
    sc_mult = rng.integers(1, 2 ** 31, o).astype(np.int32)
    buf = rng.integers(-128, 128, 5 * 8 * 40, dtype=np.int64).astype(np.int8)
    out = np.ndarray((5, 6, o), np.int8, buf, 3, (8 * 40, 40, 1))   # a strided SRAM box
    sc = out if with_sc else None                    # the shortcut in place (same elements)
    want = conv_epilogue_int64(acc, bias, mult, shift, 4, -100, 120,
                               None if sc is None else sc.copy(), -3,
                               sc_mult if with_sc else None, np.int8)
    assert jit.out_fits(out, acc.shape, np.int8, sc)
    params = jit.epilogue_params(bias, mult, shift, sc_mult if with_sc else None)
    got = jit.epilogue_into(acc, params, 4, -100, 120, sc, -3, out)
    assert got is out
    np.testing.assert_array_equal(out, want)


def test_out_fits_refuses_overlap_and_wrong_layouts():
    buf = np.zeros(400, np.int8)
    out = np.ndarray((2, 3, 4), np.int8, buf, 0, (40, 8, 1))
    shifted = np.ndarray((2, 3, 4), np.int8, buf, 1, (40, 8, 1))
    assert jit.out_fits(out, (2, 3, 4), np.int8, None)
    assert not jit.out_fits(out, (2, 3, 4), np.int8, shifted)     # overlaps, not the same
    assert not jit.out_fits(out, (2, 3, 5), np.int8, None)
    assert not jit.out_fits(out, (2, 3, 4), np.int16, None)
    assert not jit.out_fits(out[None], (1, 2, 3, 4), np.int8, None)
    ro = out.view()
    ro.flags.writeable = False
    assert not jit.out_fits(ro, (2, 3, 4), np.int8, None)


class _Binding:
    """Stands in for a session's private binding: exact, or adding 1 to every sum."""

    def __init__(self, off: int):
        self.off = off

    def run(self, names, feeds, options):
        a = feeds["a"].astype(np.int64) - int(feeds["za"])
        return [(a @ feeds["b"].astype(np.int64) + self.off).astype(np.int32)]


def test_direct_binding_used_only_when_exact():
    public = SimpleNamespace(run=lambda names, feeds: None)
    exact = SimpleNamespace(run=public.run, _sess=_Binding(0))
    assert I._direct_run(exact) is not exact                     # the binding, probed exact
    wrong = SimpleNamespace(run=public.run, _sess=_Binding(1))
    assert I._direct_run(wrong) is wrong                         # fails the probe: public run
    assert I._direct_run(public) is public                       # no binding


@pytest.mark.parametrize("fill", [0, 0xA5])
def test_small_dram_regions_kept_and_refilled(small_folder, monkeypatch, fill):
    """ACT and OUTPUT (at most run_loop.REUSE_DRAM_MAX bytes) are the previous run's memories,
    refilled with ``fill`` (a new mmap costs a page fault per written page); a larger region
    is mapped anew; the bytes are a fresh executor's either way."""
    from tcc_compiler.isa import spec
    from tcc_compiler.sim import run_loop

    _, out = small_folder
    prog = load_program(out)
    ex = Executor(prog.cmd, prog.weights, prog.target, fill=fill)
    rng = np.random.default_rng(1)
    xs = [rng.integers(0, 256, prog.cmd.input_bytes, dtype=np.uint8).tobytes()
          for _ in range(3)]
    got = [ex.run(xs[0])]
    act, output = ex._dram[spec.Region.ACT], ex._dram[spec.Region.OUTPUT]
    act.arr[:] = 7                                   # what a run leaves behind
    output.arr[:] = 7
    got += [ex.run(x) for x in xs[1:]]
    assert ex._dram[spec.Region.ACT] is act and ex._dram[spec.Region.OUTPUT] is output
    ex._fresh_dram("ACT", act.size)
    assert (act.arr == fill).all()
    monkeypatch.setattr(run_loop, "REUSE_DRAM_MAX", 0)   # nothing small enough: new maps
    big = Executor(prog.cmd, prog.weights, prog.target, fill=fill)
    big.run(xs[0])
    kept = big._dram[spec.Region.OUTPUT]
    got_big = big.run(xs[1])
    assert big._dram[spec.Region.OUTPUT] is not kept
    fresh = [Executor(prog.cmd, prog.weights, prog.target, fill=fill).run(x) for x in xs]
    assert got == fresh and got_big == fresh[1]
