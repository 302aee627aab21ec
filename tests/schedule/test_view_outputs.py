"""A network output that is a view -- a Transpose that moves no bytes in NHWC, such as SSD's
head permute of a 1x1 map ([1, C, 1, 1] -> [1, 1, 1, C]) -- is described to the host by its
own shape, not by its source buffer's: the manifest's npu_hwc must match the output's NCHW
shape (the runtime refused such a folder, so a model that compiled could not run)."""

from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import TensorProto, helper

from tcc_compiler.cli.main import main


def _conv_permute(c: int = 6) -> onnx.ModelProto:
    w = np.random.default_rng(0).standard_normal((c, 3, 8, 8)).astype(np.float32) * 0.1
    nodes = [helper.make_node("Conv", ["x", "w"], ["f"], kernel_shape=[8, 8]),   # 1x1 map
             helper.make_node("Transpose", ["f"], ["y"], perm=[0, 2, 3, 1])]
    g = helper.make_graph(nodes, "permute",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 1, c])],
                          [helper.make_tensor("w", TensorProto.FLOAT, w.shape, w.ravel())])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_permuted_1x1_output_runs_bit_exact(tmp_path, capsys):
    model = tmp_path / "m.onnx"
    onnx.save(_conv_permute(), model)
    x = tmp_path / "x.npy"
    np.save(x, np.random.default_rng(1).uniform(-1, 1, (1, 3, 8, 8)).astype(np.float32))
    assert main(["-q", "compile", str(model), "-o", str(tmp_path / "out")]) == 0
    out = json.loads((tmp_path / "out" / "manifest.json").read_text())["outputs"][0]
    assert out["shape"] == [1, 1, 1, 6] and out["npu_hwc"] == [1, 6, 1]
    capsys.readouterr()
    assert main(["run", str(tmp_path / "out"), str(x), "--check", str(model), "--json"]) == 0
    check = json.loads(capsys.readouterr().out)["check"]
    assert check["bit_exact"] and check["top1_agree"]
