"""The calibration pass on worker threads (quant/calibrate_run.py): the same observers, the
same GPTQ second moments and the same errors as one value at a time."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from tcc_compiler.errors import InputError, ModelError
from tcc_compiler.frontend import import_onnx
from tcc_compiler.passes import PassManager, default_pipeline
from tcc_compiler.quant import calibrate_run
from tcc_compiler.quant.calibrate import observe
from tcc_compiler.quant.weight_rounding import HessianSum


def _float_graph(residual_net):
    g = import_onnx(residual_net(seed=3, hw=32))
    return PassManager(default_pipeline()).run(g)


def _inputs(n, seed=0, shape=(1, 3, 32, 32)):
    r = np.random.default_rng(seed)
    return [r.standard_normal(shape).astype(np.float32) for _ in range(n)]


def _run(graph, xs, monkeypatch, workers, overlap_bytes):
    monkeypatch.setattr(calibrate_run, "workers", lambda: workers)
    monkeypatch.setattr("tcc_compiler.quant.calibrate.OVERLAP_BYTES", overlap_bytes)
    hess = HessianSum(graph, bounded=False)
    return observe(graph, xs, ["mse", "percentile"], also=hess.visit), hess


@pytest.mark.parametrize("workers,overlap", [(2, 1 << 30), (3, 0)])
def test_threads_give_the_serial_results_bit_for_bit(residual_net, monkeypatch, workers,
                                                     overlap):
    graph = _float_graph(residual_net)
    xs = _inputs(5)
    want_obs, want_h = _run(graph, xs, monkeypatch, 1, 0)
    got_obs, got_h = _run(graph, xs, monkeypatch, workers, overlap)
    for m, table in want_obs.items():
        assert list(got_obs[m]) == list(table)          # the table order too
        for name, o in table.items():
            g = got_obs[m][name]
            assert g.mm.range() == o.mm.range(), (m, name)
            assert g.hist.lo == o.hist.lo and g.hist.width == o.hist.width, (m, name)
            np.testing.assert_array_equal(g.hist.counts, o.hist.counts)
    assert want_h.hess.keys() == got_h.hess.keys() and want_h.hess
    for name, h in want_h.hess.items():
        np.testing.assert_array_equal(got_h.hess[name], h)


def test_earliest_error_wins(make_model, monkeypatch):
    """An overflow on input 1 is reported before input 2's bad shape, as the serial loop
    reports it (the next input is read and run while input 1 is observed)."""
    monkeypatch.setattr(calibrate_run, "workers", lambda: 2)
    g = import_onnx(make_model([helper.make_node("Relu", ["x"], ["y"])], [1, 2, 8, 8]))
    xs = _inputs(3, shape=(1, 2, 8, 8))
    xs[1][0, 0, 0, 0] = 1e37
    xs[2] = xs[2][:, :1]
    with pytest.raises(ModelError, match="calibration input 1"):
        observe(g, xs, ["minmax"])
    xs[1][0, 0, 0, 0] = 0.0
    with pytest.raises(InputError, match="calibration input 2: shape"):
        observe(g, xs, ["minmax"])


def test_workers_capped():
    assert 1 <= calibrate_run.workers() <= calibrate_run.MAX_WORKERS


def test_layers_reading_one_value_through_one_window_share_h(make_model):
    """Two 1x1 convs on the same input share one H (built once), equal to each one's own;
    a 3x3 conv on that input keeps its own."""
    r = np.random.default_rng(2)
    inits = {f"w{i}": r.standard_normal((4, 3, k, k)).astype(np.float32)
             for i, k in enumerate((1, 1, 3))}
    nodes = [helper.make_node("Conv", ["x", "w0"], ["a"]),
             helper.make_node("Conv", ["x", "w1"], ["b"]),
             helper.make_node("Conv", ["x", "w2"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["a", "b"], ["ab"]),
             helper.make_node("Add", ["ab", "c"], ["y"])]
    g = import_onnx(make_model(nodes, [1, 3, 6, 6], inits))
    hess = HessianSum(g, bounded=False)
    x = _inputs(1, shape=(1, 3, 6, 6))[0]
    for _ in range(2):
        hess.visit(g.inputs[0].name, x)
    convs = [n for n in g.nodes if n.op.name == "CONV"]
    h = [hess.hess[n.name] for n in convs]
    assert h[0] is h[1] and h[2] is not h[0] and h[2].shape == (1, 27, 27)
    cols = x.reshape(1, 3, 36).astype(np.float64)
    # the two inputs' 36 columns are gathered into one product (HessianSum.BATCH_COLUMNS):
    # the same sum in another order
    np.testing.assert_allclose(h[0], 2 * (cols @ cols.transpose(0, 2, 1)), rtol=1e-13)


def test_errors_name_the_calibration_file(make_model, tmp_path):
    """An overflow or a bad value names the file the input came from (array j of a .npy
    holding several), not only its index (attack10)."""
    from tcc_compiler.datasets.calibration import resolve_calibration

    g = import_onnx(make_model([helper.make_node("Relu", ["x"], ["y"])], [1, 2, 8, 8]))
    xs = np.stack([x[0] for x in _inputs(3, shape=(1, 2, 8, 8))])
    ok, big = tmp_path / "ok.npy", tmp_path / "big.npy"
    np.save(ok, xs[:1])
    xs[2, 0, 0, 0] = 1e37
    np.save(big, xs)
    inputs, _ = resolve_calibration([str(ok), str(big)], g, None)
    with pytest.raises(ModelError, match=r"on calibration input 3 \(.*big\.npy\[2\]\) "):
        observe(g, inputs, ["minmax"])
    with pytest.raises(ModelError, match=r"on calibration input 2 \(.*big\.npy\[2\]\)"):
        observe(g, resolve_calibration([str(big)], g, None)[0], ["minmax"])
    xs[2, 0, 0, 0] = np.nan     # refused when read: the message names the file too
    np.save(big, xs)
    with pytest.raises(InputError, match=r"big\.npy"):
        observe(g, resolve_calibration([str(big)], g, None)[0], ["minmax"])


def test_largest_values_are_visited_first():
    """One input's visits go to the workers largest array first (none of the long ones starts
    last and runs alone); the futures come back in the values' order, the order errors are
    raised in."""
    from concurrent.futures import Future

    class Pool:
        def __init__(self):
            self.order = []

        def submit(self, fn, name, arr, k):
            self.order.append(name)
            f = Future()
            f.set_result(fn(name, arr, k))
            return f

    values = [(n, np.zeros(s, np.float32)) for n, s in
              [("in", 12), ("a", 300), ("b", 5), ("c", 4000), ("d", 300)]]
    pool = Pool()
    got = calibrate_run._submit_largest_first(pool, lambda n, a, k: (n, k), values, 7)
    assert pool.order == ["c", "a", "d", "in", "b"]
    assert [f.result() for f in got] == [(n, 7) for n, _ in values]
