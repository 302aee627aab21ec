"""Paths the OS cannot look up are bad input, not internal errors (issue #16 items 7 and 11):
a 300-character folder name, a symlink loop as output, model or image, and ``-o ""``."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest

from tcc_compiler.cli.main import main


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from conftest import residual_net_impl

    d = tmp_path_factory.mktemp("paths")
    model = d / "net.onnx"
    onnx.save(residual_net_impl(hw=16, c=4), str(model))
    assert main(["-q", "compile", str(model), "--input", "16x16x3", "-o", str(d / "out")]) == 0
    loop = d / "loop1"
    os.symlink(d / "loop2", loop)
    os.symlink(loop, d / "loop2")
    return d, model, loop


def _one_line_error(capsys, argv) -> str:
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("tccc: error: "), err
    return err


@pytest.mark.parametrize("name", ["long", "loop", "empty"])
def test_bad_output_folder(setup, capsys, name):
    d, model, loop = setup
    out = {"long": str(d / ("a" * 300)), "loop": str(loop), "empty": ""}[name]
    err = _one_line_error(capsys, ["compile", str(model), "--input", "16x16x3", "-o", out])
    assert {"long": "too long", "loop": "symbolic link loop", "empty": "empty"}[name] in err


def test_empty_output_is_refused_even_in_an_empty_folder(setup, capsys, tmp_path,
                                                         monkeypatch):
    # Path("") is "." : in an empty current folder -o "" compiled into it and printed
    # "wrote /:" (the refusal the test above saw was the folder's foreign files)
    _, model, _ = setup
    monkeypatch.chdir(tmp_path)
    for argv in (["compile", str(model), "--input", "16x16x3", "-o", ""],
                 ["compile", str(model), "-o", "out", "--dump-ir", ""],  # dumped into "."
                 ["compile", str(model), "-o", "out", "--dump-ir="],
                 ["ops", ""], ["run", "", str(model)]):
        assert "empty value" in _one_line_error(capsys, argv)
    assert not list(tmp_path.iterdir())
    from tcc_compiler.errors import InputError
    from tcc_compiler.fsutil import check_output_folder

    with pytest.raises(InputError, match="empty path"):  # the API's save("") too
        check_output_folder("")


def test_symlink_loop_as_model_or_image(setup, capsys):
    d, model, loop = setup
    err = _one_line_error(capsys, ["compile", str(loop), "--input", "16x16x3", "-o",
                                   str(d / "o")])
    assert "symbolic link loop" in err  # was "no such file"
    for cmd in (["ops", str(loop)], ["run", str(d / "out"), str(loop)],
                ["run", str(loop), str(model)],   # the compiled folder: was "does not exist"
                ["inspect", str(loop)]):
        assert "symbolic link loop" in _one_line_error(capsys, cmd)


def test_model_name_too_long(setup, capsys):
    d, _, _ = setup
    long_model = str(d / ("m" * 300 + ".onnx"))  # was an internal error (OSError, exit 1)
    for cmd in (["compile", long_model, "-o", str(d / "o")], ["ops", long_model]):
        assert "too long" in _one_line_error(capsys, cmd)


@pytest.mark.parametrize("cmd", ["report", "export-onnx"])
def test_bad_output_file(setup, capsys, cmd):
    d, _, loop = setup
    assert "empty" in _one_line_error(capsys, [cmd, str(d / "out"), "-o", ""])
    err = _one_line_error(capsys, [cmd, str(d / "out"), "-o", str(d / ("b" * 300))])
    assert "too long" in err and "internal" not in err


def test_image_name_too_long(setup, capsys):
    d, _, _ = setup
    err = _one_line_error(capsys, ["run", str(d / "out"), str(d / ("c" * 300 + ".png"))])
    assert "too long" in err
    assert np.zeros(1).size == 1
