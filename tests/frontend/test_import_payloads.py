"""The import reads each float initializer's payload once: ``raw_data`` copies the payload on
every access (ResNet-50: 100 MB each time), so the validity check's values are the ones the
graph is built from."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from tcc_compiler.frontend import import_onnx
from tcc_compiler.frontend.loader import check_tensors
from tcc_compiler.ir.ops import Op


def _conv_model(make_model, rng) -> onnx.ModelProto:
    return make_model([helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1])],
                      [1, 4, 6, 6], {"w": rng.standard_normal((8, 4, 3, 3)),
                                     "b": rng.standard_normal(8)})


def test_check_tensors_returns_the_values_it_read(make_model, rng):
    m = _conv_model(make_model, rng)
    read = check_tensors(m, "m.onnx")
    assert sorted(read) == ["b", "w"]
    for t in m.graph.initializer:
        assert np.array_equal(read[t.name].reshape(tuple(t.dims)),
                              onnx.numpy_helper.to_array(t))


def test_import_reads_each_float_payload_once(make_model, rng, monkeypatch):
    m = _conv_model(make_model, rng)
    calls = []
    to_array = onnx.numpy_helper.to_array
    monkeypatch.setattr(onnx.numpy_helper, "to_array",
                        lambda t, *a: calls.append(t.name) or to_array(t, *a))
    g = import_onnx(m)
    assert calls == []     # the check's values were converted, no second copy
    conv = next(n for n in g.nodes if n.op is Op.CONV)
    want = {t.name: to_array(t) for t in m.graph.initializer}
    assert np.array_equal(conv.inputs[1].const, want["w"])
    assert conv.inputs[1].const.dtype == np.float32
    assert np.array_equal(conv.inputs[2].const, want["b"])


def test_float32_weights_are_not_copied(make_model, rng):
    """Conv and Gemm (alpha 1) float32 weights are the payload's values themselves, read-only
    (a copy would be writeable): the import no longer copies ResNet-50's 100 MB of weights;
    the values are the initializers'."""
    m = make_model([helper.make_node("Conv", ["x", "w", "b"], ["c"]),
                    helper.make_node("Flatten", ["c"], ["f"]),
                    helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], transB=1)],
                   [1, 4, 1, 1], {"w": rng.standard_normal((8, 4, 1, 1)),
                                  "b": rng.standard_normal(8),
                                  "fw": rng.standard_normal((10, 8)),
                                  "fb": rng.standard_normal(10)})
    g = import_onnx(m)
    want = {t.name: onnx.numpy_helper.to_array(t) for t in m.graph.initializer}
    conv = next(n for n in g.nodes if n.op is Op.CONV)
    fc = next(n for n in g.nodes if n.op is Op.FC)
    for w, name in ((conv.inputs[1].const, "w"), (fc.inputs[1].const, "fw")):
        assert w.dtype == np.float32 and not w.flags.writeable
        assert np.array_equal(w.reshape(want[name].shape), want[name])
