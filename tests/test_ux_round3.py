"""UX round 3 (tester findings): output paths that are symlinks or devices, live ``-v`` stage
logs, option validation and error messages.

Expected behaviour is stated from the POSIX meaning of the paths (a symlink must stay a symlink,
a device must not be replaced by a file) and from the inputs given; nothing is compared with
tccc's own earlier output.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import conv_gap_fc_net_impl, make_model_impl
from onnx import helper

from tcc_compiler import fsutil
from tcc_compiler.cli import main
from tcc_compiler.errors import InputError


def _run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _one_line_error(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("tccc: error: ")
    return lines[0]


def _net(hw: int = 16, channels: int = 3) -> onnx.ModelProto:
    """conv3x3 (C -> 4) + Relu -> GlobalAveragePool -> Flatten -> Gemm (5 logits)."""
    return conv_gap_fc_net_impl(channels, hw, seed=3, name="ux3")


@pytest.fixture
def model(tmp_path) -> Path:
    p = tmp_path / "m.onnx"
    onnx.save(_net(), str(p))
    return p


# ---- 1. atomic writes keep symlinks and refuse devices -------------------------------------

def test_atomic_write_through_file_symlink_keeps_link(tmp_path):
    real = tmp_path / "real.bin"
    real.write_bytes(b"old")
    link = tmp_path / "ln.bin"
    link.symlink_to(real)
    fsutil.atomic_write_bytes(link, b"new")
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert real.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ln.bin", "real.bin"]


def test_write_output_file_refuses_device(capsys):
    if not Path("/dev/null").exists() or not stat.S_ISCHR(os.stat("/dev/null").st_mode):
        pytest.skip("no /dev/null character device")
    with pytest.raises(InputError, match=r"^--csv /dev/null: not a regular file$"):
        fsutil.write_output_file("/dev/null", "x", "--csv")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_write_output_file_refuses_fifo(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="not a regular file"):
        fsutil.write_output_file(fifo, b"x", "-o")
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_zoo_output_symlink_kept(tmp_path, capsys):
    """`tccc zoo NAME -o ln.onnx` writes the file the link points at."""
    real = tmp_path / "real.onnx"
    real.write_bytes(b"placeholder")
    link = tmp_path / "ln.onnx"
    link.symlink_to(real)
    code, _, err = _run(["-q", "zoo", "resnet18", "-o", str(link)], capsys)
    assert code == 0, err
    assert link.is_symlink()
    onnx.checker.check_model(onnx.load(str(real)))


def test_compile_output_symlink_to_folder_kept(tmp_path, model, capsys):
    real = tmp_path / "real_out"
    real.mkdir()
    link = tmp_path / "lnk_out"
    link.symlink_to(real, target_is_directory=True)
    code, _, err = _run(["-q", "compile", str(model), "-o", str(link)], capsys)
    assert code == 0, err
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert (real / "npu_cmd.bin").is_file() and (real / "manifest.json").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_compile_output_device_refused(tmp_path, model, capsys):
    code, _, err = _run(["-q", "compile", str(model), "-o", "/dev/null"], capsys)
    assert code == 2
    assert "/dev/null" in _one_line_error(err)


# ---- 2. up-front memory estimate -------------------------------------------------------------

def test_huge_input_refused_up_front(tmp_path, capsys, monkeypatch):
    """A one-conv model at 8192x8192x3: 805 MB of float input and 4.3 GB of conv output; the
    estimate must exceed a (faked) 2 GB of available memory and fail in one line, exit 2.
    (A model with a global pool is refused earlier: its window exceeds POOL_CFG's u8 fields.)"""
    from tcc_compiler import driver

    path = tmp_path / "conv.onnx"
    onnx.save(_one_conv(), str(path))
    monkeypatch.setattr(driver, "available_memory_bytes", lambda: 2 * 10**9)
    code, _, err = _run(["-q", "compile", str(path), "--input", "8192x8192x3", "-o",
                         str(tmp_path / "o")], capsys)
    assert code == 2
    line = _one_line_error(err)
    assert "8192x8192x3" in line and "2.0 GB available" in line
    assert not (tmp_path / "o").exists()


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


def test_memory_estimate_counts_every_live_activation():
    from tcc_compiler.driver import import_model, run_float_passes
    from tcc_compiler.interp.memory import BASE_BYTES, estimate_compile_memory

    g, passes = import_model(_one_conv(), "64x64x3")
    g = run_float_passes(g, passes).graph
    need, act = estimate_compile_memory(g)
    # input and output float32 live together while the conv runs, plus its working memory
    assert act >= 4 * (3 * 64 * 64 + 16 * 64 * 64)
    assert need >= BASE_BYTES + act


# ---- 3. -v stage logs appear when each stage ends --------------------------------------------

def test_stage_logs_are_live(model, tmp_path, monkeypatch, caplog):
    """When scheduling starts, the import, passes and quantize lines are already logged."""
    import logging

    from tcc_compiler import driver

    seen: list[str] = []
    real_lower = driver.lower

    def spy(*a, **k):
        seen.extend(r.getMessage().split(":")[0] for r in caplog.records)
        return real_lower(*a, **k)

    monkeypatch.setattr(driver, "lower", spy)
    with caplog.at_level(logging.INFO, logger="tcc_compiler.driver"):
        driver.compile_model(str(model), input_whc="16x16x3")
    assert [s for s in seen if s in ("import", "passes", "quantize", "schedule")] == [
        "import", "passes", "quantize"]
    final = [r.getMessage().split(":")[0] for r in caplog.records]
    assert "schedule" in final and "emit" in final


# ---- 4, 5. option validation --------------------------------------------------------------

def test_run_negative_seed_is_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as ei:  # argparse usage error
        main(["run", str(tmp_path), "x.npy", "--schedule", "random", "--seed", "-5"])
    assert ei.value.code == 2
    err = capsys.readouterr().err
    assert "expected an integer >= 0, got -5" in err and "internal error" not in err


@pytest.mark.parametrize("shape", [(32, 32), (32, 32, 3, 1), ("a", 32, 3)])
def test_api_tuple_input_shape_is_input_error(model, shape):
    import tcc_compiler as tc

    with pytest.raises(InputError, match="input_whc/--input"):
        tc.compile(str(model), shape)


def test_api_tuple_input_shape_limits_checked(model):
    import tcc_compiler as tc

    with pytest.raises(InputError, match="1..8192"):
        tc.compile(str(model), (9000, 16, 3))


# ---- 6. tccc ops on a model the frontend refuses ------------------------------------------

def test_ops_partition_with_unsupported_node():
    """Softmax (a host op) and a folded ConstantOfShape must not count as NPU nodes."""
    from onnx import TensorProto

    from tcc_compiler.placement import partition

    r = np.random.default_rng(0)
    inits = {"w": r.standard_normal((4, 3, 3, 3)), "fw": r.standard_normal((5, 4)),
             "shp": np.array([1, 5], np.int64)}
    mk = helper.make_node
    nodes = [mk("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             mk("GlobalAveragePool", ["c"], ["g"], name="gap"),
             mk("Flatten", ["g"], ["f"], name="flat"),
             mk("Gemm", ["f", "fw"], ["l"], transB=1, name="fc"),
             mk("ConstantOfShape", ["shp"], ["z"], name="zeros",
                value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.0])),
             mk("Add", ["l", "z"], ["l2"], name="addz"),
             mk("Softmax", ["l2"], ["p"], name="soft"),
             mk("Erf", ["p"], ["y"], name="erf")]
    m = make_model_impl(nodes, [1, 3, 8, 8], inits, name="unsup")
    places = {p.node: p for p in partition(m)}
    assert places["erf"].device == "unsupported"
    assert places["soft"].device == "host"
    assert places["conv"].device == "npu"
    if "zeros" in places:
        assert places["zeros"].folded


