"""Lookup-table activations and element-wise ops of two activations, end to end: each compiles,
runs on the reference executor bit for bit equal to the golden integer model, and stays close to
ONNX Runtime's float output (SQNR on random inputs); the CLI compiles and checks a
squeeze-excitation block and a SiLU conv stack."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tcc_compiler import api
from tcc_compiler.runtime import load_program
from tcc_compiler.runtime.check import Checker
from tests.helpers.cli import run_cli

N = helper.make_node
HW = 16


def _model(nodes, inits, out_c=8, opset=17, name="m"):
    """x [1,3,HW,HW] -> (nodes reading "x", writing "y" [1,out_c,HW,HW]); float32 inits."""
    g = helper.make_graph(nodes, name,
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, HW, HW])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                                         [1, out_c, HW, HW])],
                          [numpy_helper.from_array(np.asarray(v, np.float32), k)
                           for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def _convs(seed=0):
    r = np.random.default_rng(seed)
    return {"w": r.normal(0, 0.4, (8, 3, 3, 3)), "b": r.normal(0, 0.2, 8),
            "w2": r.normal(0, 0.3, (8, 8, 3, 3)), "b2": r.normal(0, 0.1, 8)}


def conv_act_conv(op, opset=17, extra=(), inits=None, **attrs):
    """Conv 3x3 -> activation ``op`` -> Conv 3x3: the activation's input and output are both
    int8 tensors of the NPU."""
    nodes = [N("Conv", ["x", "w", "b"], ["c"], pads=[1] * 4, kernel_shape=[3, 3]),
             N(op, ["c", *extra], ["a"], name="act", **attrs),
             N("Conv", ["a", "w2", "b2"], ["y"], pads=[1] * 4, kernel_shape=[3, 3])]
    return _model(nodes, {**_convs(), **(inits or {})}, opset=opset)


def _silu_stack():
    """Three conv + x*Sigmoid(x) layers (torch.onnx's SiLU before opset 14)."""
    r = np.random.default_rng(5)
    nodes, inits, x, cin = [], {}, "x", 3
    for i in range(3):
        inits[f"w{i}"], inits[f"b{i}"] = r.normal(0, 0.5 / np.sqrt(cin), (8, cin, 3, 3)), \
            r.normal(0, 0.1, 8)
        nodes += [N("Conv", [x, f"w{i}", f"b{i}"], [f"c{i}"], pads=[1] * 4, kernel_shape=[3, 3]),
                  N("Sigmoid", [f"c{i}"], [f"s{i}"]),
                  N("Mul", [f"c{i}", f"s{i}"], ["y" if i == 2 else f"a{i}"])]
        x, cin = f"a{i}", 8
    return _model(nodes, inits, name="silu_stack")


def _se_block():
    """Conv -> SE: GAP -> conv -> relu -> conv -> HardSigmoid -> Mul with the map (torchvision
    MobileNetV3's SqueezeExcitation), then a Sub of two activations and an Add of a gate."""
    r = np.random.default_rng(7)
    inits = {"w": r.normal(0, 0.4, (8, 3, 3, 3)), "b": r.normal(0, 0.2, 8),
             "f1": r.normal(0, 0.5, (4, 8, 1, 1)), "g1": r.normal(0, 0.1, 4),
             "f2": r.normal(0, 0.5, (8, 4, 1, 1)), "g2": r.normal(0, 0.1, 8)}
    nodes = [N("Conv", ["x", "w", "b"], ["c"], pads=[1] * 4, kernel_shape=[3, 3]),
             N("GlobalAveragePool", ["c"], ["p"]),
             N("Conv", ["p", "f1", "g1"], ["q"]), N("Relu", ["q"], ["qr"]),
             N("Conv", ["qr", "f2", "g2"], ["e"]),
             N("HardSigmoid", ["e"], ["s"], alpha=1 / 6, beta=0.5),
             N("Mul", ["c", "s"], ["m"]), N("Relu", ["c"], ["cr"]),
             N("Sub", ["m", "cr"], ["d"]), N("Add", ["s", "d"], ["y"])]
    return _model(nodes, inits, name="se_block")


def _sqnr_and_exact(tmp_path, model, seeds=(0, 1, 2)):
    """Compile ``model``; per random-normal input: (bit_exact, sqnr_db) against the golden model
    and ONNX Runtime."""
    r = np.random.default_rng(123)
    calib = [r.normal(0, 1, (1, 3, HW, HW)).astype(np.float32) for _ in range(8)]
    m = api.compile(model, f"{HW}x{HW}x3", calibration=calib)
    prog = load_program(m.save(tmp_path / "out"))
    onnx.save(model, tmp_path / "m.onnx")
    checker = Checker(prog, tmp_path / "m.onnx")
    res = []
    for s in seeds:
        x = np.random.default_rng(s).normal(0, 1, (1, 3, HW, HW)).astype(np.float32)
        c = checker.check(x, prog.run(x))
        res.append((c["bit_exact"], c["sqnr_db"]))
    return m, res


LUT_CASES = {
    "sigmoid": lambda: conv_act_conv("Sigmoid"),
    "tanh": lambda: conv_act_conv("Tanh"),
    "hardsigmoid": lambda: conv_act_conv("HardSigmoid", alpha=0.25, beta=0.4),
    "hardswish": lambda: conv_act_conv("HardSwish"),
    "prelu_channel": lambda: conv_act_conv("PRelu", extra=["sl"], inits={
        "sl": np.linspace(-0.3, 0.5, 8).reshape(8, 1, 1)}),
    "mish": lambda: conv_act_conv("Mish", opset=18),
    "gelu": lambda: conv_act_conv("Gelu", opset=20),
    "gelu_tanh": lambda: conv_act_conv("Gelu", opset=20, approximate="tanh"),
    "elu": lambda: conv_act_conv("Elu", alpha=0.8),
    "softplus": lambda: conv_act_conv("Softplus"),
    "clip_one_sided": lambda: conv_act_conv("Clip", extra=["", "hi"],
                                            inits={"hi": np.float32(0.3)}),
    "clip_excluding_zero": lambda: conv_act_conv("Clip", extra=["lo", "hi"],
                                                 inits={"lo": np.float32(0.2),
                                                        "hi": np.float32(1.5)}),
}


@pytest.mark.parametrize("case", sorted(LUT_CASES))
def test_lut_activation_bit_exact_and_accurate(tmp_path, case):
    """Each activation after a conv runs in the conv's epilogue (CONV_CFG flags bit3), except
    a per-channel PRelu (one table per channel: a LUT_TILE op of its own)."""
    m, res = _sqnr_and_exact(tmp_path, LUT_CASES[case]())
    standalone = case == "prelu_channel"
    assert m.report["npu_ops"].get("lut", 0) == int(standalone), m.report["npu_ops"]
    fused = [lay for lay in m.report["layers"] if "table in the epilogue" in lay["tiling"]]
    assert len(fused) == int(not standalone), [lay["tiling"] for lay in m.report["layers"]]
    assert all(exact for exact, _ in res), res
    assert min(s for _, s in res) >= 30.0, res


def _act_on_input(op, **attrs):
    """Activation ``op`` on the network input, then a conv: the table has no producing conv
    to ride on, so it runs as a LUT_TILE op over DRAM."""
    nodes = [N(op, ["x"], ["a"], name="act", **attrs),
             N("Conv", ["a", "w", "b"], ["y"], pads=[1] * 4, kernel_shape=[3, 3])]
    return _model(nodes, _convs())


@pytest.mark.parametrize("op,attrs", [("Sigmoid", {}), ("HardSwish", {}),
                                      ("LeakyRelu", {"alpha": 0.1})])
def test_standalone_lut_tile_bit_exact_and_accurate(tmp_path, op, attrs):
    m, res = _sqnr_and_exact(tmp_path, _act_on_input(op, **attrs))
    assert m.report["npu_ops"].get("lut") == 1, m.report["npu_ops"]
    assert all(exact for exact, _ in res), res
    assert min(s for _, s in res) >= 30.0, res


# the SE block chains five requantized ops after the conv (gap, 2 convs, lut, mul, sub, add):
# the per-model bar (25 dB) rather than the single-activation one
@pytest.mark.parametrize("build,ops,min_db", [(_silu_stack, {"conv": 3}, 30.0),
                                              (_se_block, None, 25.0)])
def test_silu_stack_and_se_block_bit_exact_and_accurate(tmp_path, build, ops, min_db):
    m, res = _sqnr_and_exact(tmp_path, build())
    if ops is not None:
        assert m.report["npu_ops"] == ops
    else:
        assert {"mul", "sub", "add"} <= set(m.report["npu_ops"]), m.report["npu_ops"]
    assert all(exact for exact, _ in res), res
    assert min(s for _, s in res) >= min_db, res


@pytest.mark.parametrize("build", [_se_block, _silu_stack])
def test_cli_compiles_and_checks_bit_exact(tmp_path, capsys, build):
    model = tmp_path / "m.onnx"
    onnx.save(build(), model)
    code, _, err = run_cli(["-q", "compile", model, "--input", f"{HW}x{HW}x3", "-o",
                            tmp_path / "out"], capsys)
    assert code == 0, err
    x = tmp_path / "x.npy"
    np.save(x, np.random.default_rng(9).normal(0, 1, (1, 3, HW, HW)).astype(np.float32))
    code, out, err = run_cli(["run", tmp_path / "out", x, "--check", model, "--json"], capsys)
    assert code == 0, err
    res = json.loads(out)
    check = res.get("check", res)
    assert check["bit_exact"] is True, res
