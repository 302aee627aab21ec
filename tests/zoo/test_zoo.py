"""Tests of the synthetic-weight model zoo (tcc_compiler.zoo)."""

from __future__ import annotations

from collections import Counter
from functools import cache

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from tcc_compiler import zoo
from tcc_compiler.datasets import Preprocess, bundled_photos, load_image
from tcc_compiler.errors import InputError

@cache
def _model(name: str) -> onnx.ModelProto:
    return zoo.build(name)


@cache
def _session(name: str) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(_model(name).SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])


@cache
def _photos(kind: str) -> tuple[np.ndarray, ...]:
    pre = Preprocess(width=224, height=224)
    return tuple(load_image(p, pre) for p in bundled_photos(kind))


def _logits(name: str, images) -> np.ndarray:
    sess = _session(name)
    return np.concatenate([sess.run(["logits"], {"input": x})[0] for x in images])


def _op_counts(model: onnx.ModelProto) -> Counter:
    return Counter(n.op_type for n in model.graph.node)


def test_names_and_unknown_name():
    assert zoo.RESNET_NAMES == ("resnet18", "resnet50", "resnet50-bn", "resnet50-v2")
    assert zoo.NAMES[:4] == zoo.RESNET_NAMES  # the other families: tests/zoo/
    with pytest.raises(InputError, match="unknown model 'resnet51'"):
        zoo.build("resnet51")


@pytest.mark.parametrize("kwargs", [{"width": 16}, {"height": 0}, {"channels": 0},
                                    {"seed": -1}, {"width": 224.0}])
def test_bad_arguments(kwargs):
    with pytest.raises(InputError):
        zoo.build("resnet18", **kwargs)


@pytest.mark.parametrize("name", ["resnet18", "resnet50-v2"])
def test_same_arguments_give_identical_bytes(name):
    assert zoo.build(name).SerializeToString() == _model(name).SerializeToString()


def test_seed_changes_weights():
    base = _model("resnet18").graph.initializer
    other = zoo.build("resnet18", seed=1).graph.initializer
    assert [t.name for t in other] == [t.name for t in base]
    assert not np.array_equal(numpy_helper.to_array(other[0]), numpy_helper.to_array(base[0]))


@pytest.mark.parametrize("name", zoo.RESNET_NAMES)
def test_checker_and_interface(name):
    model = _model(name)
    if name in ("resnet18", "resnet50-v2"):  # zoo.build already ran the full check; re-run two
        onnx.checker.check_model(model, full_check=True)
    (inp,) = [i for i in model.graph.input if i.name == "input"]
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert [d.dim_value for d in inp.type.tensor_type.shape.dim] == [1, 3, 224, 224]
    (out,) = model.graph.output
    assert out.name == "logits"
    assert [d.dim_value for d in out.type.tensor_type.shape.dim] == [1, 1000]


EXPECTED_OPS = {
    "resnet18": {"Conv": 20, "Relu": 17, "Add": 8, "MaxPool": 1, "GlobalAveragePool": 1,
                 "Flatten": 1, "Gemm": 1},
    "resnet50": {"Conv": 53, "Relu": 49, "Add": 16, "MaxPool": 1, "GlobalAveragePool": 1,
                 "Flatten": 1, "Gemm": 1},
    "resnet50-bn": {"Conv": 53, "BatchNormalization": 53, "Relu": 49, "Add": 16, "MaxPool": 1,
                    "GlobalAveragePool": 1, "Flatten": 1, "Gemm": 1},
    "resnet50-v2": {"BatchNormalization": 51, "Conv": 53, "Relu": 50, "Add": 16, "MaxPool": 1,
                    "GlobalAveragePool": 1, "Reshape": 1, "Gemm": 1},
}


@pytest.mark.parametrize("name", zoo.RESNET_NAMES)
def test_node_counts(name):
    assert dict(_op_counts(_model(name))) == EXPECTED_OPS[name]


def test_torch_export_layout():
    model = _model("resnet50")
    assert model.opset_import[0].version == 17
    nodes = {n.name: n for n in model.graph.node}
    conv1 = nodes["/layer2/layer2.0/conv1/Conv"]
    conv2 = nodes["/layer2/layer2.0/conv2/Conv"]
    attrs = lambda n: {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}  # noqa
    assert attrs(conv1)["strides"] == [1, 1] and attrs(conv2)["strides"] == [2, 2]  # v1.5
    assert len(conv1.input) == 3  # folded BatchNorm -> bias
    down = nodes["/layer2/layer2.0/downsample/downsample.0/Conv"]
    assert attrs(down)["strides"] == [2, 2] and attrs(down)["kernel_shape"] == [1, 1]
    assert "/layer4/layer4.2/relu_2/Relu" in nodes and "/layer1/layer1.0/Add" in nodes
    assert attrs(nodes["/fc/Gemm"])["transB"] == 1
    assert attrs(nodes["/maxpool/MaxPool"])["kernel_shape"] == [3, 3]
    assert conv1.output[0] == "/layer2/layer2.0/conv1/Conv_output_0"
    # a projection shortcut only on the first block of each stage
    assert sum("downsample" in n for n in nodes) == 4
    r18 = {n.name for n in _model("resnet18").graph.node}
    assert "/layer1/layer1.0/downsample/downsample.0/Conv" not in r18
    assert "/layer2/layer2.0/downsample/downsample.0/Conv" in r18