# ---- 8. fixed batch > 1 ----------------------------------------------------------------------

def test_fixed_batch_warns(tmp_path, caplog):
    import logging

    from tcc_compiler.frontend import import_onnx

    m = _net()
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 4
    m.graph.output[0].type.tensor_type.shape.dim[0].dim_value = 4
    with caplog.at_level(logging.WARNING):
        g = import_onnx(m)
    assert g.inputs[0].shape[0] == 1
    assert any("fixed batch of 4" in r.getMessage() for r in caplog.records)


# ---- 9. cosmetics ----------------------------------------------------------------------------

def test_run_missing_folder_says_does_not_exist(tmp_path, capsys):
    code, _, err = _run(["run", str(tmp_path / "nope"), "x.npy"], capsys)
    assert code == 2
    assert "does not exist" in _one_line_error(err)


def test_quiet_and_verbose_after_subcommand(capsys):
    code, out, err = _run(["ops", "-q"], capsys)
    assert code == 0 and "Conv" in out
    from tcc_compiler.cli.main import build_parser

    args = build_parser().parse_args(["-v", "ops", "-v", "-q"])
    assert args.sub_verbose == 1 and args.sub_quiet and args.verbose == 1


def test_small_latency_in_microseconds():
    from tcc_compiler.cli.commands.compile import format_latency

    assert format_latency(0.0042) == "4.2 µs"
    assert format_latency(12.345) == "12.35 ms"


def test_empty_folder_names_unsearched_subfolders(tmp_path):
    from tcc_compiler.datasets.images import Preprocess, load_inputs

    (tmp_path / "cats").mkdir()
    pre = Preprocess(width=8, height=8)
    with pytest.raises(InputError, match="sub-folders \\(cats\\) are not searched"):
        load_inputs([tmp_path], pre, (1, 3, 8, 8))


def test_manifest_single_channel_quant_message():
    from tcc_compiler.errors import FormatError
    from tcc_compiler.runtime.manifest_check import _Checker

    with pytest.raises(FormatError, match="expected 1 finite positive numbers") as ei:
        _Checker("m.json").quant({"scale": [-1.0], "zero_point": [0]}, "input", 1)
    assert "1 or 1" not in str(ei.value)
