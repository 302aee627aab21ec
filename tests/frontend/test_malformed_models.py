"""Malformed and hostile models: a corpus built here (no checked-in binaries), run via the CLI.

Every case must give exit code 2 and exactly one ``tccc: error:`` line, create no output folder,
write no file anywhere, and never open a file outside the model's folder (checked with a
``sys.addaudithook`` hook on ``open``). Calibration data with NaN, a wrong shape or a wrong
channel count gets the same treatment.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tcc_compiler.cli.main import main

# ---- an audit hook recording every open() while a case runs ---------------------------------
_OPENED: list[tuple[str, str]] | None = None


def _audit(event: str, args: tuple) -> None:
    if _OPENED is not None and event == "open" and isinstance(args[0], (str, bytes, Path)):
        path = os.fsdecode(args[0])
        mode = args[1] if isinstance(args[1], str) else ""
        flags = args[2] if len(args) > 2 and isinstance(args[2], int) else 0
        writes = any(c in mode for c in "wax+") or bool(flags & (os.O_WRONLY | os.O_RDWR))
        _OPENED.append((os.path.abspath(path), "w" if writes else "r"))


sys.addaudithook(_audit)  # hooks cannot be removed; it is inert while _OPENED is None


# ---- the corpus ----------------------------------------------------------------------------
def _conv_relu(w: np.ndarray | None = None, **conv_attrs) -> onnx.ModelProto:
    """x [1,3,8,8] -> Conv(w, pads 1) -> Relu -> y (the valid model each case corrupts)."""
    w = np.ones((4, 3, 3, 3), np.float32) * 0.1 if w is None else w
    attrs = {"pads": [1, 1, 1, 1], **conv_attrs}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", **attrs),
             helper.make_node("Relu", ["c"], ["y"], name="relu")]
    g = helper.make_graph(nodes, "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(np.asarray(w, np.float32), "w")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


def _external(location: str, **info) -> onnx.ModelProto:
    """The valid model with weight 'w' moved to external data at ``location``."""
    m = _conv_relu()
    t = m.graph.initializer[0]
    t.ClearField("raw_data")
    t.ClearField("float_data")
    t.data_location = TensorProto.EXTERNAL
    for k, v in {"location": location, **info}.items():
        e = t.external_data.add()
        e.key, e.value = k, str(v)
    return m


_W_BYTES = (np.ones((4, 3, 3, 3), np.float32) * 0.1).tobytes()


def _edit(fn: Callable[[onnx.ModelProto], None], model=None) -> onnx.ModelProto:
    m = model if model is not None else _conv_relu()
    fn(m)
    return m


def _with_nan():
    w = np.ones((4, 3, 3, 3), np.float32)
    w[1, 2, 0, 0] = np.nan
    return _conv_relu(w)


def _with_inf():
    w = np.ones((4, 3, 3, 3), np.float32)
    w[0, 0, 1, 1] = -np.inf
    return _conv_relu(w)


def _cycle(m):
    m.graph.node[0].input[0] = "y"   # conv reads relu's output: conv -> relu -> conv


def _dims(m, k, v):
    m.graph.input[0].type.tensor_type.shape.dim[k].dim_value = v


#: name -> (model or raw bytes, files to put next to it, --input, phrase the message has)
CORPUS: dict[str, tuple] = {
    "truncated_protobuf": (lambda: _conv_relu().SerializeToString()[:150], {}, "8x8x3",
                           "not a valid ONNX model"),
    "empty_file": (lambda: b"", {}, "8x8x3", "not a valid ONNX model"),
    "garbage": (lambda: bytes(range(256)) * 4, {}, "8x8x3", "not a valid ONNX model"),
    "custom_domain_op": (lambda: _edit(lambda m: (
        setattr(m.graph.node[1], "domain", "com.evil"),
        m.opset_import.append(helper.make_opsetid("com.evil", 1)))), {}, "8x8x3",
        "custom-domain"),
    "no_default_opset": (lambda: _edit(lambda m: (
        m.opset_import.pop(), m.opset_import.append(helper.make_opsetid("com.evil", 1)))),
        {}, "8x8x3", "no default-domain"),
    "future_opset": (lambda: _edit(lambda m: setattr(m.opset_import[0], "version", 999)), {},
                     "8x8x3", "opset 999"),
    "cycle": (lambda: _edit(_cycle), {}, "8x8x3", "cycle"),
    "missing_initializer": (lambda: _edit(lambda m: m.graph.ClearField("initializer")), {},
                            "8x8x3", "'w'"),
    "mismatched_shapes": (lambda: _conv_relu(np.ones((4, 5, 3, 3), np.float32)), {}, "8x8x3",
                          "channels"),
    "nan_weights": (_with_nan, {}, "8x8x3", "NaN/Inf"),
    "inf_weights": (_with_inf, {}, "8x8x3", "NaN/Inf"),
    "payload_dims_mismatch": (lambda: _edit(lambda m: setattr(
        m.graph.initializer[0], "raw_data", b"\0" * 7)), {}, "8x8x3", "payload is 7 bytes"),
    "unknown_tensor_type": (lambda: _edit(lambda m: setattr(
        m.graph.initializer[0], "data_type", 99)), {}, "8x8x3", "data type 99"),
    "zero_sized_weight_dim": (lambda: _conv_relu(np.ones((0, 3, 3, 3), np.float32)), {},
                              "8x8x3", "empty or negative dimension"),
    "zero_sized_input_dim": (lambda: _edit(lambda m: _dims(m, 2, 0)), {}, None, "dims"),
    "huge_input_dim": (lambda: _edit(lambda m: _dims(m, 2, 10**9)), {}, None, "1..8192"),
    "huge_initializer_dim": (lambda: _edit(lambda m: m.graph.initializer[0].dims.__setitem__(
        0, 10**9)), {}, "8x8x3", "need 108000000000"),
    "external_claims_2gb": (lambda: _external("w.bin", length=2**31), {"w.bin": _W_BYTES},
                            "8x8x3", "exceeds 'w.bin'"),
    "external_dims_lie": (lambda: _edit(lambda m: m.graph.initializer[0].dims.__setitem__(
        0, 10**8), _external("w.bin")), {"w.bin": _W_BYTES}, "8x8x3", "payload is 432"),
    "external_path_traversal": (lambda: _external("../../etc/passwd"), {}, "8x8x3",
                                "outside the model's folder"),
    "external_secret_sibling": (lambda: _external("../../secret.bin"), {}, "8x8x3",
                                "outside the model's folder"),
    "external_absolute": (lambda: _external("/etc/passwd"), {}, "8x8x3",
                          "outside the model's folder"),
    "external_symlink_escape": (lambda: _external("link.bin"), {"link.bin": "->../../secret.bin"},
                                "8x8x3", "outside the model's folder"),
    "external_bad_offset": (lambda: _external("w.bin", offset="abc"), {"w.bin": _W_BYTES},
                            "8x8x3", "not integers"),
    "duplicate_output_names": (lambda: _edit(lambda m: m.graph.output.append(
        m.graph.output[0])), {}, "8x8x3", "duplicate graph output"),
    "zero_stride": (lambda: _conv_relu(strides=[0, 0]), {}, "8x8x3", "strides"),
    "group_zero": (lambda: _conv_relu(group=0), {}, "8x8x3", "group"),
    "negative_pads": (lambda: _conv_relu(pads=[-5, -5, -5, -5]), {}, "8x8x3", "pads"),
    "kernel_beyond_input": (lambda: _conv_relu(dilations=[10**6, 10**6]), {}, "8x8x3",
                            "empty or negative dimension"),
    "int8_input": (lambda: _edit(lambda m: setattr(
        m.graph.input[0].type.tensor_type, "elem_type", TensorProto.INT8)), {}, "8x8x3",
        "float32"),
}


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() and not p.is_symlink()
                                       else b"")
            for p in sorted(root.rglob("*"))}


def _audited_error(tmp_path: Path, capsys, argv: list[str]) -> tuple[int, str, list]:
    """Run the CLI with the audit hook on: (exit code, the one error line, the (path, mode)
    opens). Checks it printed exactly one error line, no traceback, left ``tmp_path``
    unchanged and opened nothing for writing."""
    global _OPENED
    before = _tree(tmp_path)
    _OPENED = []
    try:
        code = main(argv)
    finally:
        opened, _OPENED = _OPENED, None
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("tccc: error: "), err
    assert "Traceback" not in err
    assert _tree(tmp_path) == before, "files were created, changed or removed"
    writes = [p for p, m in opened if m == "w"]
    assert not writes, f"opened for writing: {writes}"
    return code, lines[0], opened


def _run_case(tmp_path: Path, capsys, argv: list[str], model_dir: Path) -> tuple[int, str]:
    """Run the CLI, returning (exit code, the one error line); checks the file-system rules
    (:func:`_audited_error`) and that nothing outside the model's folder was read."""
    secret = tmp_path / "secret.bin"
    code, line, opened = _audited_error(tmp_path, capsys, argv)
    assert (str(model_dir / "m.onnx"), "r") in opened, "the audit hook saw no open()"
    outside = [p for p, _ in opened
               if p == str(secret) or p.startswith("/etc/")
               or (p.startswith(str(tmp_path)) and not p.startswith(str(model_dir)))]
    assert not outside, f"read outside the model's folder: {outside}"
    return code, line


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_malformed_model(tmp_path, capsys, name):
    build, extra_files, whc, phrase = CORPUS[name]
    (tmp_path / "secret.bin").write_bytes(_W_BYTES)
    (tmp_path / "calib.npy").write_bytes(b"")  # placeholder, replaced below
    np.save(tmp_path / "calib.npy", np.zeros((1, 3, 8, 8), np.float32))
    model_dir = tmp_path / "models" / "m"
    model_dir.mkdir(parents=True)
    model = build()
    data = model if isinstance(model, bytes) else model.SerializeToString()
    (model_dir / "m.onnx").write_bytes(data)
    for fname, content in extra_files.items():
        if isinstance(content, str) and content.startswith("->"):
            os.symlink(content[2:], model_dir / fname)
            assert (model_dir / fname).resolve() == (tmp_path / "secret.bin").resolve()
        else:
            (model_dir / fname).write_bytes(content)
    refs = [] if isinstance(model, bytes) else [
        e.value for t in model.graph.initializer for e in t.external_data
        if e.key == "location" and "secret" in e.value]
    for ref in refs:  # the reference really reaches the secret file, so refusing it matters
        assert (model_dir / ref).resolve() == (tmp_path / "secret.bin").resolve()
    argv = ["compile", str(model_dir / "m.onnx"), "-o", str(tmp_path / "out"),
            "--calib", str(tmp_path / "calib.npy")] + (["--input", whc] if whc else [])
    code, line = _run_case(tmp_path, capsys, argv, model_dir)
    assert code == 2, line
    assert phrase in line, line
    assert not (tmp_path / "out").exists()


