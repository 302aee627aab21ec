"""Frontend: ONNX -> graph IR. Every accepted model is checked against ONNX Runtime, both right
after import and after the default float pipeline; refused models must raise the right
TccError subclass naming every offending node."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

from tcc_compiler.errors import InputError, ModelError, TccError, UnsupportedError
from tcc_compiler.frontend import import_onnx, parse_input_spec
from tcc_compiler.interp import run_float
from tcc_compiler.ir.ops import ActKind, Op

N = helper.make_node


def _x(rng, c=4, h=7, w=7):
    return rng.standard_normal((1, c, h, w)).astype(np.float32)


def _ops(graph):
    return [n.op for n in graph.nodes]


# ---- Conv ----------------------------------------------------------------------------------

@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER", "VALID"])
@pytest.mark.parametrize("stride", [1, 2])
def test_conv_auto_pad(make_model, check_vs_ort, rng, auto_pad, stride):
    # 4x4 kernel: SAME needs an odd total padding, so UPPER and LOWER differ.
    m = make_model([N("Conv", ["x", "w", "b"], ["y"], auto_pad=auto_pad, strides=[stride] * 2,
                      kernel_shape=[4, 4])], [1, 4, 7, 7],
                   {"w": rng.standard_normal((6, 4, 4, 4)), "b": rng.standard_normal(6)})
    g = check_vs_ort(m, _x(rng))
    conv = next(n for n in g.nodes if n.op is Op.CONV)
    if auto_pad == "VALID":
        assert conv.attrs.pads == (0, 0, 0, 0)
    elif stride == 1:  # total 3 per axis: UPPER puts the extra pixel at the end
        assert conv.attrs.pads == ((1, 1, 2, 2) if auto_pad == "SAME_UPPER" else (2, 2, 1, 1))


def test_conv_asymmetric_pads_no_bias_dilation_group(make_model, check_vs_ort, rng):
    m = make_model([N("Conv", ["x", "w"], ["y"], pads=[0, 1, 2, 1], dilations=[2, 1],
                      strides=[1, 2], group=2)], [1, 4, 7, 7],
                   {"w": rng.standard_normal((6, 2, 3, 3))})
    g = check_vs_ort(m, _x(rng))
    (conv,) = [n for n in g.nodes if n.op is Op.CONV]
    assert conv.attrs.group == 2 and conv.attrs.dilations == (2, 1)
    assert np.all(conv.inputs[2].const == 0)  # missing bias -> zeros


def test_depthwise_conv(make_model, check_vs_ort, rng):
    m = make_model([N("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1], group=4)],
                   [1, 4, 7, 7], {"w": rng.standard_normal((4, 1, 3, 3)),
                                  "b": rng.standard_normal(4)})
    check_vs_ort(m, _x(rng))


# ---- Clip / Relu ---------------------------------------------------------------------------

def test_clip_opset6_attributes(make_model, check_vs_ort, rng):
    m = make_model([N("Clip", ["x"], ["c"], min=0.0, max=6.0), N("Clip", ["c"], ["y"], min=0.0)],
                   [1, 4, 7, 7], opset=6, ir_version=3)
    raw = import_onnx(m)
    acts = [n.attrs.act for n in raw.nodes]
    assert acts[0].kind is ActKind.CLIP and (acts[0].lo, acts[0].hi) == (0.0, 6.0)
    assert acts[1].kind is ActKind.RELU  # Clip(0, +max) is a Relu
    check_vs_ort(m, 5 * _x(rng))


def test_clip_opset13_inputs(make_model, check_vs_ort, rng):
    m = make_model([N("Clip", ["x", "lo", "hi"], ["c"]), N("Clip", ["c", "zero"], ["y"])],
                   [1, 4, 7, 7], {"lo": np.array(-1.0), "hi": np.array(6.0),
                                  "zero": np.array(0.0)})
    raw = import_onnx(m)
    acts = [n.attrs.act for n in raw.nodes]
    assert acts[0].kind is ActKind.CLIP and (acts[0].lo, acts[0].hi) == (-1.0, 6.0)
    assert acts[1].kind is ActKind.RELU
    check_vs_ort(m, 5 * _x(rng))


# ---- element-wise --------------------------------------------------------------------------

def test_sum_nary(make_model, check_vs_ort, rng):
    m = make_model([N("Conv", ["x", "w1"], ["a"], pads=[1] * 4), N("Conv", ["x", "w2"], ["b"]),
                    N("Relu", ["x"], ["c"]), N("Sum", ["a", "b", "c"], ["y"])], [1, 4, 7, 7],
                   {"w1": rng.standard_normal((4, 4, 3, 3)),
                    "w2": rng.standard_normal((4, 4, 1, 1))})
    raw = import_onnx(m)
    assert _ops(raw).count(Op.ADD) == 2
    check_vs_ort(m, _x(rng))


# ---- FC ------------------------------------------------------------------------------------

@pytest.mark.parametrize("trans_b", [0, 1])
def test_gemm_alpha_beta_transb(make_model, check_vs_ort, rng, trans_b):
    b = rng.standard_normal((5, 196) if trans_b else (196, 5))
    m = make_model([N("Flatten", ["x"], ["f"]),
                    N("Gemm", ["f", "B", "C"], ["y"], alpha=0.5, beta=2.0, transB=trans_b)],
                   [1, 4, 7, 7], {"B": b, "C": rng.standard_normal((1, 5))})
    g = check_vs_ort(m, _x(rng))
    assert _ops(g) == [Op.FC]  # flatten folded into the FC by canonicalize


def test_matmul_add(make_model, check_vs_ort, rng):
    m = make_model([N("Flatten", ["x"], ["f"]), N("MatMul", ["f", "B"], ["mm"]),
                    N("Add", ["mm", "C"], ["y"])], [1, 4, 7, 7],
                   {"B": rng.standard_normal((196, 5)), "C": rng.standard_normal(5)})
    check_vs_ort(m, _x(rng))


def test_matmul_alone(make_model, check_vs_ort, rng):
    m = make_model([N("Flatten", ["x"], ["f"]), N("MatMul", ["f", "B"], ["y"])], [1, 4, 7, 7],
                   {"B": rng.standard_normal((196, 5))})
    check_vs_ort(m, _x(rng))


def test_flatten_and_reshape_zero_minus_one(make_model, check_vs_ort, rng):
    m = make_model([N("Reshape", ["x", "s"], ["f"]), N("Gemm", ["f", "B"], ["y"], transB=1)],
                   [1, 4, 7, 7], {"B": rng.standard_normal((5, 196)),
                                  "s": np.array([0, -1], np.int64)})
    raw = import_onnx(m)
    assert raw.nodes[0].op is Op.RESHAPE and raw.nodes[0].attrs.shape == (1, 196)
    check_vs_ort(m, _x(rng))


# ---- Pad / pooling -------------------------------------------------------------------------

@pytest.mark.parametrize("opset", [9, 13])
def test_pad_folded_into_conv(make_model, check_vs_ort, rng, opset):
    p = [0, 0, 1, 2, 0, 0, 2, 1]
    w = {"w": rng.standard_normal((3, 4, 3, 3))}
    if opset < 11:
        nodes = [N("Pad", ["x"], ["p"], pads=p)]
    else:
        nodes = [N("Pad", ["x", "pads"], ["p"])]
        w["pads"] = np.array(p, np.int64)
    nodes.append(N("Conv", ["p", "w"], ["y"], pads=[0, 1, 0, 0]))
    m = make_model(nodes, [1, 4, 7, 7], w, opset=opset)
    raw = import_onnx(m)
    assert _ops(raw) == [Op.CONV]
    assert raw.nodes[0].attrs.pads == (1, 3, 2, 1)   # Pad (1,2,2,1) + Conv (0,1,0,0)
    check_vs_ort(m, _x(rng))


def test_pad_nonzero_value_refused(make_model):
    m = make_model([N("Pad", ["x", "pads", "v"], ["p"]), N("Conv", ["p", "w"], ["y"])],
                   [1, 4, 7, 7], {"pads": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64),
                                  "v": np.array(1.0), "w": np.ones((2, 4, 1, 1))})
    with pytest.raises(UnsupportedError, match="Pad"):
        import_onnx(m)


@pytest.mark.parametrize("hw,k,s,p", [(7, 3, 2, 0), (8, 3, 2, 1), (7, 2, 2, 0), (6, 3, 3, 0)])
def test_maxpool_ceil_mode(make_model, check_vs_ort, rng, hw, k, s, p):
    m = make_model([N("MaxPool", ["x"], ["y"], kernel_shape=[k, k], strides=[s, s],
                      pads=[p] * 4, ceil_mode=1)], [1, 4, hw, hw])
    check_vs_ort(m, _x(rng, h=hw, w=hw))


def test_avgpool_ceil_mode_overhang_refused(make_model):
    # ONNX Runtime divides an overhanging last window by its clipped size; the NPU divides by a
    # constant, so the importer refuses instead of computing something else.
    m = make_model([N("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2],
                      ceil_mode=1, count_include_pad=1)], [1, 4, 6, 6])
    with pytest.raises(UnsupportedError, match="ceil_mode"):
        import_onnx(m)


def test_avgpool_count_include_pad(make_model, check_vs_ort, rng):
    m = make_model([N("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2],
                      pads=[1, 1, 1, 1], count_include_pad=1)], [1, 4, 7, 7])
    check_vs_ort(m, _x(rng))


def test_avgpool_pads_without_count_include_pad_divides_per_pixel(make_model, check_vs_ort,
                                                                    rng):
    """count_include_pad=0 with pads: each pixel divided by its own window's input count."""
    m = make_model([N("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])],
                   [1, 4, 7, 7])
    g = import_onnx(m)
    assert _ops(g) == [Op.AVGPOOL] and not g.nodes[0].attrs.count_include_pad
    check_vs_ort(m, _x(rng))


def test_avgpool_ceil_overhang_with_count_include_pad_refused(make_model):
    m = make_model([N("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2],
                      ceil_mode=1, count_include_pad=1)], [1, 4, 6, 6], opset=11)
    with pytest.raises(UnsupportedError, match="count_include_pad=1"):
        import_onnx(m)


def test_global_averagepool_forms(make_model, check_vs_ort, rng):
    m = make_model([N("AveragePool", ["x"], ["a"], kernel_shape=[7, 7]),
                    N("GlobalAveragePool", ["x"], ["b"]), N("Add", ["a", "b"], ["y"])],
                   [1, 4, 7, 7])
    raw = import_onnx(m)
    assert _ops(raw)[:2] == [Op.GAP, Op.GAP]
    check_vs_ort(m, _x(rng))


@pytest.mark.parametrize("keepdims", [0, 1])
def test_reduce_mean_hw(make_model, check_vs_ort, rng, keepdims):
    m = make_model([N("ReduceMean", ["x"], ["y"], axes=[2, 3], keepdims=keepdims)],
                   [1, 4, 7, 7])
    raw = import_onnx(m)
    assert raw.nodes[0].op is Op.GAP
    check_vs_ort(m, _x(rng))


def test_reduce_mean_axes_input_opset18(make_model, check_vs_ort, rng):
    m = make_model([N("ReduceMean", ["x", "ax"], ["y"])], [1, 4, 7, 7],
                   {"ax": np.array([-1, -2], np.int64)}, opset=18)
    check_vs_ort(m, _x(rng))


def test_reduce_mean_over_channels_refused(make_model):
    m = make_model([N("ReduceMean", ["x"], ["y"], axes=[1])], [1, 4, 7, 7])
    with pytest.raises(UnsupportedError, match="ReduceMean"):
        import_onnx(m)


# ---- loading -------------------------------------------------------------------------------

def _conv_relu(make_model, rng, **kw):
    return make_model([N("Conv", ["x", "w", "b"], ["c"], pads=[1] * 4), N("Relu", ["c"], ["y"])],
                      [1, 4, 7, 7], {"w": rng.standard_normal((4, 4, 3, 3)),
                                     "b": rng.standard_normal(4)}, **kw)


def test_initializers_listed_as_inputs(make_model, check_vs_ort, rng):
    m = _conv_relu(make_model, rng, opset=7, ir_version=3, inits_as_inputs=True)
    assert len(m.graph.input) == 3
    g = check_vs_ort(m, _x(rng))
    assert [v.name for v in g.inputs] == ["x"]


def test_external_data(make_model, check_vs_ort, rng, tmp_path):
    m = _conv_relu(make_model, rng)
    path = tmp_path / "m.onnx"
    onnx.save(m, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location="m.data", size_threshold=0)
    assert (tmp_path / "m.data").is_file()
    check_vs_ort(str(path), _x(rng))


def test_external_data_outside_folder_refused(make_model, rng, tmp_path):
    m = _conv_relu(make_model, rng)
    sub = tmp_path / "sub"
    sub.mkdir()
    onnx.save(m, str(sub / "m.onnx"), save_as_external_data=True, location="m.data",
              size_threshold=0)
    for init in (mm := onnx.load(str(sub / "m.onnx"), load_external_data=False)).graph.initializer:
        for e in init.external_data:
            if e.key == "location":
                e.value = "../m.data"
    (tmp_path / "m.data").write_bytes((sub / "m.data").read_bytes())
    onnx.save(mm, str(sub / "evil.onnx"))
    with pytest.raises(ModelError, match="outside"):
        import_onnx(str(sub / "evil.onnx"))


def test_dropout_and_identity_dropped(make_model, check_vs_ort, rng):
    m = make_model([N("Relu", ["x"], ["r"]), N("Dropout", ["r"], ["d"]),
                    N("Identity", ["d"], ["y"])], [1, 4, 7, 7])
    raw = import_onnx(m)
    assert _ops(raw) == [Op.RELU]
    check_vs_ort(m, _x(rng))


def test_nhwc_input_transpose(make_model, check_vs_ort, ort_run, run_pipeline, rng):
    m = make_model([N("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2]),
                    N("Conv", ["t", "w"], ["y"], pads=[1] * 4)], [1, 5, 6, 4],
                   {"w": rng.standard_normal((3, 4, 3, 3))})
    x = rng.standard_normal((1, 5, 6, 4)).astype(np.float32)
    g = check_vs_ort(m, x, passes=False)
    assert g.meta["input_layout"] == "NHWC"
    # canonicalize drops the transpose: the IR input becomes NCHW, the user layout stays NHWC
    g = run_pipeline(g)
    assert _ops(g) == [Op.CONV] and g.inputs[0].shape == (1, 4, 5, 6)
    assert g.meta["input_layout"] == "NHWC"
    got = run_float(g, x.transpose(0, 3, 1, 2))["y"]
    np.testing.assert_allclose(got, ort_run(m, x)[0], rtol=1e-4, atol=1e-5)


def test_symbolic_dims_need_input_spec(make_model, rng):
    m = _conv_relu(make_model, rng)
    m.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "H"
    m.graph.input[0].type.tensor_type.shape.dim[3].dim_param = "W"
    with pytest.raises(InputError, match="--input"):
        import_onnx(m)
    g = import_onnx(m, "9x5x4")
    assert g.inputs[0].shape == (1, 4, 5, 9)


# ---- refusals ------------------------------------------------------------------------------

def test_all_unsupported_ops_listed_at_once(make_model):
    m = make_model([N("Sin", ["x"], ["a"], name="sig"), N("Relu", ["a"], ["b"]),
                    N("Cos", ["b"], ["c"], name="leaky"),
                    N("Conv", ["c", "w"], ["d"], pads=[1] * 4, name="conv3d_like"),
                    N("Floor", ["d"], ["y"], name="tanh")],
                   [1, 4, 7, 7], {"w": np.ones((4, 4, 3, 3))})
    with pytest.raises(UnsupportedError) as info:
        import_onnx(m)
    probs = info.value.problems
    text = str(info.value)
    for name in ("sig", "leaky", "tanh"):
        assert any(name in p for p in probs), probs
    assert "Sin" in text and "Cos" in text and "Floor" in text
    assert "\n" not in text


def test_custom_domain_refused(make_model):
    m = make_model([N("Relu", ["x"], ["y"])], [1, 4, 7, 7])
    m.graph.node.append(N("Fancy", ["y"], ["z"], domain="com.example", name="fancy"))
    m.graph.output[0].name = "z"
    with pytest.raises(UnsupportedError, match="fancy"):
        import_onnx(m)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        import_onnx(tmp_path / "nope.onnx")


def test_directory_is_not_a_model(tmp_path):
    with pytest.raises(InputError):
        import_onnx(tmp_path)


@pytest.mark.parametrize("data", [b"", b"\x00garbage\xff" * 10, b"not an onnx model at all"])
def test_garbage_file(tmp_path, data):
    p = tmp_path / "bad.onnx"
    p.write_bytes(data)
    with pytest.raises((ModelError, InputError)) as info:
        import_onnx(p)
    assert str(p) in str(info.value)


@pytest.mark.parametrize("spec", ["224x224", "axbxc", "0x224x3", "224x224x3x1", "",
                                  "9000x10x3", "10x10x65", "-3x4x3"])
def test_bad_input_spec(spec):
    with pytest.raises(InputError, match="--input"):
        parse_input_spec(spec)


def test_good_input_spec():
    assert parse_input_spec("224x160x3") == (224, 160, 3)
    assert parse_input_spec("32X16X1") == (32, 16, 1)


def test_input_spec_channel_mismatch(make_model, rng):
    m = _conv_relu(make_model, rng)
    with pytest.raises(InputError, match="channels"):
        import_onnx(m, "7x7x3")


def test_two_image_inputs_refused():
    f = onnx.TensorProto.FLOAT
    g = helper.make_graph([N("Add", ["x", "x2"], ["y"])], "two",
                          [helper.make_tensor_value_info(n, f, [1, 4, 7, 7]) for n in ("x", "x2")],
                          [helper.make_tensor_value_info("y", f, [1, 4, 7, 7])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    with pytest.raises(ModelError, match="one image input"):
        import_onnx(m)


def test_errors_are_tcc_errors():
    assert issubclass(UnsupportedError, TccError) and issubclass(ModelError, TccError)
