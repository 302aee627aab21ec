"""The onnx wheel's ``backend/test/data/light`` models: each compiles and runs bit-exact on the
reference executor, or is refused with one message listing every unsupported node at once.

Expected refusals are written from the models' own node lists (every node of a refused op type
must be named), not from tccc's output. The float import of the accepted models is compared
with ONNX Runtime. Compiling the 224x224 models takes tens of seconds each: those are slow.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from tcc_compiler.cli.main import main
from tcc_compiler.errors import UnsupportedError
from tcc_compiler.frontend import import_onnx

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
PHOTO = Path(__file__).resolve().parents[2] / "tcc_compiler/data/photos/eval/camera_man.jpg"

#: model -> op types refused (every node of that type is listed), or None when it compiles.
#: AveragePool with pads and count_include_pad=0 (Inception's and ShuffleNet's) runs on the
#: NPU with a divisor per pixel, ShuffleNet's channel shuffle (Reshape-Transpose-Reshape) as a
#: DMA-only shuffle op. (SqueezeNet's opset-9 Softmax over
#: axis 1 of [1, 1000, 1, 1] is a softmax over the channels, accepted as a host op.) Channel
#: Concat runs on the NPU (views of one buffer), so SqueezeNet and DenseNet-121 compile.
EXPECTED = {
    "light_bvlc_alexnet": {"LRN"},
    "light_densenet121": None,
    "light_inception_v1": {"LRN"},
    "light_inception_v2": None,
    "light_resnet50": None,
    "light_shufflenet": None,
    "light_squeezenet": None,
    "light_vgg19": None,
    "light_zfnet512": {"LRN"},
}

pytestmark = pytest.mark.skipif(not LIGHT.is_dir(), reason="onnx wheel without light models")


def _attr(node, name, default):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _must_refuse(node) -> bool:
    """Does this node break a documented constraint (decided from the ONNX node alone)?"""
    if node.op_type == "LRN":
        return True
    return False


def test_light_models_present():
    assert sorted(p.stem for p in LIGHT.glob("*.onnx")) == sorted(EXPECTED)


#: Small enough to import in a few seconds; the others fold 10-100 MB of weights (slow).
FAST = {"light_squeezenet", "light_inception_v1", "light_resnet50"}


def _params(names):
    return [n if n in FAST else pytest.param(n, marks=pytest.mark.slow) for n in sorted(names)]


@pytest.mark.parametrize("name", _params(k for k, v in EXPECTED.items() if v))
def test_refused_with_every_node_listed(name):
    model = onnx.load(LIGHT / f"{name}.onnx")
    with pytest.raises(UnsupportedError) as info:
        import_onnx(LIGHT / f"{name}.onnx")
    msg = str(info.value)
    assert "\n" not in msg and str(LIGHT / name) in msg
    listed = {p.split(" ", 1)[0] for p in info.value.problems if not p.startswith("(")}
    assert listed == EXPECTED[name]
    expect = [n for n in model.graph.node if n.op_type in EXPECTED[name] and _must_refuse(n)]
    assert len(info.value.problems) == len(expect), info.value.problems
    # one entry per (op, reason), naming every node: "Concat 'a', 'b': reason"
    from tcc_compiler.errors import _group_problems
    entries = _group_problems(info.value.problems)
    assert msg.endswith(" unsupported node(s): " + "; ".join(entries))
    for n in expect:
        name = f"'{n.name or n.output[0]}'"
        assert any(e.startswith(n.op_type + " ") and name in e.split(": ")[0]
                   for e in entries), name
    reasons = [e.split(": ", 1)[1] for e in entries]
    assert len(reasons) == len(set(reasons))


def test_refusal_cli_one_line(tmp_path, capsys):
    path = LIGHT / "light_inception_v1.onnx"
    code = main(["compile", str(path), "-o", str(tmp_path / "o"), "--strict"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "2 unsupported node(s)" in err and "LRN" in err and "Concat" not in err


@pytest.mark.parametrize("name", _params(["light_resnet50", "light_vgg19", "light_squeezenet",
                                           "light_densenet121"]))
def test_accepted_float_import_matches_ort(name, check_vs_ort):
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    check_vs_ort(str(LIGHT / f"{name}.onnx"), x, passes=name == "light_resnet50",
                 rtol=1e-3, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(k for k, v in EXPECTED.items() if v is None))
def test_accepted_compile_and_run_bit_exact(name, tmp_path, capsys):
    path = str(LIGHT / f"{name}.onnx")
    assert main(["-q", "compile", path, "-o", str(tmp_path / "o")]) == 0
    capsys.readouterr()
    assert main(["run", str(tmp_path / "o"), str(PHOTO), "--check", path, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["check"]["bit_exact"] is True
    assert out["check"]["top1_agree"] is True
