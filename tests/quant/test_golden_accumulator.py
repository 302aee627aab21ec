"""The golden model picks each conv's accumulator routine once per node and input shape
(quant/golden.py ``conv_accumulator``, numerics/accumulator.py) instead of re-deriving the
route on every call, with the same bytes."""

from __future__ import annotations

import numpy as np
import pytest

from tcc_compiler.ir.ops import Op
from tcc_compiler.ir.text import load_ir
from tcc_compiler.numerics import int8_gemm, jit
from tcc_compiler.quant import golden


def _graph_and_inputs(small_folder):
    _, out = small_folder
    graph = load_ir(out / "quantized.tir")
    rng = np.random.default_rng(5)
    xs = [rng.standard_normal((1, 3, 16, 16)).astype(np.float32) for _ in range(3)]
    return graph, xs


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.skipif(not jit.available() or int8_gemm.int8_session() is None,
                    reason="the routines need the compiled kernels and the exact int8 GEMM")
def test_repeat_runs_use_the_routines_chosen_once(small_folder, monkeypatch):
    monkeypatch.setattr(int8_gemm, "MIN_MACS", 0)   # this small net's GEMMs take that route
    graph, xs = _graph_and_inputs(small_folder)
    gm = golden.GoldenModel(graph)
    first = gm.run(xs[0], keep=True)
    convs = [n for n in graph.nodes if n.op in (Op.CONV, Op.FC)]
    assert convs and all(gm._acc_fn(n, np.zeros(gm._acc[id(n)][0][0], np.int8))[0] is not None
                         for n in convs)
    calls = []
    real = golden.conv_accumulate_f

    def counted(*args, **kw):
        calls.append(args)
        return real(*args, **kw)

    monkeypatch.setattr(golden, "conv_accumulate_f", counted)
    monkeypatch.setattr(golden, "accumulator", lambda *a, **k: pytest.fail("chosen again"))
    again = [gm.run(x, keep=True) for x in xs]
    assert calls == []   # every conv ran its routine, none re-derived its route
    assert _same(again[0], first)
    # the bytes equal the per-call route's (conv_accumulate_f on every call)
    monkeypatch.setattr(golden.GoldenModel, "_acc_fn", lambda self, node, x: (None, None, None))
    per_call = [golden.GoldenModel(graph).run(x, keep=True) for x in xs]
    assert calls and all(_same(a, b) for a, b in zip(again, per_call))


def test_no_routine_for_a_wide_input(small_folder):
    # int16 activations take conv_accumulate_f's float64 route: no routine
    graph, _ = _graph_and_inputs(small_folder)
    conv = next(n for n in graph.nodes if n.op is Op.CONV)
    prepared = golden.prepare_conv(conv)
    x16 = np.zeros((16, 16, conv.inputs[1].const.shape[1]), np.int16)
    assert golden.conv_accumulator(conv, x16, prepared) is None


def test_prepared_tuples_are_used_as_given(small_folder, monkeypatch):
    # GoldenModel(prepared=...) takes a caller's prepare_conv results (bias correction's error
    # pass made them for the same constants) instead of preparing those nodes again: the
    # same outputs, no second prepare_conv of them
    graph, xs = _graph_and_inputs(small_folder)
    convs = [n for n in graph.nodes if n.op in (Op.CONV, Op.FC)]
    made = {n.name: golden.prepare_conv(n) for n in convs}
    want = golden.GoldenModel(graph).run(xs[0], keep=True)
    monkeypatch.setattr(golden, "prepare_conv", lambda *a, **k: pytest.fail("prepared again"))
    gm = golden.GoldenModel(graph, prepared=made)
    assert _same(gm.run(xs[0], keep=True), want)


@pytest.mark.skipif(not jit.available() or int8_gemm.int8_session() is None,
                    reason="the routines need the compiled kernels and the exact int8 GEMM")
def test_a_repeat_model_packs_its_small_gemms(small_folder, monkeypatch):
    """GoldenModel(repeat=True) (run --check's) runs each GEMM of at most PACKED_MAX_ROWS
    rows on weights packed once (numerics/accumulator.packed), with the bytes of the model
    packing them on every call; a model made without it packs nothing."""
    from tcc_compiler.numerics import accumulator
    from tcc_compiler.numerics.accumulator import GemmRoutine, PackedGemmRoutine

    monkeypatch.setattr(int8_gemm, "MIN_MACS", 0)   # this small net's GEMMs take that route
    monkeypatch.setattr(accumulator, "PACKED_MAX_ROWS", 10 ** 6)   # every GEMM: few rows
    graph, xs = _graph_and_inputs(small_folder)
    plain = golden.GoldenModel(graph)
    want = [plain.run(x, keep=True) for x in xs]
    gm = golden.GoldenModel(graph, repeat=True)
    got = [gm.run(x, keep=True) for x in xs]
    assert all(_same(a, b) for a, b in zip(got, want))
    routines = [gm._acc[k][1] for k in gm._acc]
    assert routines and all(type(r) is PackedGemmRoutine and r.run for r in routines
                            if isinstance(r, GemmRoutine))
    assert any(type(r) is PackedGemmRoutine for r in routines)
    assert not any(type(plain._acc[k][1]) is PackedGemmRoutine for k in plain._acc)
