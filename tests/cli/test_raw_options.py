"""The raw-input options (``--raw-size``, ``--raw-layout``, ``--raw``, ``--pixels``) shared by
``tccc compile``, ``run`` and ``eval`` (``cli/raw_options.py``): ``--raw-layout`` without
``--raw-size`` said nothing and read no raw file (silently ignored); it is refused in one
line, exit 2, by all three, before any work, as compile refuses ``--raw-size`` without
``--calib``. The Python API refuses a non-default layout without a size alike."""

from __future__ import annotations

import pytest
from helpers.cli import one_line_error, run_cli

from tcc_compiler.errors import InputError


@pytest.mark.parametrize("layout", ["CHW", "HWC"])
def test_raw_layout_without_raw_size_is_refused(channel_folders, tmp_path, capsys, layout):
    c1 = channel_folders[1]
    out = tmp_path / "o"
    for argv in (["run", c1["folder"], c1["calib"]],
                 ["eval", c1["folder"], "--images", tmp_path],
                 ["compile", c1["model"], "--calib", c1["calib"], "-o", out]):
        code, stdout, err = run_cli(argv + ["--raw-layout", layout], capsys)
        line = one_line_error(err)
        assert code == 2, (argv, err)
        assert f"--raw-layout {layout}" in line and "--raw-size" in line, line
        assert stdout == ""
    assert not out.exists()


def test_raw_without_raw_size_is_refused_before_reading_samples(channel_folders, tmp_path,
                                                                 capsys):
    # eval --raw alone: refused before it looked for samples (the folder here holds none)
    code, _, err = run_cli(["eval", channel_folders[1]["folder"], "--images", tmp_path / "none",
                            "--raw"], capsys)
    assert code == 2
    assert "--raw needs --raw-size" in one_line_error(err)


def test_api_refuses_a_layout_without_a_size(channel_folders):
    from tcc_compiler.api import folders
    from tcc_compiler.options import CompileOptions

    prog = folders.load_program(channel_folders[1]["folder"])
    with pytest.raises(InputError, match=r"--raw-layout CHW.*--raw-size"):
        folders.inputs_for([channel_folders[1]["calib"]], prog, raw_layout="CHW")
    with pytest.raises(InputError, match=r"--raw-layout CHW.*--raw-size"):
        CompileOptions(raw_layout="CHW")
