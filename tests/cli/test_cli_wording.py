"""CLI wording (issue #16 item 11): errors name flags, not the API parameters behind them
(``input_whc/--input``), and ``--dump-ir`` says how much it wrote."""

from __future__ import annotations

import onnx
import pytest

from tcc_compiler.cli.main import cli_wording, main
from tcc_compiler.driver import import_model


def test_library_messages_name_the_flag_on_the_command_line():
    assert cli_wording("use a smaller input_whc/--input") == "use a smaller --input"
    assert cli_wording("calibration/--calib and calib_table/--calib-table") == \
        "--calib and --calib-table"
    assert cli_wording("/data/my_input_whc/--input") == "/data/my_input_whc/--input"


def test_memory_refusal_names_the_flag(tmp_path, capsys, monkeypatch):
    from conftest import residual_net_impl

    from tcc_compiler import driver

    path = tmp_path / "net.onnx"
    onnx.save(residual_net_impl(hw=16, c=4), str(path))
    monkeypatch.setattr(driver.memory, "available_memory_bytes", lambda: 1)
    capsys.readouterr()
    assert main(["compile", str(path), "--input", "16x16x3", "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "--input" in err and "input_whc" not in err
    with pytest.raises(Exception, match="input_whc/--input"):  # the API keeps both names
        driver.check_memory(import_model(str(path), "16x16x3")[0], str(path))


def test_dump_ir_says_how_much_it_wrote(tmp_path, capsys):
    from conftest import residual_net_impl

    path = tmp_path / "net.onnx"
    onnx.save(residual_net_impl(hw=16, c=4), str(path))
    capsys.readouterr()
    assert main(["-q", "compile", str(path), "--input", "16x16x3", "-o", str(tmp_path / "o"),
                 "--dump-ir", str(tmp_path / "dump")]) == 0
    err = capsys.readouterr().err
    n = len([p for p in (tmp_path / "dump").iterdir() if p.suffix in (".tir", ".npz")])
    assert f"--dump-ir wrote {n} files" in err and " MB" in err


def test_precision_goal_message_names_only_the_flag():
    """A new-user try: ``--precision-goal -1`` said ``precision_goal_db/--precision-goal``."""
    msg = "m.onnx: precision_goal_db/--precision-goal -1.0: give a number of dB >= 0"
    assert cli_wording(msg) == "m.onnx: --precision-goal -1.0: give a number of dB >= 0"
    assert cli_wording("precision/--precision x") == "--precision x"
