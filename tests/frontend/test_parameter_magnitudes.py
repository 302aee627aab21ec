"""Issue #16, the corpus's last open violations: parameters with NaN, infinite or huge values
(a 3e38 weight, a 1e20 bias, Gemm alpha/beta = inf, a batch norm folding to inf) and pool
attributes ONNX Runtime rejects. ``tccc ops`` called such models supported; compile then
refused them in calibration or quantization (or compiled a pool ORT cannot load). Now the
frontend's post-pass check (frontend/magnitudes.py, run by compile and ops alike) and its
attribute checks refuse them: compile and ops both exit 2 with one line naming the file and
the node, and ``partition`` marks the node unsupported with the reason."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tcc_compiler.cli.main import main
from tcc_compiler.frontend.magnitudes import MAX_PARAM_MAGNITUDE

RNG = np.random.default_rng(3)


def _model(nodes, inits: dict, shape=(1, 3, 8, 8), opset=13) -> onnx.ModelProto:
    """x [shape] -> nodes -> y; unchecked (like the corpus's mutants)."""
    g = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                       list(shape))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(np.asarray(v, np.float32), k)
                           for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def _conv_clip(b_value=None, w_value=None) -> onnx.ModelProto:
    """Conv(3->4, 3x3) + Clip(0, 6), one bias or weight value replaced."""
    w, b = RNG.standard_normal((4, 3, 3, 3)) * .3, RNG.standard_normal(4) * .1
    if b_value is not None:
        b[0] = b_value
    if w_value is not None:
        w[1, 0, 0, 0] = w_value
    n = helper.make_node
    return _model([n("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
                   n("Clip", ["c", "lo", "hi"], ["y"], name="clip")],
                  {"w": w, "b": b, "lo": 0.0, "hi": 6.0})


def _gemm(**attrs) -> onnx.ModelProto:
    n = helper.make_node
    return _model([n("GlobalAveragePool", ["x"], ["g"], name="gap"),
                   n("Flatten", ["g"], ["f"], name="flat"),
                   n("Gemm", ["f", "fw", "fb"], ["y"], transB=1, name="fc", **attrs)],
                  {"fw": RNG.standard_normal((5, 3)), "fb": RNG.standard_normal(5)})


def _conv_bn(mean=0.1, var=1.0, eps=1e-5) -> onnx.ModelProto:
    n = helper.make_node
    c = 4
    return _model([n("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
                   n("BatchNormalization", ["c", "s", "b", "m", "v"], ["n"], epsilon=eps,
                     name="bn"),
                   n("Relu", ["n"], ["y"], name="relu")],
                  {"w": RNG.standard_normal((c, 3, 3, 3)) * .3, "s": np.ones(c),
                   "b": np.zeros(c), "m": np.full(c, mean), "v": np.full(c, var)})


def _act(op: str, **attrs) -> onnx.ModelProto:
    n = helper.make_node
    return _model([n("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
                   n(op, ["c"], ["y"], name="act", **attrs)],
                  {"w": RNG.standard_normal((4, 3, 3, 3)) * .3})


def _pool(op: str, opset=13, **attrs) -> onnx.ModelProto:
    n = helper.make_node
    return _model([n("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
                   n(op, ["c"], ["y"], name="pool", **attrs)],
                  {"w": RNG.standard_normal((4, 3, 3, 3)) * .3}, opset=opset)


#: (model, phrases the one error line must hold). Each was "ops: supported, compile: refused"
#: (or, for the pools, a compiled folder ONNX Runtime cannot load) in the corpus.
REFUSED = {
    "bias_1e20": (lambda: _conv_clip(b_value=1e20), ["'conv'", "1e+20", "beyond"]),
    "weight_3e38": (lambda: _conv_clip(w_value=-3e38), ["'conv'", "3e+38"]),
    "gemm_beta_inf": (lambda: _gemm(beta=float("inf")), ["'fc'", "non-finite"]),
    "gemm_alpha_inf": (lambda: _gemm(alpha=float("inf")), ["'fc'", "non-finite"]),
    "gemm_alpha_huge": (lambda: _gemm(alpha=1e30), ["'fc'", "beyond"]),
    "bn_mean_3e38": (lambda: _conv_bn(mean=3e38), ["'conv'", "ONNX conv, bn", "3e+38"]),
    "bn_folds_to_inf": (lambda: _conv_bn(var=0.0, eps=0.0), ["'conv'", "non-finite"]),
    "leakyrelu_alpha_inf": (lambda: _act("LeakyRelu", alpha=float("inf")),
                            ["'act'", "alpha = inf"]),
    "hardsigmoid_alpha_nan": (lambda: _act("HardSigmoid", alpha=float("nan")),
                              ["'act'", "alpha is NaN"]),
    "maxpool_storage_order": (lambda: _pool("MaxPool", kernel_shape=[2, 2],
                                            storage_order=2147483647),
                              ["MaxPool 'pool'", "storage_order = 2147483647"]),
    "maxpool_pad_not_below_kernel": (lambda: _pool("MaxPool", kernel_shape=[2, 2],
                                                   pads=[0, 0, 2, 0]),
                                     ["MaxPool 'pool'", "not smaller than kernel_shape"]),
    "avgpool_pad_not_below_kernel": (lambda: _pool("AveragePool", kernel_shape=[3, 3],
                                                   pads=[3, 0, 0, 0], count_include_pad=1),
                                     ["AveragePool 'pool'", "not smaller than kernel_shape"]),
}


def _one_error_line(err: str, path) -> str:
    assert err.count("\n") == 1 and err.startswith("tccc: error: ") and str(path) in err, err
    return err


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_compile_and_ops_both_refuse(tmp_path, capsys, case):
    """--strict: the NPU's refusal, in compile and ops alike (by default a node the NPU
    refuses may run on the host instead: :func:`test_without_strict_ops_still_agrees`)."""
    build, phrases = REFUSED[case]
    path = tmp_path / "m.onnx"
    onnx.save(build(), path)
    assert main(["-q", "compile", str(path), "-o", str(tmp_path / "out"), "--strict"]) == 2
    err = _one_error_line(capsys.readouterr().err, path)
    for p in phrases:
        assert p in err, err
    assert not (tmp_path / "out").exists()
    assert main(["-q", "ops", str(path), "--json", "--strict"]) == 2  # ops agrees
    out, err = capsys.readouterr()
    _one_error_line(err, path)
    if out:  # parameter problems: every node listed, the culprit unsupported with the reason
        bad = [p for p in json.loads(out) if p["device"] == "unsupported"]
        assert bad and all(p["reason"] for p in bad)


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_without_strict_ops_still_agrees(tmp_path, capsys, case):
    """Default mode: compile either refuses (exit 2, one line) or puts the refused node on
    the host (ONNX Runtime computes exactly what the model says, inf included); ``ops``
    answers the same either way."""
    path = tmp_path / "m.onnx"
    onnx.save(REFUSED[case][0](), path)
    code = main(["-q", "compile", str(path), "-o", str(tmp_path / "out")])
    capsys.readouterr()
    assert code in (0, 2)
    assert main(["-q", "ops", str(path), "--json"]) == code
    out, _ = capsys.readouterr()
    if code == 0:
        places = json.loads(out)
        assert not [p for p in places if p["device"] == "unsupported"]
        assert any(p["device"] == "host" for p in places)


def test_partition_names_the_onnx_nodes_a_folded_parameter_came_from():
    from tcc_compiler.placement import partition

    places = {p.node: p for p in partition(_conv_bn(var=0.0, eps=0.0))}
    # the folded weight belongs to the fused conv; its ONNX sources are conv, bn and relu
    assert {n for n, p in places.items() if p.device == "unsupported"} == {"conv", "bn", "relu"}
    assert "non-finite" in places["bn"].reason


@pytest.mark.parametrize("build", [
    lambda: _conv_clip(b_value=1e6), lambda: _conv_clip(w_value=-1e3),
    lambda: _gemm(alpha=1e4, beta=0.0), lambda: _conv_bn(var=0.0),  # eps keeps it finite
    lambda: _act("LeakyRelu", alpha=100.0),
    lambda: _pool("MaxPool", kernel_shape=[2, 2], storage_order=1),
    lambda: _pool("MaxPool", opset=7, kernel_shape=[2, 2], storage_order=5),  # no attr < 8
    lambda: _pool("MaxPool", kernel_shape=[3, 3], pads=[2, 2, 2, 2]),
], ids=["bias_1e6", "weight_1e3", "gemm_alpha_1e4", "bn_var_0", "leakyrelu_100",
        "storage_order_1", "storage_order_opset7", "pads_below_kernel"])
def test_large_but_representable_values_still_compile(tmp_path, capsys, build):
    from tcc_compiler.placement import partition

    m = build()
    assert all(p.supported for p in partition(m))
    path = tmp_path / "m.onnx"
    onnx.save(m, path)
    assert main(["-q", "compile", str(path), "-o", str(tmp_path / "out")]) == 0, \
        capsys.readouterr().err


def test_clip_bounds_may_be_infinite_but_the_limit_is_documented():
    from pathlib import Path

    from tcc_compiler.placement import partition

    n = helper.make_node
    m = _model([n("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
                n("Clip", ["c", "lo", "hi"], ["y"], name="clip")],
               {"w": RNG.standard_normal((4, 3, 3, 3)), "lo": 1.0, "hi": float("inf")})
    assert all(p.supported for p in partition(m))  # one-sided clip: a lookup table
    spec = (Path(__file__).resolve().parents[2] / "specs" / "quantization.md").read_text()
    assert "2^31" in spec and MAX_PARAM_MAGNITUDE == 2.0 ** 31


def _host_overflow() -> onnx.ModelProto:
    """Conv with one weight of 3e38 (host: the NPU cannot quantize it) -> Relu -> the NPU
    (GAP, Gemm): ONNX Runtime computes inf, which the NPU segment then reads."""
    n = helper.make_node
    w = RNG.standard_normal((4, 3, 3, 3)) * .3
    w[0, 0, 1, 1] = 3e38
    return _model([n("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
                   n("Relu", ["c"], ["r"], name="relu"),
                   n("GlobalAveragePool", ["r"], ["g"], name="gap"),
                   n("Flatten", ["g"], ["f"], name="flat"),
                   n("Gemm", ["f", "fw", "fb"], ["y"], transB=1, name="fc")],
                  {"w": w, "fw": RNG.standard_normal((5, 4)), "fb": RNG.standard_normal(5)})


def test_a_host_overflow_into_an_npu_segment_is_refused_by_compile_and_ops(tmp_path, capsys):
    """Corpus mutant conv_gap_fc_0_0087: ``ops`` said supported, compile refused (and blamed
    its calibration input). Both now name the host node whose output overflows, exit 2."""
    path = tmp_path / "m.onnx"
    onnx.save(_host_overflow(), path)
    assert main(["-q", "compile", str(path), "-o", str(tmp_path / "out")]) == 2
    err = _one_error_line(capsys.readouterr().err, path)
    assert "Relu 'relu'" in err and "reaches inf" in err and "calibration input 0" in err, err
    assert not (tmp_path / "out").exists()
    assert main(["-q", "ops", str(path), "--json"]) == 2
    out, err = capsys.readouterr()
    _one_error_line(err, path)
    bad = {p["node"]: p["reason"] for p in json.loads(out) if p["device"] == "unsupported"}
    assert list(bad) == ["relu"] and "reaches inf" in bad["relu"], bad


def test_a_host_nan_into_an_npu_segment_names_its_cause_not_overflow(tmp_path, capsys):
    """Conv -> Sqrt (host) -> Conv: the conv's negative outputs make ONNX Runtime's Sqrt NaN,
    which the second conv's segment reads. ops and compile refused it (exit 2) but blamed
    "float32 overflow; weights of absurd magnitude?"; both now say the square root of negative
    values."""
    n = helper.make_node
    m = _model([n("Conv", ["x", "w1"], ["c"], pads=[1, 1, 1, 1], name="c1"),
                n("Sqrt", ["c"], ["s"], name="sq"),
                n("Conv", ["s", "w2"], ["y"], pads=[1, 1, 1, 1], name="c2")],
               {"w1": RNG.standard_normal((4, 3, 3, 3)) * .3,
                "w2": RNG.standard_normal((4, 4, 3, 3)) * .3})
    path = tmp_path / "m.onnx"
    onnx.save(m, path)
    assert main(["-q", "compile", str(path), "-o", str(tmp_path / "out")]) == 2
    err = _one_error_line(capsys.readouterr().err, path)
    assert "Sqrt 'sq'" in err and "NaN" in err and "square root of negative" in err, err
    assert "overflow" not in err and "absurd" not in err, err
    assert main(["-q", "ops", str(path), "--json"]) == 2
    out, err = capsys.readouterr()
    _one_error_line(err, path)
    bad = {p["node"]: p["reason"] for p in json.loads(out) if p["device"] == "unsupported"}
    assert list(bad) == ["sq"] and "square root of negative" in bad["sq"], bad
    assert "overflow" not in bad["sq"], bad


def test_a_model_whose_output_is_its_input_is_refused_by_compile_and_ops(tmp_path, capsys):
    """Corpus mutants residual_softmax_0_0238, conv_clip_matmul_0_0239 (the output renamed to
    the input): compile crashed (exit 1) on a plan with no segment, ops said supported."""
    n = helper.make_node
    m = _model([n("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
                n("Relu", ["c"], ["y"], name="relu")],
               {"w": RNG.standard_normal((4, 3, 3, 3)) * .3})
    m.graph.output[0].name = "x"
    path = tmp_path / "m.onnx"
    onnx.save(m, path)
    assert main(["-q", "compile", str(path), "-o", str(tmp_path / "out")]) == 2
    err = _one_error_line(capsys.readouterr().err, path)
    assert "nothing is left to compute" in err and "'x'" in err, err
    assert not (tmp_path / "out").exists()
    assert main(["-q", "ops", str(path), "--json"]) == 2
    out, err = capsys.readouterr()
    _one_error_line(err, path)
    assert {p["device"] for p in json.loads(out)} == {"unsupported"}