def test_corpus_base_model_compiles(tmp_path, capsys):
    """The model every case corrupts is itself valid (so each failure is the corruption's)."""
    (tmp_path / "m.onnx").write_bytes(_conv_relu().SerializeToString())
    np.save(tmp_path / "calib.npy", np.ones((1, 3, 8, 8), np.float32))
    global _OPENED
    _OPENED = []
    try:
        code = main(["compile", str(tmp_path / "m.onnx"), "--input", "8x8x3", "-o",
                     str(tmp_path / "out"), "--calib", str(tmp_path / "calib.npy")])
    finally:
        opened, _OPENED = _OPENED, None
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "out" / "npu_cmd.bin").is_file()
    # Writes go only to the staging folder beside the output (renamed into place at the end).
    writes = [Path(p) for p, m in opened if m == "w"]
    assert writes and all(p.parent.parent == tmp_path and p.parent.name.startswith(".out.")
                          for p in writes), writes


def _nan_calib():
    a = np.zeros((2, 3, 8, 8), np.float32)
    a[1, 0, 3, 3] = np.nan
    return a


@pytest.mark.parametrize("calib, phrase", [
    (_nan_calib, "NaN/Inf"),
    (lambda: np.zeros((2, 3, 8, 9), np.float32), "does not match the model input"),
    (lambda: np.zeros((2, 1, 8, 8), np.float32), "does not match the model input"),
    (lambda: np.zeros((3, 8, 8), np.float32), "does not match the model input"),
    (lambda: np.zeros((1, 3, 8, 8), np.float64), "dtype is float64"),
])
def test_bad_calibration_data(tmp_path, capsys, calib, phrase):
    """Calibration arrays with NaN, a wrong shape, a wrong channel count or dtype: exit 2,
    one line naming the file, nothing written."""
    model_dir = tmp_path / "m"
    model_dir.mkdir()
    (model_dir / "m.onnx").write_bytes(_conv_relu().SerializeToString())
    np.save(tmp_path / "calib.npy", calib())
    argv = ["compile", str(model_dir / "m.onnx"), "--input", "8x8x3", "-o",
            str(tmp_path / "out"), "--calib", str(tmp_path / "calib.npy")]
    code, line, _ = _audited_error(tmp_path, capsys, argv)
    assert code == 2 and phrase in line and "calib.npy" in line, line


