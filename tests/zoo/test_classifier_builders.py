"""The vendor-zoo classifier builders (RegNetX-400MF, MobileOne-S1, ConvMixer-768/32, LeNet-5):
the exporter patterns that distinguish them (checked against real timm / torch.onnx opset 17
exports with tools/dev/compare_exports.py: same op sequence, node names, shapes and parameter
shapes), their default sizes and LeNet-5's single input size. The generic checks (checker,
ONNX Runtime, bytes, histograms, parameter counts) are in test_detector_builders.py."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from zoo_helpers import model_of

from tcc_compiler import zoo
from tcc_compiler.errors import InputError


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _inits(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}


def test_default_inputs_are_the_vendor_rows():
    assert zoo.default_input("regnetx-400mf") == (640, 320, 3)
    assert zoo.default_input("mobileone-s1") == (640, 320, 3)
    assert zoo.default_input("convmixer-768-32") == (224, 224, 3)
    assert zoo.default_input("lenet5") == (32, 32, 1)


@pytest.mark.parametrize("size", [(64, 64), (32, 64), (28, 28)])
def test_lenet5_takes_only_32x32(size):
    with pytest.raises(InputError, match="lenet5 takes only 32x32"):
        zoo.build("lenet5", *size, channels=1)


def test_regnetx_grouped_convs_have_group_width_16():
    model = model_of("regnetx-400mf")
    inits = _inits(model)
    grouped = [n for n in model.graph.node if n.op_type == "Conv" and _attrs(n)["group"] > 1]
    assert len(grouped) == 22  # one per X block
    for n in grouped:
        w = inits[n.input[1]]
        assert w.shape[1] == 16 and w.shape[0] == 16 * _attrs(n)["group"], n.name
    widths = [inits[n.input[1]].shape[0] for n in grouped]
    assert widths == [32] + [64] * 2 + [160] * 7 + [384] * 12
    down = [n.name for n in model.graph.node if "downsample" in n.name]
    assert down == [f"/s{i}/b1/downsample/conv/Conv" for i in range(1, 5)]


def test_mobileone_is_a_plain_reparameterised_chain():
    model = model_of("mobileone-s1")
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert all(n.name.endswith("/reparam_conv/Conv") for n in convs)
    assert all(len(n.input) == 3 and n.input[2].endswith("reparam_conv.bias") for n in convs)
    groups = [_attrs(n)["group"] for n in convs[1:]]
    inits = _inits(model)
    # depthwise 3x3 and pointwise 1x1 alternate; the depthwise has groups == channels
    for dw, pw in zip(convs[1::2], convs[2::2], strict=True):
        assert _attrs(dw)["kernel_shape"] == [3, 3] and _attrs(pw)["kernel_shape"] == [1, 1]
        assert _attrs(dw)["group"] == inits[dw.input[1]].shape[0]
    assert groups[1::2] == [1] * 21
    assert inits[convs[-1].input[1]].shape[:2] == (1280, 512)


def test_convmixer_keeps_batchnorm_after_relu_and_same_padding():
    model = model_of("convmixer-768-32")
    producer = {o: n for n in model.graph.node for o in n.output}
    bns = [n for n in model.graph.node if n.op_type == "BatchNormalization"]
    assert all(producer[n.input[0]].op_type == "Relu" for n in bns)
    assert _attrs(bns[0])["epsilon"] == pytest.approx(1e-5) and bns[0].input[1] == "stem.2.weight"
    stem = model.graph.node[0]
    assert _attrs(stem)["kernel_shape"] == [7, 7] and _attrs(stem)["strides"] == [7, 7]
    dws = [n for n in model.graph.node if n.op_type == "Conv" and _attrs(n)["group"] == 768]
    assert len(dws) == 32
    for n in dws:
        a = _attrs(n)
        assert a["auto_pad"] == b"SAME_UPPER" and "pads" not in a
        assert a["kernel_shape"] == [7, 7]
    adds = [n for n in model.graph.node if n.op_type == "Add"]
    assert [producer[n.input[0]].op_type for n in adds] == ["BatchNormalization"] * 32
    var = _inits(model)["blocks.5.3.running_var"]
    assert var.shape == (768,) and (var > 0).all()
