"""What a new user ran into (session 15's walk through the commands with bad inputs), each a
one-line error with exit 2 saying what to do, or a sample set read as ``run`` reads folders:

- ``eval --limit 0`` / ``--jobs 0`` were refused only after the dataset was listed and its
  labels checked (a bad dataset's error came first); now argparse refuses them up front.
- a stray file in a class sub-folder (``notes.txt``) was an eval sample, and stopped the
  evaluation ("cannot decode image"); class folders now take the files ``run`` takes from a
  folder (images, ``.npy``, raw files with ``--raw-size``), the others skipped with a warning.
- ``tccc run OUT model.onnx`` (the model where an input goes) was decoded as an image.
- a folder from an older tccc whose manifest lacks newer fields said "missing field(s) ..."
  instead of naming its manifest_version; a newer one's said "recompile the model".
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from helpers.cli import one_line_error, run_cli
from helpers.compiled import CHANNEL_HW as HW


@pytest.mark.parametrize("cmd, flag", [("eval", "--limit"), ("eval", "--jobs"),
                                       ("run", "--jobs")])
def test_counts_below_one_are_usage_errors(channel_folders, tmp_path, capsys, cmd, flag):
    folder = channel_folders[1]["folder"]
    argv = (["eval", folder, "--images", tmp_path / "no-such-dataset"] if cmd == "eval"
            else ["run", folder, tmp_path / "no-such-input.npy"])
    with pytest.raises(SystemExit) as exc:   # argparse usage error
        run_cli(argv + [flag, "0"], capsys)
    line = one_line_error(capsys.readouterr().err)
    assert exc.value.code == 2
    assert f"argument {flag}: expected a positive integer, got 0" in line, line


def test_eval_skips_files_that_are_not_samples(channel_folders, tmp_path, capsys, caplog):
    c1 = channel_folders[1]
    for k in range(2):
        d = tmp_path / f"class{k}"
        d.mkdir()
        np.save(d / "x.npy", np.zeros((1, 1, HW, HW), np.float32))
        (d / "notes.txt").write_text("taken with the lab camera\n")
    code, stdout, err = run_cli(["eval", c1["folder"], "--images", tmp_path, "--json"], capsys)
    assert code == 0, err
    assert json.loads(stdout)["samples"] == 2
    assert "skipped 2 file(s)" in caplog.text and "notes.txt" in caplog.text


@pytest.mark.parametrize("name", ["model.onnx", "graph.tir"])
def test_run_refuses_a_model_given_as_input(channel_folders, tmp_path, capsys, name):
    f = tmp_path / name
    shutil.copy(channel_folders[1]["model"], f)
    code, _, err = run_cli(["run", channel_folders[1]["folder"], f], capsys)
    line = one_line_error(err)
    assert code == 2
    assert f"{name}: a model file, not an input" in line and "--check" in line, line


def _with_manifest(src, dst, edit):
    shutil.copytree(src, dst)
    m = json.loads((dst / "manifest.json").read_text())
    edit(m)
    (dst / "manifest.json").write_text(json.dumps(m))
    return dst


def test_folders_of_other_manifest_versions_say_which(channel_folders, tmp_path, capsys):
    src = channel_folders[1]["folder"]
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((1, 1, HW, HW), np.float32))

    def older(m):
        m["manifest_version"] = 1
        del m["files"], m["preprocess"]

    def newer(m):
        m["manifest_version"] = 99
        m["tool_version"] = "9.0"

    code, _, err = run_cli(["run", _with_manifest(src, tmp_path / "old", older), x], capsys)
    line = one_line_error(err)
    assert code == 2 and "manifest_version 1 not supported" in line and "recompile" in line
    assert "missing field" not in line
    code, _, err = run_cli(["run", _with_manifest(src, tmp_path / "new", newer), x], capsys)
    line = one_line_error(err)
    assert code == 2 and "manifest_version 99" in line and "newer tccc (9.0)" in line, line
    assert "upgrade tccc" in line


def test_a_file_that_is_not_npy_says_so(channel_folders, tmp_path, capsys):
    # numpy's reason was "This file contains pickled (object) data. If you trust the file ..."
    for name, data in (("one_byte.npy", b"x"), ("text.npy", b"0.1 0.2 0.3\n" * 40)):
        f = tmp_path / name
        f.write_bytes(data)
        code, _, err = run_cli(["run", channel_folders[1]["folder"], f], capsys)
        line = one_line_error(err)
        assert code == 2
        assert f"{name}: not a .npy array file" in line and "pickle" not in line, line


def test_ir_verify_of_an_onnx_model_points_at_ir_print(channel_folders, capsys):
    model = channel_folders[1]["model"]
    code, _, err = run_cli(["ir", "verify", model], capsys)
    line = one_line_error(err)
    assert code == 2
    assert "an ONNX model, not a textual IR (.tir) file" in line and "ir print" in line, line
    assert "UTF-8" not in line


def test_ir_print_inline_limit_below_zero_is_a_usage_error(channel_folders, capsys):
    with pytest.raises(SystemExit) as exc:
        run_cli(["ir", "print", channel_folders[1]["model"], "--inline-limit", "-1"], capsys)
    assert exc.value.code == 2
    assert "argument --inline-limit: expected an integer >= 0, got -1" in \
        one_line_error(capsys.readouterr().err)