def test_calibration_arrays_via_api_checked(tmp_path):
    """The Python API refuses NaN and wrong-channel calibration arrays the same way."""
    from tcc_compiler import api
    from tcc_compiler.errors import InputError

    m = _conv_relu()
    with pytest.raises(InputError, match="NaN|Inf"):
        api.compile(m, "8x8x3", calibration=[np.full((1, 3, 8, 8), np.nan, np.float32)])
    with pytest.raises(InputError, match="shape"):
        api.compile(m, "8x8x3", calibration=[np.zeros((1, 1, 8, 8), np.float32)])


def test_non_finite_constant_node_refused_but_clip_bound_allowed():
    """NaN in a Constant node is refused like a NaN initializer; an infinite Clip bound (a
    legitimate 'no upper limit') is accepted."""
    from tcc_compiler.errors import ModelError
    from tcc_compiler.frontend import import_onnx

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    nan = numpy_helper.from_array(np.array([np.nan], np.float32))
    g = helper.make_graph([helper.make_node("Constant", [], ["k"], value=nan, name="knan"),
                           helper.make_node("Add", ["x", "k"], ["y"], name="add")], "g", [x], [y])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    with pytest.raises(ModelError, match="Constant 'knan': holds 1 NaN/Inf"):
        import_onnx(m)
    g = helper.make_graph([helper.make_node("Clip", ["x", "lo", "hi"], ["y"], name="clip")],
                          "g", [x], [y],
                          [numpy_helper.from_array(np.array(0, np.float32), "lo"),
                           numpy_helper.from_array(np.array(np.inf, np.float32), "hi")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    assert [n.op.value for n in import_onnx(m).nodes] == ["clip"]


@pytest.mark.parametrize("suffix,text", [(".json", b'{"a": 1}\n'), (".onnxtxt", b"garbage\n"),
                                         (".txtpb", b"garbage {\n")])
@pytest.mark.parametrize("command", ["compile", "ops"])
def test_model_named_as_a_text_format_is_refused(tmp_path, capsys, suffix, text, command):
    """onnx.load picks its parser by suffix (JSON, ONNX text, protobuf text): a file that none
    of them reads is a bad model (exit 2, one line: no onnx warning either), not a parser's
    ParseError (exit 1)."""
    model = tmp_path / f"m{suffix}"
    model.write_bytes(text)
    argv = [command, str(model)] + (["-o", str(tmp_path / "out")] if command == "compile"
                                    else [])
    with warnings.catch_warnings(record=True) as shown:   # as the CLI would print them
        warnings.simplefilter("always")
        code, line, _ = _audited_error(tmp_path, capsys, argv)
    assert code == 2, line
    assert f"{model}: not a valid ONNX model" in line, line
    assert not [w for w in shown if "onnx" in str(w.filename)], [str(w.message) for w in shown]
