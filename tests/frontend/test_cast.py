"""``Cast(to=FLOAT)`` of a float32 tensor is a no-op view: torch.onnx writes it for ``x.float()``
in a model that normalizes its own input (``(x.float() / 255 - mean) / std``, found exporting
torchvision's resnet18 wrapped that way). It used to be an unknown op: a host segment for the
Cast alone, 521 us of host time and boundary conversions on resnet18, and ``--strict`` refused
the model. Other Casts stay refused, and a Cast whose input type is unknown because its producer
was refused is not aliased into the NPU graph."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import tcc_compiler as tc
from tcc_compiler.frontend.context import Ctx, Unsupported
from tcc_compiler.frontend.views import cast
from tcc_compiler.ir.graph import Graph
from tcc_compiler.runtime import load_program
from tcc_compiler.runtime.check import Checker
from tests.conftest import make_model_impl

N = helper.make_node
HW = 16


def _normalizing_model(to: int = TensorProto.FLOAT) -> onnx.ModelProto:
    """x -> Cast(to) -> Div 255 -> Sub mean[1,3,1,1] -> Div std[1,3,1,1] -> Conv 3x3 -> Relu,
    the nodes and constants torch.onnx (opset 17, TorchScript exporter) writes; for another
    ``to``, a Cast back to FLOAT after it (``x.half().float()``)."""
    r = np.random.default_rng(0)
    inits = {"k255": np.array(255.0, np.float32),
             "m": np.array([0.485, 0.456, 0.406], np.float32).reshape(1, 3, 1, 1),
             "sd": np.array([0.229, 0.224, 0.225], np.float32).reshape(1, 3, 1, 1),
             "w": (r.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32),
             "b": (r.standard_normal(8) * 0.1).astype(np.float32)}
    nodes = [N("Cast", ["x"], ["xf"], to=to, name="/Cast")]
    if to != TensorProto.FLOAT:
        nodes = [N("Cast", ["x"], ["xt"], to=to, name="/Cast"),
                 N("Cast", ["xt"], ["xf"], to=TensorProto.FLOAT, name="/Cast_back")]
    nodes += [
             N("Div", ["xf", "k255"], ["d"], name="/Div"),
             N("Sub", ["d", "m"], ["s"], name="/Sub"),
             N("Div", ["s", "sd"], ["n"], name="/Div_1"),
             N("Conv", ["n", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="/conv1/Conv"),
             N("Relu", ["c"], ["y"], name="/relu/Relu")]
    return make_model_impl(nodes, [1, 3, HW, HW], inits, opset=17)


def _images(seeds) -> list[np.ndarray]:
    return [np.random.default_rng(s).uniform(0, 255, (1, 3, HW, HW)).astype(np.float32)
            for s in seeds]


def test_float_cast_of_the_float_input_runs_on_the_npu_bit_exact(tmp_path):
    model = _normalizing_model()
    places = {p.node: p for p in tc.partition(model, f"{HW}x{HW}x3")}
    assert places["/Cast"].device == "npu" and places["/Cast"].supported
    assert all(p.device == "npu" for p in places.values()), places
    m = tc.compile(model, f"{HW}x{HW}x3", calibration=_images(range(8)), strict=True)
    onnx.save(model, tmp_path / "m.onnx")
    prog = load_program(m.save(tmp_path / "out"))
    checker = Checker(prog, tmp_path / "m.onnx")
    for x in _images(range(3)):
        c = checker.check(x, prog.run(x))
        assert c["bit_exact"] and (c["sqnr_db"] is None or c["sqnr_db"] >= 30.0), c


@pytest.mark.parametrize("to", [TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.INT32])
def test_other_casts_are_refused_naming_the_type(to):
    places = {p.node: p for p in tc.partition(_normalizing_model(to), f"{HW}x{HW}x3")}
    assert places["/Cast"].device != "npu"
    name = TensorProto.DataType.Name(to)
    assert f"Cast to {name}" in places["/Cast"].reason
    assert places["/Cast_back"].device != "npu"
    with pytest.raises(tc.errors.UnsupportedError, match=name):
        tc.compile(_normalizing_model(to), f"{HW}x{HW}x3", strict=True)


@pytest.mark.parametrize("typed", [TensorProto.INT64, TensorProto.UNDEFINED])
def test_cast_of_a_non_float_or_refused_producer_is_not_aliased(typed):
    """An int64 tensor (e.g. a host ArgMax's indices) cast to float changes type: refused; a
    refused producer's stand-in (typed float32 by Ctx.poison) of unknown type: refused too."""
    ctx = Ctx(Graph(name="g"), "m.onnx", 17)
    prod = N("ArgMax", ["x"], ["i"], name="am")
    ctx.add_input("x", (1, 3, 4, 4))
    ctx.onnx_shapes["i"] = (1, 1, 4, 4)
    if typed:
        ctx.onnx_types["i"] = typed
    ctx.poison(prod)
    with pytest.raises(Unsupported, match="Cast of a"):
        cast(ctx, N("Cast", ["i"], ["f"], to=TensorProto.FLOAT, name="c"))
