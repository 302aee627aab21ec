"""The collapse guard (tcc_compiler.quant.ranges): a method's range that keeps a sliver of a
tensor's observed span, or whose quantization error is far worse than min-max's, is rejected
with a warning naming the tensor. The collapse is reproduced, not assumed: entropy calibration
on a sparse post-ReLU tensor (most values tiny, 0.2 % spread up to the maximum) clips to under
2 % of the span, as it did on a real MobileNetV1 (issue #14)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from tcc_compiler.quant.calibrate import (EntropyObserver, MinMaxObserver, MSEObserver,
                                          PercentileObserver, collect_ranges)
from tcc_compiler.quant.ranges import (GUARD_MIN_KEPT, choose_ranges, guard_reason,
                                       range_errors)


def _sparse_relu(seed: int = 0, n: int = 200_000, tail: float = 0.002) -> np.ndarray:
    """ReLU(N(0, 1)) * 0.05 with a fraction ``tail`` of the values uniform on [0, 10]."""
    r = np.random.default_rng(seed)
    x = np.maximum(r.standard_normal(n), 0.0) * 0.05
    k = int(tail * n)
    x[:k] = r.uniform(0.0, 10.0, k)
    return x.astype(np.float32)


def _quant_mse(x: np.ndarray, lo: float, hi: float) -> float:
    """Actual mean squared error of asymmetric int8 fake-quantization of ``x`` on [lo, hi]
    (zero on the grid), computed on the values themselves (no histogram)."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    s = (hi - lo) / 255.0
    zp = np.round(-128 - lo / s)
    q = np.clip(np.round(x / s) + zp, -128, 127)
    return float(np.mean(((q - zp) * s - x.astype(np.float64)) ** 2))


def test_entropy_collapse_is_reproduced_and_rejected(caplog):
    x = _sparse_relu()
    ent = EntropyObserver()
    ent.update(x)
    lo, hi = ent.range()
    assert hi < 0.02 * float(x.max())                    # the collapse happens
    assert _quant_mse(x, lo, hi) > 20 * _quant_mse(x, 0.0, float(x.max()))
    with caplog.at_level(logging.WARNING, logger="tcc_compiler.quant.ranges"):
        ranges, rejected = choose_ranges({"conv3/relu_out": ent}, "entropy")
    assert list(rejected) == ["conv3/relu_out"] and "observed range" in rejected["conv3/relu_out"]
    msg = caplog.text
    assert "conv3/relu_out" in msg and "entropy" in msg and "rejected" in msg
    glo, ghi = ranges["conv3/relu_out"]
    # the replacement is no worse than min-max on the real values
    assert _quant_mse(x, glo, ghi) <= _quant_mse(x, 0.0, float(x.max())) * 1.01


def test_error_rule_rejects_a_range_far_worse_than_minmax():
    """A range keeping > 5 % of the span but clipping a heavy tail: rejected by error alone."""
    x = _sparse_relu(tail=0.05)
    obs = MSEObserver()
    obs.update(x)
    mx = float(x.max())
    bad = (0.0, 0.1 * mx)
    assert bad[1] / mx > GUARD_MIN_KEPT
    why = guard_reason(obs, *bad)
    assert why is not None and "min-max" in why
    # the histogram's error estimate agrees with the real error (of the non-zero values, the
    # zeros being exact) within 10 %
    est = range_errors(obs, np.array([bad[0], 0.0]), np.array([bad[1], mx]))
    nz = x[x != 0]
    real = [_quant_mse(nz, *bad), _quant_mse(nz, 0.0, mx)]
    np.testing.assert_allclose(est, real, rtol=0.1)


@pytest.mark.parametrize("make", [MSEObserver, lambda: PercentileObserver(99.99),
                                  EntropyObserver, MinMaxObserver])
def test_sound_ranges_pass_untouched(make):
    """On a Gaussian and a ReLU'd Gaussian every method's own range is kept as it is."""
    r = np.random.default_rng(4)
    for x in (r.standard_normal(100_000), np.maximum(r.standard_normal(100_000), 0.0)):
        obs = make()
        obs.update(x.astype(np.float32))
        ranges, rejected = choose_ranges({"t": obs}, "m")
        assert not rejected and ranges["t"] == obs.range()


def test_collect_ranges_guards_a_real_graph(make_model, caplog):
    """Through calibration of a graph (1x1 conv + ReLU, identity weights): the conv output
    named in the warning, its range wide."""
    from onnx import helper

    from tcc_compiler.driver import import_model, run_float_passes

    w = np.ones((1, 1, 1, 1), np.float32)
    model = make_model([helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[1, 1]),
                        helper.make_node("Relu", ["c"], ["y"])], [1, 1, 100, 100],
                       {"w": w})
    fg = run_float_passes(*import_model(model, "100x100x1")).graph
    xs = [a.reshape(1, 1, 100, 100) for a in np.split(_sparse_relu(n=100_000), 10)]
    with caplog.at_level(logging.WARNING, logger="tcc_compiler.quant.ranges"):
        ranges = collect_ranges(fg, xs, "entropy")
    out = fg.nodes[-1].output.name
    assert f"'{out}'" in caplog.text
    assert ranges[out][1] > 0.5 * max(float(x.max()) for x in xs)
