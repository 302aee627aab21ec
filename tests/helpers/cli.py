"""Running the ``tccc`` command line in-process and reading its one-line errors."""

from __future__ import annotations

import pytest

from tcc_compiler.cli.main import main


def run_cli(argv: list, capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    """Run ``tccc`` with ``argv`` (items converted with ``str``) in this process.

    Returns:
        (exit code, captured stdout, captured stderr) of this call only.
    """
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str) -> str:
    """The single ``tccc: error: ...`` line of ``err``; fails the test when stderr holds any
    other non-blank line."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("tccc: error: ")
    return lines[0]
