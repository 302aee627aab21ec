"""manifest.json's records that no run reads (``model``, ``cores``, ``dram``,
``calibration``, ``precision``, the input's name, type, layout and region) are validated as
the ones it reads: tools and users trust them, and a damaged one crashed a command.

Before: ``export-onnx --ort`` of a folder whose ``input.name`` was deleted or whose
``input.onnx_name`` was null ended in an internal error (KeyError / TypeError, exit 1),
``tccc report`` of one whose ``model`` was null too (AttributeError, exit 1), and a deleted
``model.sha256`` silently skipped ``run --check``'s is-this-the-compiled-model check.
"""

from __future__ import annotations

import json
import re
import shutil

import pytest
from helpers import PHOTO
from helpers.cli import one_line_error, run_cli

import tcc_compiler as tc
from tcc_compiler.errors import FormatError

#: (field path, bad value; None value with delete=True removes the field), expected field
#: named in the error.
_BAD = [
    (("input", "name"), "DEL", "input.name"),
    (("input", "name"), 3, "input.name"),
    (("input", "onnx_name"), None, "input.onnx_name"),
    (("input", "dtype"), "int16", "input.dtype"),
    (("input", "npu_layout"), "NCHW", "input.npu_layout"),
    (("input", "region"), "OUTPUT", "input.region"),
    (("input", "offset"), 64, "input.offset"),
    (("outputs", 0, "region"), "INPUT", "outputs[0].region"),
    (("model",), None, "model"),
    (("model",), "DEL", "manifest.model"),
    (("model", "sha256"), "DEL", "model.sha256"),
    (("model", "sha256"), "abc", "model.sha256"),
    (("model", "opset"), "13", "model.opset"),
    (("cores",), 2, "cores"),
    (("cores",), "1", "cores"),
    (("dram",), [], "dram"),
    (("dram", "input_bytes"), 1, "dram.input_bytes"),
    (("calibration",), "photos", "calibration"),
    (("calibration", "inputs"), -1, "calibration.inputs"),
    (("precision", "activations"), "int4", "precision.activations"),
    (("precision", "int16_layers"), [1], "precision.int16_layers"),
    (("tool",), "other", "tool"),
    (("host_ops",), [{"op": "softmax", "input": "y", "output": "p", "axis": 1,
                      "keepdims": "yes"}], "host_ops[0].keepdims"),
]


def _edit(manifest: dict, path: tuple, value) -> None:
    d = manifest
    for k in path[:-1]:
        d = d[k]
    if value == "DEL":
        del d[path[-1]]
    else:
        d[path[-1]] = value


@pytest.mark.parametrize("path,value,field", _BAD, ids=[b[2] + "=" + repr(b[1])[:8]
                                                        for b in _BAD])
def test_a_damaged_record_is_refused_naming_it(small_folder, tmp_path, path, value, field):
    _, out = small_folder
    bad = tmp_path / "out"
    shutil.copytree(out, bad)
    m = json.loads((bad / "manifest.json").read_text())
    _edit(m, path, value)
    (bad / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(FormatError, match=re.escape(f"manifest.json: {field}: ")):
        tc.load(bad)


@pytest.mark.parametrize("cmd", [["export-onnx", "--ort", "-o", "e.onnx"],
                                 ["report", "-o", "r.html"], ["run", PHOTO, "--check", "MODEL"]])
def test_commands_on_a_damaged_record_say_so_in_one_line(small_folder, tmp_path, capsys, cmd):
    model, out = small_folder
    for path, value in ((("input", "name"), "DEL"), (("input", "onnx_name"), None),
                        (("model",), None), (("model", "sha256"), "DEL")):
        bad = tmp_path / "out"
        shutil.rmtree(bad, ignore_errors=True)
        shutil.copytree(out, bad)
        m = json.loads((bad / "manifest.json").read_text())
        _edit(m, path, value)
        (bad / "manifest.json").write_text(json.dumps(m))
        argv = [cmd[0], bad] + [tmp_path / a if a.endswith((".onnx", ".html")) else
                                model if a == "MODEL" else a for a in cmd[1:]]
        code, _, err = run_cli(argv, capsys)
        assert code == 2, err
        assert "manifest.json" in one_line_error(err)


def test_the_compiled_folders_pass(small_folder):
    _, out = small_folder
    assert tc.load(out).manifest["tool"] == "tccc"
