"""The up-front compile memory estimate: every live activation counted, a huge input refused in
one line before any work.
"""

from __future__ import annotations

import numpy as np
import onnx
from helpers.cli import one_line_error, run_cli
from onnx import helper


def _one_conv():
    """x [1, 3, H, W] -> Conv 16x3x3x3 (pad 1) -> y; H and W free."""
    r = np.random.default_rng(0)
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], "c",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, "H", "W"])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 16, "H", "W"])],
        [onnx.numpy_helper.from_array(r.standard_normal((16, 3, 3, 3)).astype(np.float32),
                                      "w")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def test_huge_input_refused_up_front(tmp_path, capsys, monkeypatch):
    """A one-conv model at 8192x8192x3: 805 MB of float input and 4.3 GB of conv output; the
    estimate must exceed a (faked) 2 GB of available memory and fail in one line, exit 2.
    (A model with a global pool is refused earlier: its window exceeds POOL_CFG's u8 fields.)"""
    from tcc_compiler import driver

    path = tmp_path / "conv.onnx"
    onnx.save(_one_conv(), str(path))
    monkeypatch.setattr(driver.memory, "available_memory_bytes", lambda: 2 * 10**9)
    code, _, err = run_cli(["-q", "compile", str(path), "--input", "8192x8192x3", "-o",
                            str(tmp_path / "o")], capsys)
    assert code == 2
    line = one_line_error(err)
    assert "8192x8192x3" in line and "2.0 GB available" in line
    assert "use a smaller --input" in line
    assert not (tmp_path / "o").exists()


def test_weight_heavy_model_is_not_told_to_shrink_its_input(tmp_path, capsys, monkeypatch):
    """A model whose memory is mostly weights (ResNet-50 under a tight ``ulimit -v`` was told
    "use a smaller --input" although its activations were 0.05 GB of 1.6): the message
    names the weights and asks for more memory instead."""
    from tcc_compiler import driver

    r = np.random.default_rng(0)
    w = r.standard_normal((4096, 4096)).astype(np.float32)   # 64 MB of weights
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "c"], ["h"], pads=[1, 1, 1, 1]),
         helper.make_node("Flatten", ["h"], ["f"]),
         helper.make_node("MatMul", ["f", "w"], ["y"])], "fc",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4096])],
        [onnx.numpy_helper.from_array(r.standard_normal((16, 3, 3, 3)).astype(np.float32),
                                      "c"), onnx.numpy_helper.from_array(w, "w")])
    path = tmp_path / "fc.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    monkeypatch.setattr(driver.memory, "available_memory_bytes", lambda: 10**8)
    code, _, err = run_cli(["-q", "compile", str(path), "--input", "16x16x3", "-o",
                            str(tmp_path / "o")], capsys)
    assert code == 2
    line = one_line_error(err)
    assert "GB of float weights" in line and "smaller input will not help" in line
    assert "use a smaller --input" not in line


def test_memory_estimate_counts_every_live_activation():
    from tcc_compiler.driver import import_model, run_float_passes
    from tcc_compiler.interp.memory import BASE_BYTES, estimate_compile_memory

    g, passes = import_model(_one_conv(), "64x64x3")
    g = run_float_passes(g, passes).graph
    need, act = estimate_compile_memory(g)
    # input and output float32 live together while the conv runs, plus its working memory
    assert act >= 4 * (3 * 64 * 64 + 16 * 64 * 64)
    assert need >= BASE_BYTES + act


def test_available_memory_respects_the_address_space_limit():
    """Under ``ulimit -v`` (the corpus's RLIMIT_AS, a container) the memory check sees the
    address space left, not the machine's MemAvailable: light_zfnet512 compiled past the
    check and died in shape inference (MemoryError, exit 1)."""
    import subprocess
    import sys

    code = ("import resource; from tcc_compiler.driver import available_memory_bytes as a; "
            "free = a(); resource.setrlimit(resource.RLIMIT_AS, (3 * 2**30, 3 * 2**30)); "
            "lim = a(); print(free, lim)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    free, lim = int(out[0]), int(out[1])
    assert 0 <= lim < 3 * 2**30 and lim <= free
