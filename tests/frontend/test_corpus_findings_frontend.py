"""Frontend defects found by tools/corpus.py's mutants (issue #16): each was an internal error
(exit 1) or a compile that produced a folder ``tccc run`` then refused. Now each is refused at
import with exit 2 and one line naming the file and the node or output."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import tcc_compiler as tc
from tcc_compiler.cli.main import main


def _fc_model(b: np.ndarray, c: np.ndarray | None, outputs=("y",), **gemm) -> onnx.ModelProto:
    """x [1, 3, 8, 8] -> GlobalAveragePool -> Flatten [1, 3] -> Gemm(B, C) -> y (unchecked:
    the mutants the corpus found skip the ONNX checker too)."""
    inits = [numpy_helper.from_array(b.astype(np.float32), "B")]
    ins = ["f", "B"]
    if c is not None:
        inits.append(numpy_helper.from_array(c.astype(np.float32), "C"))
        ins.append("C")
    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["g"], name="gap"),
             helper.make_node("Flatten", ["g"], ["f"], name="flat"),
             helper.make_node("Gemm", ins, ["y"], name="fc", **gemm)]
    g = helper.make_graph(
        nodes, "fc", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


def _compile_refuses(tmp_path, capsys, model: onnx.ModelProto, *phrases: str,
                     extra: tuple[str, ...] = ()) -> str:
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    code = main(["-q", "compile", str(path), "-o", str(tmp_path / "out"), *extra])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("tccc: error: ") and str(path) in err
    for p in phrases:
        assert p in err, err
    return err


def test_gemm_weight_not_matching_its_input_is_refused(tmp_path, capsys):
    # B is [M=5, K=3] but transB is missing, so the Gemm reads B as [K=5, M=3]; C has M=5
    # values (what the mutant "drop attr fc.transB" did). Was: numpy ValueError, exit 1.
    rng = np.random.default_rng(0)
    m = _fc_model(rng.standard_normal((5, 3)), rng.standard_normal(5))
    _compile_refuses(tmp_path, capsys, m, "Gemm 'fc'", "B of shape [5, 3]", "transB=0")


@pytest.mark.parametrize("c_shape", [(4,), (2, 5), (5, 5)])
def test_gemm_bias_not_per_output_is_refused(tmp_path, capsys, c_shape):
    rng = np.random.default_rng(1)
    m = _fc_model(rng.standard_normal((5, 3)), rng.standard_normal(c_shape), transB=1)
    _compile_refuses(tmp_path, capsys, m, "Gemm 'fc'", "bias C of shape", "not per-output")


def test_gemm_bias_row_vector_still_compiles(tmp_path, capsys):
    rng = np.random.default_rng(2)
    m = _fc_model(rng.standard_normal((5, 3)), rng.standard_normal((1, 5)), transB=1)
    onnx.save(m, tmp_path / "m.onnx")
    assert main(["-q", "compile", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "o")]) == 0


def test_graph_input_listed_as_output_is_refused(tmp_path, capsys):
    # Was: compiled, and the manifest's graph_outputs named 'x', which tccc run refused.
    m = _fc_model(np.ones((5, 3)), None, outputs=("y", "x"), transB=1)
    _compile_refuses(tmp_path, capsys, m, "output 'x'", "graph input is also a graph output",
                     extra=("--strict",))
    # with host segments the host hands the input back as that output: it compiles and runs
    out = tmp_path / "seg"
    assert main(["-q", "compile", str(tmp_path / "m.onnx"), "-o", str(out)]) == 0
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(tc.load(out).run_all(x)["x"], x)


def test_duplicate_output_names_the_output(tmp_path, capsys):
    m = _fc_model(np.ones((5, 3)), None, outputs=("y", "y"), transB=1)
    _compile_refuses(tmp_path, capsys, m, "duplicate graph output 'y'")


def _conv_model(**conv_attrs) -> onnx.ModelProto:
    w = numpy_helper.from_array(np.random.default_rng(3).standard_normal((4, 3, 3, 3))
                                .astype(np.float32), "w")
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", **conv_attrs),
         helper.make_node("Relu", ["c"], ["y"], name="relu")], "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


@pytest.mark.parametrize("attr", ["strides", "pads", "dilations", "kernel_shape"])
def test_empty_list_attribute_is_refused(tmp_path, capsys, attr):
    # Was: onnx-graphsurgeon's export raised ValueError ("could not infer attribute type from
    # empty iterator"), exit 1, in both ops and compile.
    m = _conv_model()
    m.graph.node[0].attribute.append(
        helper.make_attribute(attr, [], attr_type=onnx.AttributeProto.INTS))
    _compile_refuses(tmp_path, capsys, m, "Conv 'conv'", f"attribute {attr} is an empty list")


def test_only_host_ops_is_refused(tmp_path, capsys):
    # Was: compiled into a program with no NPU output, whose manifest tccc run refused
    # (pytorch-converted/test_softmax_functional_dim3).
    g = helper.make_graph([helper.make_node("Softmax", ["x"], ["y"], axis=3, name="sm")], "sm",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    _compile_refuses(tmp_path, capsys, m, "nothing to run on the NPU", "softmax")


def test_late_stage_error_names_the_file_and_prints_no_numpy_warning(tmp_path, capsys):
    # A bias of -3e38 (mutant conv_clip_matmul_0_0068) is refused up front now
    # (test_parameter_magnitudes.py). What stays late: a chain of weights each within the
    # parameter limit (2e9 <= 2**31) whose product overflows float32 in calibration. That error
    # used to name the node or value only, and numpy's overflow RuntimeWarnings printed two
    # more lines each.
    n, w = helper.make_node, np.full((3, 3, 3, 3), 2e9, np.float32)
    nodes = [n("Conv", ["x" if i == 0 else f"c{i - 1}", "w"], [f"c{i}" if i < 4 else "y"],
               pads=[1, 1, 1, 1], name=f"conv{i}") for i in range(5)]
    g = helper.make_graph(nodes, "chain",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(w, "w")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    _compile_refuses(tmp_path, capsys, m, "calibration", "overflow")
    assert main(["-q", "ops", str(tmp_path / "m.onnx")]) == 0  # the documented limit of ops


def _invalid(kind: str) -> tuple[onnx.ModelProto, str]:
    """Models ONNX Runtime refuses as invalid that tccc used to compile (corpus mutants)."""
    m = _conv_model(pads=[1, 1, 1, 1])
    conv = m.graph.node[0]
    if kind == "ir_version":
        m.ir_version = 99
        return m, "IR version 99 is newer"
    if kind == "duplicate_name":
        m.graph.node[1].name = "conv"
        return m, "two nodes have this name"
    if kind == "auto_pad":  # read as SAME before (pads 1 on a 3x3: the shapes agree)
        m = _conv_model(pads=[1, 1, 1, 1], auto_pad="bogus")
        return m, "auto_pad 'bogus' is not one of"
    if kind == "auto_pad_and_pads":  # mutant residual_softmax_0_0145: ORT refused it mid-compile
        m = _conv_model(pads=[1, 1, 1, 1], auto_pad="SAME_LOWER")
        return m, "has both auto_pad 'SAME_LOWER' and pads"
    if kind == "kernel_shape":  # a 4-value kernel_shape leaves ONNX's shape unknown
        conv.attribute.append(helper.make_attribute("kernel_shape", [5, 3, 2, 5]))
        return m, "kernel_shape [5, 3, 2, 5] differs from its weight's [3, 3]"
    # Clip at opset 7 takes its bounds as attributes, one input only
    m.opset_import[0].version = 7
    m.graph.initializer.extend([numpy_helper.from_array(np.float32(0), "lo"),
                                numpy_helper.from_array(np.float32(6), "hi")])
    m.graph.node[1].CopyFrom(helper.make_node("Clip", ["c", "lo", "hi"], ["y"], name="clip"))
    return m, "Clip 'clip': Node(clip) with schema(::Clip:6) has input size 3"


@pytest.mark.parametrize("kind", ["ir_version", "duplicate_name", "auto_pad",
                                  "auto_pad_and_pads", "kernel_shape", "schema"])
def test_models_onnx_runtime_calls_invalid_are_refused(tmp_path, capsys, kind):
    m, phrase = _invalid(kind)
    _compile_refuses(tmp_path, capsys, m, phrase)
    assert main(["-q", "ops", str(tmp_path / "m.onnx")]) == 2  # ops agrees
    assert phrase in capsys.readouterr().err


@pytest.mark.parametrize("pads", [[3, 5, 0], [1, 1]])
def test_pads_of_the_wrong_length_are_refused(tmp_path, capsys, pads):
    # Was: IndexError in the converter, exit 1.
    _compile_refuses(tmp_path, capsys, _conv_model(pads=pads), "Conv 'conv'",
                     f"pads {pads} has {len(pads)} values")


def test_consumer_of_host_only_graph_is_refused_by_ops_too(tmp_path, capsys):
    g = helper.make_graph([helper.make_node("Softmax", ["x"], ["y"], axis=3, name="sm")], "sm",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]),
              tmp_path / "sm.onnx")
    main(["-q", "ops", str(tmp_path / "sm.onnx"), "--json"])
    import json

    places = json.loads(capsys.readouterr().out)
    assert places[0]["device"] != "npu" and "nothing to run on the NPU" in places[0]["reason"]


def test_two_nodes_writing_one_tensor_are_refused_by_ops_and_compile(tmp_path, capsys):
    """A new-user try: two Convs both writing 'y' compiled, then ``run --check`` refused it
    (ONNX Runtime: "Duplicate definition of name (y)"). SSA is part of validity now."""
    m = _conv_model(pads=[1, 1, 1, 1])
    dup = onnx.NodeProto()
    dup.CopyFrom(m.graph.node[0])
    dup.name = "conv_again"
    m.graph.node.insert(1, dup)
    phrase = "writes 'c', which another node"
    _compile_refuses(tmp_path, capsys, m, phrase)
    assert main(["-q", "ops", str(tmp_path / "m.onnx")]) == 2
    assert phrase in capsys.readouterr().err
