"""Usage errors: invalid option values are argparse errors (exit 2) that say what was expected;
a missing folder says it does not exist.
"""

from __future__ import annotations

import pytest
from helpers import PHOTO
from helpers.cli import one_line_error, run_cli

from tcc_compiler.cli import main


def test_analyze_top_zero_is_a_usage_error(small_folder, capsys):
    model, out = small_folder
    with pytest.raises(SystemExit) as exc:   # argparse usage error
        main(["analyze", str(out), str(model), PHOTO, "--top", "0"])
    assert exc.value.code == 2 and "positive integer" in capsys.readouterr().err


def test_run_negative_seed_is_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as ei:  # argparse usage error
        main(["run", str(tmp_path), "x.npy", "--schedule", "random", "--seed", "-5"])
    assert ei.value.code == 2
    err = capsys.readouterr().err
    assert "expected an integer >= 0, got -5" in err and "internal error" not in err


def test_run_missing_folder_says_does_not_exist(tmp_path, capsys):
    code, _, err = run_cli(["run", str(tmp_path / "nope"), "x.npy"], capsys)
    assert code == 2
    assert "does not exist" in one_line_error(err)

