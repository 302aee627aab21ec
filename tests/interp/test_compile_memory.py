"""Compile memory (issue #16 item 1): calibration keeps the live activations only, never a
float copy of every activation, and the up-front estimate is an upper bound of the measured
peak RSS."""

from __future__ import annotations

import resource
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tcc_compiler.driver import import_model, run_float_passes
from tcc_compiler.interp.memory import estimate_compile_memory
from tcc_compiler.quant.calibrate import observe

ROOT = Path(__file__).resolve().parents[2]


def _chain(n_convs: int, c: int = 8, k: int = 3) -> onnx.ModelProto:
    """x [1, 3, H, W] -> n_convs kxk convs of c channels (same padding, Relu) -> y."""
    rng = np.random.default_rng(0)
    nodes, inits, prev, cin = [], [], "x", 3
    for i in range(n_convs):
        w = (rng.standard_normal((c, cin, k, k)) * 0.3).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("Conv", [prev, f"w{i}"], [f"c{i}"], pads=[k // 2] * 4))
        out = "y" if i == n_convs - 1 else f"r{i}"
        nodes.append(helper.make_node("Relu", [f"c{i}"], [out]))
        prev, cin = out, c
    g = helper.make_graph(nodes, "chain",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, "H", "W"])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                                         [1, c, "H", "W"])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def test_calibration_holds_live_activations_only(monkeypatch):
    """12 1x1 convs of 8 x 256 x 256 float32 (2 MiB each, 24 MiB in all): calibrating two
    inputs must peak below that sum (it held every activation and the observers' float64
    copies: 62 MiB; now 18 MiB). Values beyond ORT_OUTPUT_BYTES (lowered here to 16 MiB)
    are streamed by the interpreter, not returned at once by ONNX Runtime."""
    from tcc_compiler.interp import onnx_float

    monkeypatch.setattr(onnx_float, "ORT_OUTPUT_BYTES", 16 << 20)
    g, passes = import_model(_chain(12, k=1), "256x256x3")
    g = run_float_passes(g, passes).graph
    act = 8 * 256 * 256 * 4
    xs = [np.random.default_rng(k).standard_normal((1, 3, 256, 256)).astype(np.float32)
          for k in range(2)]
    tracemalloc.start()
    try:
        observe(g, xs, ["mse"])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 12 * act, f"calibration peaked at {peak / 2**20:.1f} MiB"


def test_observed_ranges_do_not_depend_on_streaming():
    """Chunked observers give the same ranges as one pass over the whole value."""
    from tcc_compiler.quant import calibrate as cal

    x = np.random.default_rng(1).standard_normal((1, 4, 300, 300)).astype(np.float32) * 3
    ref = {}
    for m in ("mse", "percentile", "entropy", "minmax"):
        o = cal.make_observer(m)
        o.update(x)
        ref[m] = o.range()
    old = cal.CHUNK_ELEMS
    cal.CHUNK_ELEMS = 1000
    try:
        for m in ref:
            o = cal.make_observer(m)
            o.update(x)
            assert o.range() == ref[m], m
    finally:
        cal.CHUNK_ELEMS = old


_MEASURE = textwrap.dedent("""
    import resource, subprocess, sys
    subprocess.run([sys.executable, "-m", "tcc_compiler.cli.main", "-q", "compile", sys.argv[1],
                    "--input", sys.argv[2], "-o", sys.argv[3]], check=True,
                   stdout=subprocess.DEVNULL)
    print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)
""")


@pytest.mark.slow
@pytest.mark.parametrize("size", ["1024x1024x3", "2048x2048x3"])
def test_estimate_is_an_upper_bound_of_peak_rss(size, tmp_path):
    path = tmp_path / "chain.onnx"
    onnx.save(_chain(2, 16), str(path))
    g, passes = import_model(str(path), size)
    need, _ = estimate_compile_memory(run_float_passes(g, passes).graph)
    out = subprocess.run([sys.executable, "-c", _MEASURE, str(path), size,
                          str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True,
                         check=True)
    peak = int(out.stdout.strip().splitlines()[-1])
    assert peak <= need, f"{size}: peak RSS {peak / 1e9:.2f} GB > estimate {need / 1e9:.2f} GB"
    assert resource.RLIMIT_AS  # the measurement is Linux getrusage (KiB)