def test_unfolded_bn_layout():
    model = _model("resnet50-bn")
    inits = {t.name for t in model.graph.initializer}
    assert {"conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var",
            "layer1.0.downsample.1.running_var", "fc.weight", "fc.bias"} <= inits
    for node in model.graph.node:
        if node.op_type == "Conv":
            assert len(node.input) == 2
    gammas = numpy_helper.to_array(next(t for t in model.graph.initializer
                                        if t.name == "layer3.1.bn2.weight"))
    assert gammas.min() >= 0.4 and gammas.max() <= 2.0 and gammas.std() > 0.3


def test_resnet50_v2_layout():
    model = _model("resnet50-v2")
    assert model.ir_version == 3 and model.opset_import[0].version == 7
    inputs = {i.name for i in model.graph.input}
    assert {t.name for t in model.graph.initializer} <= inputs  # IR 3: weights are inputs too
    first = model.graph.node[0]
    assert first.op_type == "BatchNormalization" and first.input[0] == "input"
    assert {a.name for a in first.attribute} == {"epsilon", "momentum"}
    ops = [n.op_type for n in model.graph.node]
    assert ops[1:5] == ["Conv", "BatchNormalization", "Relu", "MaxPool"]
    assert ops[-5:] == ["BatchNormalization", "Relu", "GlobalAveragePool", "Reshape", "Gemm"]
    nodes = {n.name: n for n in model.graph.node}
    # stage 2, block 0: BN -> Relu -> conv 1x1 (s1) -> BN -> Relu -> conv 3x3 (s2) ...
    strides = {n: onnx.helper.get_attribute_value(a) for n in ("resnetv24_stage2_conv0_fwd",
               "resnetv24_stage2_conv1_fwd", "resnetv24_stage2_conv3_fwd")
               for a in nodes[n].attribute if a.name == "strides"}
    assert strides == {"resnetv24_stage2_conv0_fwd": [1, 1], "resnetv24_stage2_conv1_fwd": [2, 2],
                       "resnetv24_stage2_conv3_fwd": [2, 2]}
    # the projection reads the pre-activated tensor, shared with the main branch
    assert nodes["resnetv24_stage2_conv3_fwd"].input[0] == "resnetv24_stage2_activation0"
    assert nodes["resnetv24_stage2_conv0_fwd"].input[0] == "resnetv24_stage2_activation0"


def test_resnet50_equals_resnet50_bn_in_onnxruntime():
    images = _photos("calib")[:3]
    folded, unfolded = _logits("resnet50", images), _logits("resnet50-bn", images)
    np.testing.assert_allclose(folded, unfolded, rtol=1e-4, atol=1e-4 * float(unfolded.std()))


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "resnet50-v2"])
def test_logits_are_healthy_and_discriminative(name):
    logits = _logits(name, _photos("eval"))
    assert np.isfinite(logits).all()
    stds = logits.std(axis=1)
    assert 0.5 < stds.min() and stds.max() < 20.0
    assert len(set(logits.argmax(axis=1).tolist())) >= 5


def test_save_is_atomic_and_weights_do_not_depend_on_size(tmp_path):
    dest = zoo.save("resnet18", tmp_path / "r18.onnx", width=96, height=64)
    assert [p.name for p in tmp_path.iterdir()] == ["r18.onnx"]  # no temp file left behind
    saved = onnx.load(dest)
    assert saved.SerializeToString() == dest.read_bytes()
    dims = [d.dim_value for d in saved.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 64, 96]
    base = {t.name: numpy_helper.to_array(t) for t in _model("resnet18").graph.initializer}
    for t in saved.graph.initializer:  # BatchNorm statistics come from fixed-size images
        np.testing.assert_array_equal(numpy_helper.to_array(t), base[t.name])
    with pytest.raises(InputError, match="cannot write"):
        zoo.save("resnet18", tmp_path / "missing" / "r18.onnx")


def test_saved_file_has_normal_mode(tmp_path):
    """The zoo file is written atomically but gets the mode a plain open() gives (0666 less
    the umask), not the temporary file's private 0600."""
    import os

    umask = os.umask(0)
    os.umask(umask)
    p = zoo.save("resnet18", tmp_path / "m.onnx", width=32, height=32)
    assert p.stat().st_mode & 0o777 == 0o666 & ~umask
    assert [f.name for f in tmp_path.iterdir()] == ["m.onnx"]
