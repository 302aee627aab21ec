"""A segmented folder's top-level manifest.json is validated before it is trusted
(runtime/segmented_check.py): a damaged field, or segments whose tensors do not connect, is
one error line naming the field, exit 2.

Before, only the presence of six keys was checked: a null ``input.shape``, a
``graph_outputs`` naming no output, a segment reading a tensor no earlier segment makes, a
segment listing an output it does not make, an empty ``segments`` list, a null ``model`` or
``target`` ended in KeyError / TypeError / AttributeError inside ``tccc run``, ``eval``,
``report`` or ``export-onnx --ort`` (exit 1). The model is conv -> LRN (host) -> conv.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
from helpers import PHOTO
from helpers.cli import one_line_error, run_cli
from onnx import TensorProto, helper, numpy_helper

import tcc_compiler as tc


@pytest.fixture(scope="module")
def seg_folder(tmp_path_factory):
    """(model path, segmented output folder): conv -> LRN (host segment) -> conv, 16x16x3."""
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array((rng.standard_normal((8, 3, 3, 3)) * .2).astype(np.float32),
                                 "w1")
    w2 = numpy_helper.from_array((rng.standard_normal((4, 8, 3, 3)) * .2).astype(np.float32),
                                 "w2")
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("LRN", ["c"], ["l"], size=3),
             helper.make_node("Conv", ["l", "w2"], ["y"], pads=[1, 1, 1, 1])]
    g = helper.make_graph(nodes, "seg",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 16, 16])],
                          [w1, w2])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    d = tmp_path_factory.mktemp("seg")
    onnx.save(model, d / "seg.onnx")
    tc.compile(str(d / "seg.onnx"), "16x16x3").save(d / "out")
    return d / "seg.onnx", d / "out"


_BAD = [  # (path, value; "DEL" deletes), field named
    (("input", "shape"), None, "input.shape"),
    (("input", "shape"), [2, 3, 16, 16], "input.shape"),
    (("input", "shape"), [1, 3, 32, 32], "input.shape"),   # well-formed, not the model's
    (("input", "name"), None, "input.name"),
    (("input", "onnx_name"), 5, "input.onnx_name"),
    (("input", "onnx_layout"), "XYZ", "input.onnx_layout"),
    (("outputs",), [], "outputs"),
    (("outputs", 0, "shape"), "x", "outputs[0].shape"),
    (("outputs", 0, "segment"), 7, "outputs[0].segment"),
    (("outputs", 0, "segment"), 0, "outputs[0].segment"),
    (("outputs", 0, "segment"), "2", "outputs[0].segment"),
    (("graph_outputs",), ["nope"], "graph_outputs"),
    (("graph_outputs",), None, "graph_outputs"),
    (("model",), None, "model"),
    (("model", "sha256"), "DEL", "model.sha256"),
    (("target",), None, "target"),
    (("manifest_version",), 1, "manifest_version"),
    (("segments",), [], "segments"),
    (("segments", 0, "inputs"), None, "segments[0].inputs"),
    (("segments", 0, "inputs"), ["zzz"], "segments[0].inputs"),
    (("segments", 0, "outputs"), ["zzz"], "segments[0].outputs"),
    (("segments", 1, "inputs"), ["nope"], "segments[1].inputs"),
    (("segments", 1, "outputs"), None, "segments[1].outputs"),
    (("segments", 2, "index"), 5, "segments[2].index"),
    (("preprocess", "width"), 17, "preprocess.width"),    # a record for another input
]


def _damaged(out, tmp_path, path, value):
    bad = tmp_path / "bad"
    shutil.rmtree(bad, ignore_errors=True)
    shutil.copytree(out, bad)
    m = json.loads((bad / "manifest.json").read_text())
    d = m
    for k in path[:-1]:
        d = d[k]
    if value == "DEL":
        del d[path[-1]]
    else:
        d[path[-1]] = value
    (bad / "manifest.json").write_text(json.dumps(m))
    return bad


@pytest.mark.parametrize("path,value,field", _BAD, ids=[f"{b[2]}={b[1]!r:.10}" for b in _BAD])
def test_every_command_refuses_a_damaged_field_in_one_line(seg_folder, tmp_path, capsys, path,
                                                            value, field):
    model, out = seg_folder
    bad = _damaged(out, tmp_path, path, value)
    ds = tmp_path / "ds" / "a"
    ds.mkdir(parents=True, exist_ok=True)
    shutil.copy(PHOTO, ds / "p.jpg")
    for argv in (["run", bad, PHOTO, "--check", model], ["inspect", bad],
                 ["report", bad, "-o", tmp_path / "r.html"],
                 ["export-onnx", bad, "--ort", "-o", tmp_path / "e.onnx"],
                 ["eval", bad, "--images", tmp_path / "ds", "--no-progress"]):
        code, _, err = run_cli(argv, capsys)
        assert code == 2, (argv[0], err)
        assert f"manifest.json: {field}" in one_line_error(err), (argv[0], err)


def test_the_compiled_segmented_folder_runs(seg_folder, capsys):
    model, out = seg_folder
    code, o, err = run_cli(["run", out, PHOTO, "--check", model, "--json"], capsys)
    assert code == 0, err
    assert json.loads(o)["check"]["bit_exact"] is True


def test_an_edited_input_shape_before_a_host_segment_is_refused(tmp_path, capsys):
    """LRN (host, reading the model input) -> conv: the top-level ``input.shape`` is checked
    against the host graph's input too, not only against an NPU program's."""
    rng = np.random.default_rng(1)
    w = numpy_helper.from_array((rng.standard_normal((4, 3, 3, 3)) * .2).astype(np.float32),
                                "w")
    nodes = [helper.make_node("LRN", ["x"], ["l"], size=3),
             helper.make_node("Conv", ["l", "w"], ["y"], pads=[1, 1, 1, 1])]
    g = helper.make_graph(nodes, "hostfirst",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 16, 16])],
                          [w])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "m.onnx")
    tc.compile(str(tmp_path / "m.onnx"), "16x16x3").save(tmp_path / "out")
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert m["segments"][0]["device"] == "host" and m["input"]["name"] in \
        m["segments"][0]["inputs"]
    code, _, err = run_cli(["inspect", tmp_path / "out"], capsys)
    assert code == 0, err
    bad = _damaged(tmp_path / "out", tmp_path, ("input", "shape"), [1, 3, 24, 16])
    code, _, err = run_cli(["inspect", bad], capsys)
    assert code == 2, err
    assert "manifest.json: input.shape" in one_line_error(err) and "host_0.onnx" in err, err


def test_a_newer_tccc_segmented_folder_says_to_upgrade(seg_folder, tmp_path, capsys):
    # it said "recompile the model", as to an older folder, as the plain manifest did
    _, out = seg_folder
    bad = _damaged(out, tmp_path, ("manifest_version",), 99)
    m = json.loads((bad / "manifest.json").read_text())
    m["tool_version"] = "9.0"
    (bad / "manifest.json").write_text(json.dumps(m))
    code, _, err = run_cli(["run", bad, PHOTO], capsys)
    line = one_line_error(err)
    assert code == 2
    assert "manifest_version 99" in line and "newer tccc (9.0)" in line and "upgrade" in line
