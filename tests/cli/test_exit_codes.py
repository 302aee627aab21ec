"""The command line as a user meets it: exit codes and one-line errors, no tracebacks."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from tcc_compiler.cli.main import main


def _run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _one_line_error(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("tccc: error: ")
    assert "Traceback" not in err
    return lines[0]


def test_missing_model_file(tmp_path, capsys):
    code, _, err = _run(["compile", str(tmp_path / "nope.onnx"), "--input", "32x32x3",
                         "-o", str(tmp_path / "out")], capsys)
    assert code == 2
    assert "nope.onnx" in _one_line_error(err)
    assert not (tmp_path / "out").exists()


def test_non_onnx_file(tmp_path, capsys):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not a protobuf \x00\xff" * 10)
    code, _, err = _run(["compile", str(bad), "--input", "32x32x3", "-o",
                         str(tmp_path / "out")], capsys)
    assert code == 2
    assert "bad.onnx" in _one_line_error(err)


@pytest.mark.parametrize("spec", ["224x224", "axbxc", "0x224x3", "224x224x3x1", "-5x5x3"])
def test_malformed_input_spec(tmp_path, capsys, spec):
    code, _, err = _run(["compile", "m.onnx", f"--input={spec}", "-o", str(tmp_path / "o")],
                        capsys)
    assert code == 2
    assert "--input" in _one_line_error(err)


def test_unsupported_ops_listed_at_once(tmp_path, capsys):
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv0"),
             helper.make_node("LSTMish", ["c"], ["d"], name="weird_a", domain=""),
             helper.make_node("Sin", ["c"], ["e"], name="sine_b"),
             helper.make_node("Add", ["d", "e"], ["y"], name="add")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                     [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [onnx.numpy_helper.from_array(np.ones((4, 3, 1, 1), np.float32), "w")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    path = tmp_path / "unsup.onnx"
    onnx.save(m, path)
    code, _, err = _run(["compile", str(path), "--input", "8x8x3", "-o",
                         str(tmp_path / "out"), "--strict"], capsys)
    assert code == 2
    line = _one_line_error(err)
    assert "weird_a" in line and "sine_b" in line and "unsup.onnx" in line
    # without --strict Sin could run on the host; LSTMish is no ONNX op (it runs nowhere)
    code, _, err = _run(["compile", str(path), "--input", "8x8x3", "-o",
                         str(tmp_path / "out")], capsys)
    line = _one_line_error(err)
    assert code == 2 and "weird_a" in line and "sine_b" not in line


def test_zoo_unknown_name(tmp_path, capsys):
    code, _, err = _run(["zoo", "resnet9000", "-o", str(tmp_path / "m.onnx")], capsys)
    assert code == 2
    assert "resnet9000" in _one_line_error(err)


def test_run_on_missing_folder(tmp_path, capsys):
    code, _, err = _run(["run", str(tmp_path / "nothing"), "x.npy"], capsys)
    assert code == 2
    _one_line_error(err)


def test_usage_error_is_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["compile"])
    assert exc.value.code == 2
    _one_line_error(capsys.readouterr().err)


def test_compile_and_run_small_zoo_model(tmp_path, capsys):
    model = tmp_path / "r18.onnx"
    assert _run(["zoo", "resnet18", "--input", "64x48x3", "-o", str(model)], capsys)[0] == 0
    out = tmp_path / "out"
    code, stdout, err = _run(["compile", str(model), "--input", "64x48x3", "-o", str(out),
                              "--json"], capsys)
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["npu_ops"] == {"conv": 20, "maxpool": 1, "gap": 1, "fc": 1}
    for name in ("npu_cmd.bin", "quantized_network.bin", "manifest.json", "report.json"):
        assert (out / name).is_file()
    x = np.random.default_rng(0).standard_normal((1, 3, 48, 64)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    code, stdout, err = _run(["run", str(out), str(tmp_path / "x.npy"), "--check", str(model),
                              "--json", "--topk", "5"], capsys)
    assert code == 0, err
    res = json.loads(stdout)
    assert res["check"]["bit_exact"] is True
    assert len(res["topk"]) == 5 and res["topk"][0] == res["top1"]
    # --check given a folder: it exists, it is not a model file
    code, _, err = _run(["run", str(out), str(tmp_path / "x.npy"), "--check", str(tmp_path)],
                        capsys)
    assert code == 2 and f"{tmp_path}: not a file (--check needs the float ONNX model)" in err
    # a second compile into the same folder replaces it atomically
    assert _run(["compile", str(model), "--input", "64x48x3", "-o", str(out)], capsys)[0] == 0
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_compile_refuses_to_replace_a_folder_that_is_not_an_output(tmp_path, capsys):
    from tcc_compiler import zoo

    proj = tmp_path / "proj"
    proj.mkdir()
    zoo.save("resnet18", proj / "m.onnx", width=32, height=32)
    (proj / "code.py").write_text("keep me\n")
    code, _, err = _run(["compile", str(proj / "m.onnx"), "-o", str(proj)], capsys)
    assert code == 2
    assert "not a tccc output folder" in _one_line_error(err)
    assert sorted(p.name for p in proj.iterdir()) == ["code.py", "m.onnx"]


@pytest.mark.parametrize("seed", range(8))
def test_bit_flipped_models_never_give_internal_errors(tmp_path, capsys, seed):
    """20 random bit flips in a serialized model (weights with exponents flipped to ~1e33,
    broken names, ...): compile succeeds or fails with exit 2 and one line, never exit 1."""
    import random

    from tcc_compiler import zoo

    data = bytearray(zoo.build("resnet18", 32, 32).SerializeToString())
    r = random.Random(seed)
    for _ in range(20):
        i = r.randrange(len(data))
        data[i] ^= 1 << r.randrange(8)
    path = tmp_path / "flipped.onnx"
    path.write_bytes(bytes(data))
    code, _, err = _run(["compile", str(path), "--input", "32x32x3", "-o",
                         str(tmp_path / "o")], capsys)
    assert code in (0, 2), err
    if code == 2:
        _one_line_error(err)


@pytest.mark.parametrize("error", ["MemoryError", "EncodeError"])
@pytest.mark.parametrize("command", ["ops", "compile"])
def test_out_of_memory_is_one_line_naming_the_model(tmp_path, capsys, monkeypatch, command,
                                                     error):
    """light_zfnet512 under the corpus's address-space limit: onnx's shape inference raised a
    MemoryError (empty message); ``str(exc).splitlines()[0]`` then raised IndexError and
    the user saw "internal error", exit 1. Now: exit 2, one line, the model and the memory.
    Under ``ulimit -v 1200000`` ResNet-50 failed one step earlier, protobuf unable to allocate
    the serialized model (EncodeError "Failed to serialize proto"), and the user read
    "shape inference failed", a model problem."""
    from conftest import residual_net_impl
    from google.protobuf.message import EncodeError

    from tcc_compiler.errors import first_line

    path = tmp_path / "m.onnx"
    onnx.save(residual_net_impl(), path)

    def oom(*a, **k):
        raise MemoryError() if error == "MemoryError" else EncodeError("Failed to serialize proto")

    monkeypatch.setattr(onnx.shape_inference, "infer_shapes", oom)
    argv = [command, str(path)] + (["-o", str(tmp_path / "out")] if command == "compile" else [])
    code, _, err = _run(argv, capsys)
    assert code == 2
    line = _one_line_error(err)
    assert str(path) in line and "out of memory" in line, line
    assert not (tmp_path / "out").exists()
    assert first_line(MemoryError()) == "MemoryError"
