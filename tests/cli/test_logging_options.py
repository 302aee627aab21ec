"""Logging options: ``-vv`` adds the traceback but keeps the exit code; ``-q``/``-v`` are also
accepted after the subcommand.
"""

from __future__ import annotations

from helpers.cli import run_cli


def test_vv_adds_traceback_but_keeps_exit_code(small_folder, tmp_path, capsys):
    _, out = small_folder
    code, _, err = run_cli(["-vv", "run", str(out), str(tmp_path / "nonexist.jpg")], capsys)
    assert code == 2
    assert "Traceback" in err and err.rstrip().splitlines()[-1].startswith("tccc: error: ")


def test_quiet_and_verbose_after_subcommand(capsys):
    code, out, err = run_cli(["ops", "-q"], capsys)
    assert code == 0 and "Conv" in out
    from tcc_compiler.cli.main import build_parser

    args = build_parser().parse_args(["-v", "ops", "-v", "-q"])
    assert args.sub_verbose == 1 and args.sub_quiet and args.verbose == 1

