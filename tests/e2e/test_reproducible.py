"""Reproducible outputs: the same model, options and calibration data give byte-identical files
across processes, ``PYTHONHASHSEED`` values and BLAS/OpenMP thread counts.

Two ``tccc compile`` subprocesses run concurrently with different hash seeds and thread counts;
every output file except the reports (which record compile times) must match byte for byte,
and match a third, in-process compile.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tcc_compiler.cli.main import main

REPO = Path(__file__).resolve().parents[2]
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _model() -> onnx.ModelProto:
    """A net that exercises the passes that iterate over dicts and sets: Conv+BN+Relu,
    MaxPool, a residual block with a BN-folded 1x1 shortcut, GAP, Flatten, Gemm, Softmax."""
    r = np.random.default_rng(11)
    inits, nodes = {}, []

    def conv(name, x, cin, cout, k, s=1):
        inits[name + "_w"] = r.standard_normal((cout, cin, k, k)) * (1.2 / np.sqrt(cin * k * k))
        for suffix, v in (("g", r.uniform(0.5, 1.5, cout)), ("b", r.standard_normal(cout) * .1),
                          ("m", r.standard_normal(cout) * .1), ("v", r.uniform(0.5, 1.5, cout))):
            inits[f"{name}_{suffix}"] = v
        nodes.append(helper.make_node("Conv", [x, name + "_w"], [name], pads=[k // 2] * 4,
                                      strides=[s, s], name=name))
        nodes.append(helper.make_node("BatchNormalization", [name] + [
            f"{name}_{s_}" for s_ in "gbmv"], [name + "_bn"], name=name + "_bn"))
        return name + "_bn"

    y = conv("stem", "x", 3, 8, 3)
    nodes.append(helper.make_node("Relu", [y], ["stem_r"], name="stem_r"))
    nodes.append(helper.make_node("MaxPool", ["stem_r"], ["pool"], kernel_shape=[2, 2],
                                  strides=[2, 2], name="pool"))
    a = conv("b1", "pool", 8, 16, 3, 2)
    nodes.append(helper.make_node("Relu", [a], ["b1_r"], name="b1_r"))
    a = conv("b2", "b1_r", 16, 16, 3)
    sc = conv("sc", "pool", 8, 16, 1, 2)
    nodes.append(helper.make_node("Add", [a, sc], ["add"], name="add"))
    nodes.append(helper.make_node("Relu", ["add"], ["add_r"], name="add_r"))
    nodes.append(helper.make_node("GlobalAveragePool", ["add_r"], ["gap"], name="gap"))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"], name="flat"))
    inits["fc_w"] = r.standard_normal((10, 16)) * 0.4
    inits["fc_b"] = r.standard_normal(10) * 0.1
    nodes.append(helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], transB=1,
                                  name="fc"))
    nodes.append(helper.make_node("Softmax", ["logits"], ["prob"], axis=1, name="softmax"))
    g = helper.make_graph(
        nodes, "repro", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, [1, 10])],
        [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def _files(folder: Path) -> dict[str, bytes]:
    """Every output file but the reports (they hold wall-clock compile times)."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())
            if not p.name.startswith("report.")}


def _argv(tmp: Path, out: str, method: str) -> list[str]:
    return ["-q", "compile", str(tmp / "m.onnx"), "--input", "32x32x3", "-o", str(tmp / out),
            "--calib-method", method]


@pytest.mark.parametrize("method", ["mse", pytest.param("percentile", marks=pytest.mark.slow)])
def test_two_processes_byte_identical(tmp_path, method):
    """Hash seeds 0 / 4242 and 1 / 2 BLAS threads: identical binaries, manifest, IR, tables
    (calibration on the bundled photos, so image decoding and resizing are covered too)."""
    onnx.save(_model(), str(tmp_path / "m.onnx"))
    procs = []
    for k, (seed, threads) in enumerate((("0", "1"), ("4242", "2"))):
        env = dict(os.environ, PYTHONHASHSEED=seed, **{v: threads for v in THREAD_VARS})
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "tcc_compiler.cli.main"] + _argv(tmp_path, f"o{k}", method),
            env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    assert main(_argv(tmp_path, "o2", method)) == 0
    a, b, c = (_files(tmp_path / f"o{k}") for k in range(3))
    assert {"npu_cmd.bin", "quantized_network.bin", "manifest.json"} <= set(a)
    assert set(a) == set(b) == set(c)
    for name in a:
        assert a[name] == b[name], f"{name} differs between PYTHONHASHSEED 0 and 4242"
        assert a[name] == c[name], f"{name} differs between a subprocess and in-process"


def test_report_differs_only_in_timings(tmp_path):
    """The one file allowed to differ, report.json, differs only in its timing fields."""
    import json

    onnx.save(_model(), str(tmp_path / "m.onnx"))
    np.save(tmp_path / "c.npy",
            np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32))
    reports = []
    for out in ("r0", "r1"):
        assert main(_argv(tmp_path, out, "minmax") + ["--calib", str(tmp_path / "c.npy")]) == 0
        reports.append(json.loads((tmp_path / out / "report.json").read_text()))

    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items()
                    if not (k.endswith(("seconds", "_s")) or "time" in k)}
        if isinstance(x, list):
            return [strip(v) for v in x]
        return x

    assert strip(reports[0]) == strip(reports[1])
