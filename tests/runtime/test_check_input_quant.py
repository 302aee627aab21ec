"""``run --check`` of a folder whose manifest.json quantizes the input otherwise than
quantized.tir (a new-user try: an edited ``input.scale`` gave bit_exact=false and exit 1 with
no error line)."""

from __future__ import annotations

import json
import shutil

import pytest
from helpers import PHOTO
from helpers.cli import one_line_error, run_cli


@pytest.mark.parametrize("key,value", [("scale", [0.02]), ("zero_point", [3])])
def test_an_edited_input_quantization_is_refused(small_folder, tmp_path, capsys, key, value):
    model, out = small_folder
    edited = tmp_path / "out"
    shutil.copytree(out, edited)
    p = edited / "manifest.json"
    m = json.loads(p.read_text())
    m["input"][key] = value
    p.write_text(json.dumps(m))
    code, stdout, err = run_cli(["run", str(edited), PHOTO, "--check", str(model)], capsys)
    assert code == 2 and "bit_exact" not in stdout
    line = one_line_error(err)
    assert "manifest.json" in line and "quantized.tir" in line and "edited" in line


def test_the_unedited_folder_checks_bit_exact(small_folder, capsys):
    model, out = small_folder
    code, stdout, err = run_cli(["run", str(out), PHOTO, "--check", str(model)], capsys)
    assert code == 0 and "bit_exact=true" in stdout, err
