"""ir/feeds.py: one input of a graph with one or several inputs, and the stages taking it."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from tcc_compiler.driver import compile_model
from tcc_compiler.errors import InputError
from tcc_compiler.frontend.onnx_import import SEGMENT_META
from tcc_compiler.interp import run_float
from tcc_compiler.ir.feeds import feeds, first
from tcc_compiler.ir.graph import Graph, Value
from tcc_compiler.options import CompileOptions
from tcc_compiler.quant.golden import run_golden
from tcc_compiler.quant.params import quantize_input


def _graph(*shapes) -> Graph:
    g = Graph(name="g")
    g.inputs = [Value(f"i{k}", s) for k, s in enumerate(shapes)]
    return g


def test_one_input_takes_an_array_or_a_dict():
    g = _graph((1, 2, 3, 3))
    x = np.ones((1, 2, 3, 3), np.float64)
    assert feeds(g, x)["i0"].dtype == np.float32
    assert list(feeds(g, {"i0": x, "other": 1})) == ["i0"]
    assert first({"a": x}) is x and first(x) is x


def test_several_inputs_need_a_dict_with_every_input_shaped_right():
    g = _graph((1, 2, 3, 3), (1, 1, 3, 3))
    with pytest.raises(InputError, match="takes 2 inputs"):
        feeds(g, np.zeros((1, 2, 3, 3)))
    with pytest.raises(InputError, match="i1"):
        feeds(g, {"i0": np.zeros((1, 2, 3, 3))})
    with pytest.raises(InputError, match=r"'i1': shape \(1, 2, 3, 3\)"):
        feeds(g, {"i0": np.zeros((1, 2, 3, 3)), "i1": np.zeros((1, 2, 3, 3))})


@pytest.fixture(scope="module")
def two_input_segment():
    """A segment model (marked as extract_model marks it) reading 'a' and 'b': Conv(a) + b,
    compiled on calibration dicts."""
    rng = np.random.default_rng(0)
    w = nh.from_array((rng.standard_normal((4, 4, 3, 3)) * 0.3).astype(np.float32), "w")
    g = h.make_graph([h.make_node("Conv", ["a", "w"], ["c"], pads=[1] * 4),
                      h.make_node("Add", ["c", "b"], ["y"])], "seg",
                     [h.make_tensor_value_info("a", T.FLOAT, [1, 4, 8, 8]),
                      h.make_tensor_value_info("b", T.FLOAT, [1, 4, 8, 8])],
                     [h.make_tensor_value_info("y", T.FLOAT, [1, 4, 8, 8])], [w])
    model = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    h.set_model_props(model, {SEGMENT_META: "npu 2"})
    cal = [{"a": rng.standard_normal((1, 4, 8, 8)).astype(np.float32),
            "b": rng.standard_normal((1, 4, 8, 8)).astype(np.float32)} for _ in range(4)]
    return compile_model(model, CompileOptions(calibration=cal)), cal


def test_segment_with_two_inputs_compiles_and_matches_float(two_input_segment):
    art, cal = two_input_segment
    assert [v.name for v in art.graph.inputs] == ["a", "b"]
    assert [r["name"] for r in art.manifest["inputs"]] == ["a", "b"]
    assert art.manifest["inputs"][1]["offset"] >= 4 * 8 * 8
    for x in cal:
        ref = run_float(art.float_graph, x)["y"]
        gold = run_golden(art.graph, x)["y"]
        noise = float(np.sum((ref - gold) ** 2)) / float(np.sum(ref ** 2))
        assert gold.shape == (1, 4, 8, 8) and noise < 10 ** -2.5   # SQNR > 25 dB


def test_golden_takes_an_already_quantized_input(two_input_segment):
    """An integer array is the input as the NPU holds it (an int8 hand-off)."""
    art, cal = two_input_segment
    b = art.graph.inputs[1]
    q = quantize_input(cal[1]["b"], b)
    assert q.dtype == np.int8
    via_float = run_golden(art.graph, cal[1])
    via_int = run_golden(art.graph, {"a": cal[1]["a"], "b": q})
    assert np.array_equal(via_float["int:y"], via_int["int:y"])
    with pytest.raises(InputError, match="'b'"):
        run_golden(art.graph, {"a": cal[1]["a"]})
