"""sim/gemm_groups.py + the replay: tiles that split one layer's output channels and read one
input share one integer GEMM on repeat in-order runs, with the bytes of a fresh executor; a
write to the input between two tiles keeps them apart."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tcc_compiler.numerics import int8_gemm, jit
from tcc_compiler.numerics.accumulator import GemmRoutine
from tcc_compiler.runtime import load_program
from tcc_compiler.sim import Executor
from tcc_compiler.sim.gemm_groups import shared_input_groups


def _wide_head(c: int = 64, o: int = 1280, nc: int = 1000, hw: int = 7) -> onnx.ModelProto:
    """3x3 conv 3 -> c, ReLU, 1x1 conv c -> o, ReLU, global average pool, classifier o -> nc
    (as EfficientNet-Lite0's tail): the 1x1's and the classifier's weights exceed one tile,
    the classifier's tiles give int32 outputs, its last tile (1000 = 15 x 64 + 40) fewer
    multiply-accumulates than a per-call integer GEMM is worth (int8_gemm.MIN_MACS)."""
    r = np.random.default_rng(0)
    w1 = numpy_helper.from_array(r.standard_normal((c, 3, 3, 3)).astype(np.float32) * .3, "w1")
    w2 = numpy_helper.from_array(r.standard_normal((o, c, 1, 1)).astype(np.float32) * .1, "w2")
    wf = numpy_helper.from_array(r.standard_normal((nc, o)).astype(np.float32) * .05, "wf")
    bf = numpy_helper.from_array(r.standard_normal(nc).astype(np.float32) * .1, "bf")
    nodes = [helper.make_node("Conv", ["x", "w1"], ["h"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["h"], ["hr"]),
             helper.make_node("Conv", ["hr", "w2"], ["y0"]),
             helper.make_node("Relu", ["y0"], ["y1"]),
             helper.make_node("GlobalAveragePool", ["y1"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "wf", "bf"], ["y"], transB=1)]
    g = helper.make_graph(
        nodes, "wide_head", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, hw, hw])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, nc])], [w1, w2, wf, bf])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


@pytest.fixture(scope="module")
def wide_folder(tmp_path_factory):
    import tcc_compiler as tc

    d = tmp_path_factory.mktemp("wide")
    onnx.save(_wide_head(), d / "m.onnx")
    r = np.random.default_rng(1)
    calib = [r.uniform(-1, 1, (1, 3, 7, 7)).astype(np.float32) for _ in range(2)]
    return tc.compile(str(d / "m.onnx"), "7x7x3", calibration=calib).save(d / "out")


@pytest.mark.skipif(not jit.available() or int8_gemm.int8_session() is None,
                    reason="the shared GEMM needs the compiled kernels and the exact int8 GEMM")
def test_split_layer_shares_one_gemm_with_fresh_bytes(wide_folder, monkeypatch):
    prog = load_program(wide_folder)
    ex = prog.executor
    rng = np.random.default_rng(3)
    inputs = [rng.integers(0, 256, ex.cmd.input_bytes, dtype=np.uint8).tobytes()
              for _ in range(4)]
    for x in inputs[:2]:
        ex.run(x)
    groups = ex._replay.groups
    assert groups and max(len(g) for g in groups) >= 3
    int32_out = {i for i, r in ex._ops.ready.items() if r[0].cfg.out_mode == 1}
    assert any(set(g) <= int32_out for g in groups)   # the classifier's tiles, grouped too
    calls = []
    sess = int8_gemm.int8_session()
    real = sess.run

    def counted(names, feeds):
        calls.append(feeds["b"].shape)
        return real(names, feeds)
    monkeypatch.setattr(sess, "run", counted)
    got = []
    for k, x in enumerate(inputs * 2):   # replays with a random-order run between
        got.append(ex.run(x, **({"schedule": "random", "seed": k} if k == 5 else {})))
    replays = 7
    tiles = sum(isinstance(r[3], GemmRoutine) for r in ex._ops.ready.values())
    grouped = sum(len(g) - 1 for g in groups)
    assert len(calls) <= replays * (tiles - grouped) + tiles   # the random run: one per tile
    monkeypatch.setattr(sess, "run", real)
    want = [Executor(ex.cmd, prog.weights, ex.target).run(x, check=True) for x in inputs]
    assert got == want + want


@pytest.fixture(scope="module")
def small_classifier_folder(tmp_path_factory):
    """_wide_head with a classifier of 40 classes: one tile of 1x1280x40 multiply-accumulates,
    fewer than a per-call integer GEMM is worth (int8_gemm.MIN_MACS)."""
    import tcc_compiler as tc

    d = tmp_path_factory.mktemp("small_cls")
    onnx.save(_wide_head(nc=40), d / "m.onnx")
    r = np.random.default_rng(1)
    calib = [r.uniform(-1, 1, (1, 3, 7, 7)).astype(np.float32) for _ in range(2)]
    return tc.compile(str(d / "m.onnx"), "7x7x3", calibration=calib).save(d / "out")


@pytest.mark.skipif(not jit.available() or int8_gemm.int8_session() is None,
                    reason="the routes need the compiled kernels and the exact int8 GEMM")
@pytest.mark.parametrize("folder", ["wide_folder", "small_classifier_folder"])
def test_classifier_tiles_take_the_integer_gemm_and_int32_steps(folder, request, monkeypatch):
    """Every classifier tile (one row, int32 output) takes the integer GEMM, a small one too
    (its weights are packed once: no per-call threshold applies), and a plain step (the
    accumulator plus the bias in int32 into the output box): repeat runs never reach
    conv_result for them, grouped or not; the bytes are a fresh executor's."""
    from tcc_compiler.sim import executor as executor_mod

    prog = load_program(request.getfixturevalue(folder))
    ex = prog.executor
    rng = np.random.default_rng(5)
    inputs = [rng.integers(0, 256, ex.cmd.input_bytes, dtype=np.uint8).tobytes()
              for _ in range(3)]
    got = [ex.run(x) for x in inputs[:2]]
    cls = sorted(i for i, r in ex._ops.ready.items() if r[0].cfg.out_mode == 1)
    assert cls
    if folder == "small_classifier_folder":
        assert cls and ex._ops.ready[cls[0]][0].macs < int8_gemm.MIN_MACS
    else:
        assert cls in ex._replay.groups
    assert all(isinstance(ex._ops.ready[i][3], GemmRoutine) for i in cls)
    assert all(ex._ops.ready[i][4] is not None for i in cls)
    general = []
    real = executor_mod.conv_result

    def counted(pl, *args, **kw):
        general.append(pl.cfg.out_mode)
        return real(pl, *args, **kw)

    monkeypatch.setattr(executor_mod, "conv_result", counted)
    got += [ex.run(x) for x in inputs]
    assert 1 not in general
    want = [Executor(ex.cmd, prog.weights, ex.target).run(x, check=True) for x in inputs]
    assert got == want[:2] + want


def _tile(sram, lo: int, n: int, key=("k",)):
    x = sram.arr[lo:lo + n].reshape(1, 1, n)
    pl = SimpleNamespace(sram=sram, x=x)
    routine = GemmRoutine(lambda v: v, np.zeros((n, 1), np.int8), 0, (1, 1, 1), key)
    return (pl, None, None, routine, lambda: True)


def test_a_write_into_the_input_between_tiles_keeps_them_apart():
    sram = SimpleNamespace(arr=np.zeros(1024, np.uint8))
    ready = {1: _tile(sram, 100, 64), 3: _tile(sram, 100, 64), 5: _tile(sram, 100, 64),
             7: _tile(sram, 100, 64), 8: _tile(sram, 100, 64, key=("other",))}
    ready[3] = ready[3][:4] + (None,)   # no plain step: grouped all the same
    writes = {1: ((500, 564), None), 2: ((0, 64), None), 3: ((600, 664), None),
              4: ((160, 170), None), 5: ((700, 764), None), 6: ((0, 10), None),
              7: ((800, 864), None), 8: ((900, 964), None)}
    order = list(range(1, 9))
    assert shared_input_groups(order, ready, writes, lambda i: True) == [[1, 3], [5, 7]]
    no_view = ready[7][0]
    ready[7] = (SimpleNamespace(sram=sram, x=None),) + ready[7][1:]   # input read anew
    assert shared_input_groups(order, ready, writes, lambda i: True) == [[1, 3]]
    ready[7] = (no_view,) + ready[7][1:]
    del writes[6]   # a command whose writes are unknown ends every group
    assert shared_input_groups(order, ready, writes, lambda i: True) == [[1, 3]]
    writes[6] = None   # a register command: no writes
    assert shared_input_groups(order, ready, writes, lambda i: i != 6) == [[1, 3], [5, 7]]
