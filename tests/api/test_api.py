"""Python API (compile/load/CompiledModel), partition(), and `tccc ops`."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort
import pytest
from onnx import helper

import tcc_compiler as tc
from tcc_compiler.cli.main import main
from tcc_compiler.errors import InputError, TccError
from tcc_compiler.runtime.check import sqnr_db


@pytest.fixture(scope="module")
def net():
    from conftest import residual_net_impl

    return residual_net_impl(hw=32, c=8)


@pytest.fixture(scope="module")
def calib():
    rng = np.random.default_rng(0)
    return [rng.standard_normal((1, 3, 32, 32)).astype(np.float32) for _ in range(4)]


@pytest.fixture(scope="module")
def compiled(net, calib):
    return tc.compile(net, (32, 32, 3), calibration=calib)


def _ort(model, x):
    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def test_run_matches_onnx_runtime_float(compiled, net, calib):
    for x in calib[:2]:
        y = compiled.run(x)
        assert y.dtype == np.float32 and y.shape == (1, 10)
        assert sqnr_db(_ort(net, x), y) > 20.0


def test_path_proto_and_graphsurgeon_give_identical_binaries(compiled, net, calib, tmp_path):
    path = tmp_path / "net.onnx"
    onnx.save(net, str(path))
    by_path = tc.compile(str(path), "32x32x3", calibration=calib)
    by_gs = tc.compile(gs.import_onnx(net), "32x32x3", calibration=calib)
    for other in (by_path, by_gs):
        assert other.artifacts.cmd_bin == compiled.artifacts.cmd_bin
        assert other.artifacts.weight_bin == compiled.artifacts.weight_bin


def test_ir_has_every_stage_in_order(compiled):
    stages = list(compiled.ir)
    assert stages[0] == "import" and stages[-1] == "quantize"
    assert "fuse-activation" in stages and "legalize" in stages
    assert all(t.startswith("graph ") for t in compiled.ir.values())
    assert "batchnorm" in compiled.ir["import"] and "batchnorm" not in compiled.ir["legalize"]
    assert "quant" in compiled.ir["quantize"]


def test_save_load_round_trip(compiled, calib, tmp_path):
    out = compiled.save(tmp_path / "out")
    m = tc.load(out)
    assert m.report == json.loads(json.dumps(compiled.report))
    assert m.input_shape == (1, 3, 32, 32)
    assert np.array_equal(m.run(calib[0]), compiled.run(calib[0]))
    assert m.ir["quantize"] == (out / "quantized.tir").read_text()
    assert list(m.run_all(calib[0])) == m.manifest["graph_outputs"]
    copy = m.save(tmp_path / "copy")
    assert (copy / "npu_cmd.bin").read_bytes() == (out / "npu_cmd.bin").read_bytes()


def test_errors_are_tcc_errors(tmp_path, compiled):
    with pytest.raises(InputError, match="expected a path"):
        tc.compile(12345, "32x32x3")
    with pytest.raises(InputError):
        tc.load(tmp_path / "nothing")
    with pytest.raises(InputError, match="shape"):
        compiled.run(np.zeros((1, 3, 16, 16), np.float32))


def _with_tail(net, tail_op: str) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(net)
    old = m.graph.output[0].name
    m.graph.node.append(helper.make_node(tail_op, [old], ["z"], name=f"tail_{tail_op}"))
    del m.graph.output[:]
    m.graph.output.append(helper.make_tensor_value_info("z", onnx.TensorProto.FLOAT, [1, 10]))
    return m


def test_partition_places_fused_nodes_on_npu_and_softmax_on_host(net):
    places = tc.partition(_with_tail(net, "Softmax"), "32x32x3")
    assert [p.node for p in places] == [n.name for n in net.graph.node] + ["tail_Softmax"]
    by = {p.node: p for p in places}
    assert by["tail_Softmax"].device == "host" and "host CPU" in by["tail_Softmax"].reason
    assert by["b1add"].device == "npu" and by["b1add"].npu_op == "conv"
    assert "b1c2" in by["b1add"].reason  # the add is fused into the conv that produces it
    assert by["stem_bn"].device == "npu"
    assert all(p.device == "npu" for p in places if p.node != "tail_Softmax")


def test_partition_names_the_unsupported_node_and_reason(net):
    # by default a node the NPU cannot run (Sin) runs on the host, in ONNX Runtime
    by = {p.node: p for p in tc.partition(_with_tail(net, "Sin"), "32x32x3")}
    assert by["tail_Sin"].device == "host" and "host segment" in by["tail_Sin"].reason
    assert all(p.device == "npu" for n, p in by.items() if n != "tail_Sin")
    places = tc.partition(_with_tail(net, "Sin"), "32x32x3", strict=True)
    bad = [p for p in places if p.device == "unsupported"]
    assert [(p.node, p.op_type) for p in bad] == [("tail_Sin", "Sin")]
    assert "not supported" in bad[0].reason and not bad[0].supported
    assert not any(p.device == "host" for p in places)
    # a sigmoid on the logits runs on the NPU as a lookup table
    by = {p.node: p for p in tc.partition(_with_tail(net, "Sigmoid"), "32x32x3")}
    assert by["tail_Sigmoid"].device == "npu" and by["tail_Sigmoid"].npu_op == "lut"


def test_cli_ops(net, tmp_path, capsys):
    from tcc_compiler.frontend.converters import CONVERTERS

    assert main(["ops", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert sorted(r["op_type"] for r in rows) == sorted(CONVERTERS)
    path = tmp_path / "m.onnx"
    onnx.save(_with_tail(net, "Sin"), str(path))
    assert main(["ops", str(path), "--input", "32x32x3"]) == 0  # Sin runs on the host
    assert capsys.readouterr().out.strip().endswith("1 on the host")
    assert main(["ops", str(path), "--input", "32x32x3", "--strict"]) == 2  # refused
    out, err = capsys.readouterr()
    assert "unsupported Sin" in out and out.strip().endswith("0 on the host, 1 unsupported")
    assert "compile would refuse" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(TccError):
        tc.partition(str(tmp_path / "missing.onnx"))
