"""A ``--dump-ir`` file edited by hand is bad input: compiling it gives one line naming the file
and the node, exit 2. A stride or dilation of 0 in a conv or pool used to reach the shape
rule's division (ZeroDivisionError, "slice step cannot be zero": exit 1)."""

from __future__ import annotations

import re

import numpy as np
import onnx
import pytest
from helpers.cli import one_line_error, run_cli
from onnx import TensorProto, helper, numpy_helper

from tcc_compiler.passes import PASS_NAMES


def _dump_ir(tmp, graph):
    """Compile ``graph`` (opset 13) with ``--dump-ir``; return the dump folder."""
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(tmp / "m.onnx"))
    from tcc_compiler.cli.main import main

    assert main(["-q", "compile", str(tmp / "m.onnx"), "-o", str(tmp / "out"),
                 "--dump-ir", str(tmp / "dump")]) == 0
    return tmp / "dump"


def _compile_edited(tmp_path, capsys, text, npz):
    """Compile ``text`` as ``e.tir`` (with the ``npz`` sidecar file when it exists):
    (exit code, stdout, one-line error)."""
    (tmp_path / "e.tir").write_text(text)
    if npz.exists():   # small weights may be written inline
        (tmp_path / "e.npz").write_bytes(npz.read_bytes())
    code, out, err = run_cli(["-q", "compile", tmp_path / "e.tir", "-o", tmp_path / "out"],
                             capsys)
    return code, out, one_line_error(err) if code else ""


@pytest.fixture(scope="module")
def import_dump(tmp_path_factory):
    """The 00-import.tir of a conv -> maxpool model."""
    tmp = tmp_path_factory.mktemp("dump")
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array((rng.standard_normal((4, 3, 3, 3)) * 0.2).astype(np.float32),
                                "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                              name="conv"),
             helper.make_node("MaxPool", ["c"], ["y"], kernel_shape=[2, 2], strides=[2, 2],
                              name="pool")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                     [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4, 4])],
                          [w])
    dump = _dump_ir(tmp, g)
    return dump / "00-import.tir"


@pytest.mark.parametrize("pattern, edit, node", [
    (r"strides=\[1,1\]", "strides=[1,0]", "conv"),
    (r"dilations=\[1,1\]", "dilations=[0,1]", "conv"),
    (r"strides=\[2,2\]", "strides=[0,2]", "pool"),
    (r"pads=\[1,1,1,1\]", "pads=[1,-1,1,1]", "conv"),
])
def test_a_zero_stride_or_dilation_in_a_dump_is_a_one_line_error(import_dump, tmp_path, capsys,
                                                                  pattern, edit, node):
    edited, n = re.subn(pattern, edit, import_dump.read_text(), count=1)
    assert n == 1
    code, out, line = _compile_edited(tmp_path, capsys, edited, import_dump.with_suffix(".npz"))
    assert code == 2 and out == ""
    assert "e.tir" in line and f"node '{node}'" in line and "must be >= 1" in line
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def pointwise_dumps(tmp_path_factory):
    """The --dump-ir folder of a 1x1 conv (its dilation changes no shape)."""
    tmp = tmp_path_factory.mktemp("pw")
    w = numpy_helper.from_array(np.full((4, 3, 1, 1), 0.1, np.float32), "w")
    g = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], name="conv")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
                          [w])
    return _dump_ir(tmp, g)


@pytest.mark.parametrize("stage", ["00-import", f"{len(PASS_NAMES):02d}-legalize",
                                   f"{len(PASS_NAMES) + 1:02d}-quantize"])
def test_a_field_out_of_range_in_a_later_dump_is_refused_as_from_the_import(
        pointwise_dumps, tmp_path, capsys, stage):
    """A dump written after the legalize stage skips the legalizer on resume, so a dilation of
    2**31 reached the command encoder ("field dw = 2147483648 outside u8 range", exit 1); the
    legalizer's field checks now run on every resumed graph."""
    tir = pointwise_dumps / f"{stage}.tir"
    edited, n = re.subn(r"dilations=\[1,1\]", "dilations=[1,2147483648]", tir.read_text(),
                        count=1)
    assert n == 1
    code, out, line = _compile_edited(tmp_path, capsys, edited, tir.with_suffix(".npz"))
    assert code == 2 and out == ""
    assert "'conv'" in line and "dw = 2147483648" in line and "field range" in line
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def softmax_dump(tmp_path_factory):
    """The 00-import.tir of conv -> flatten -> softmax (a rank-2 softmax at the graph end)."""
    tmp = tmp_path_factory.mktemp("sm")
    w = numpy_helper.from_array(np.full((4, 3, 1, 1), 0.1, np.float32), "w")
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
         helper.make_node("Flatten", ["c"], ["f"], name="flat"),
         helper.make_node("Softmax", ["f"], ["y"], axis=1, name="sm")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])], [w])
    return _dump_ir(tmp, g) / "00-import.tir"


@pytest.mark.parametrize("axis", [2, -3, 7])
def test_an_axis_outside_the_rank_in_a_dump_is_a_one_line_error(softmax_dump, tmp_path, capsys,
                                                                 axis):
    """``softmax {axis=2}`` on a rank-2 value raised numpy's AxisError in the golden model
    (exit 1); shape rules wrapped other out-of-range axes silently (``axis % rank``)."""
    edited, n = re.subn(r"axis=-1\b", f"axis={axis}", softmax_dump.read_text(), count=1)
    assert n == 1
    code, out, line = _compile_edited(tmp_path, capsys, edited, softmax_dump.with_suffix(".npz"))
    assert code == 2 and out == ""
    assert "e.tir" in line and "'sm'" in line and f"axis {axis} outside" in line
    assert not (tmp_path / "out").exists()
