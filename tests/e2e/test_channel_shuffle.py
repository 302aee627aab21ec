"""Channel shuffle (ShuffleNet's Reshape [N, g, C/g, H, W] -> Transpose(0, 2, 1, 3, 4) ->
Reshape [N, C, H, W]) as NPU data movement: one ``shuffle`` op (DMA only), executor == golden
bit for bit in stream order and in random legal interleavings, close to ONNX Runtime; the
float import matches ONNX Runtime exactly (a permutation)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

from tcc_compiler import api
from tcc_compiler.frontend import import_onnx
from tcc_compiler.interp import run_float
from tcc_compiler.ir.ops import Op
from tcc_compiler.numerics import channel_shuffle_order
from tcc_compiler.runtime import load_program
from tests.conftest import make_model_impl
from tests.helpers.exactness import assert_exact_and_hazard_free

N = helper.make_node
HW = 12


def _shuffle_nodes(x: str, y: str, c: int, g: int, hw: int = HW) -> tuple[list, dict]:
    return ([N("Reshape", [x, f"{y}_s5"], [f"{y}_5"]),
             N("Transpose", [f"{y}_5"], [f"{y}_t"], perm=[0, 2, 1, 3, 4]),
             N("Reshape", [f"{y}_t", f"{y}_s4"], [y])],
            {f"{y}_s5": np.array([1, g, c // g, hw, hw], np.int64),
             f"{y}_s4": np.array([1, c, hw, hw], np.int64)})


def _v2_unit() -> onnx.ModelProto:
    """ShuffleNetV2 unit (torchvision): split in halves, conv branch on one, concat, shuffle
    with 2 groups, then a conv reading the shuffled map."""
    r = np.random.default_rng(3)
    inits = {"w0": r.normal(0, 0.3, (8, 3, 3, 3)), "w1": r.normal(0, 0.3, (4, 4, 3, 3)),
             "w2": r.normal(0, 0.3, (6, 8, 1, 1)), "sp": np.array([4, 4], np.int64)}
    nodes = [N("Conv", ["x", "w0"], ["c0"], pads=[1] * 4), N("Relu", ["c0"], ["r0"]),
             N("Split", ["r0", "sp"], ["h0", "h1"], axis=1),
             N("Conv", ["h1", "w1"], ["b0"], pads=[1] * 4), N("Relu", ["b0"], ["b1"]),
             N("Concat", ["h0", "b1"], ["cat"], axis=1)]
    sh, si = _shuffle_nodes("cat", "shuf", 8, 2)
    return make_model_impl(nodes + sh + [N("Conv", ["shuf", "w2"], ["y"])], [1, 3, HW, HW],
                           {**inits, **si}, opset=17)


def _v1_unit() -> onnx.ModelProto:
    """ShuffleNet(v1)-like: conv to 12 channels, shuffle with 3 groups, conv."""
    r = np.random.default_rng(4)
    inits = {"w0": r.normal(0, 0.3, (12, 3, 3, 3)), "w1": r.normal(0, 0.3, (5, 12, 3, 3))}
    nodes = [N("Conv", ["x", "w0"], ["c0"], pads=[1] * 4), N("Relu", ["c0"], ["r0"])]
    sh, si = _shuffle_nodes("r0", "shuf", 12, 3)
    return make_model_impl(nodes + sh + [N("Conv", ["shuf", "w1"], ["y"], pads=[1] * 4)],
                           [1, 3, HW, HW], {**inits, **si}, opset=17)


CASES = {"v2_unit": _v2_unit, "v1_unit_g3": _v1_unit}


def _inputs(seeds) -> list[np.ndarray]:
    return [np.random.default_rng(s).normal(0, 1, (1, 3, HW, HW)).astype(np.float32)
            for s in seeds]


def test_shuffle_order():
    # 6 channels, 2 groups: [a0 a1 a2 | b0 b1 b2] -> [a0 b0 a1 b1 a2 b2]
    assert channel_shuffle_order(6, 2).tolist() == [0, 3, 1, 4, 2, 5]


@pytest.mark.parametrize("case", sorted(CASES))
def test_float_import_is_one_shuffle_and_matches_ort(case):
    model = CASES[case]()
    g = import_onnx(model)
    assert [n.op for n in g.nodes].count(Op.SHUFFLE) == 1
    assert not any(n.op in (Op.RESHAPE, Op.TRANSPOSE) for n in g.nodes)
    x = _inputs([0])[0]
    ref = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_allclose(run_float(g, x)[g.outputs[0].name], ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("case", sorted(CASES))
def test_shuffle_bit_exact_hazard_free_and_accurate(tmp_path, case):
    model = CASES[case]()
    onnx.save(model, tmp_path / "m.onnx")
    m = api.compile(model, f"{HW}x{HW}x3", calibration=_inputs(range(8)))
    prog = load_program(m.save(tmp_path / "out"))
    (lay,) = [lay for lay in m.report["layers"] if lay["op"] == "shuffle"]
    assert "DMA only" in lay["tiling"]
    assert_exact_and_hazard_free(prog, tmp_path / "m.onnx", _inputs(range(3)), case)
