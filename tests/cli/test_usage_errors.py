"""Usage errors: invalid option values are argparse errors (exit 2) that say what was expected;
a missing folder says it does not exist.
"""

from __future__ import annotations

import pytest
from helpers import PHOTO
from helpers.cli import one_line_error, run_cli

from tcc_compiler.cli.main import main


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



@pytest.mark.parametrize("extra,needle", [
    ([], "--precision-goal applies to --precision auto only"),          # ignored before
    (["--precision", "auto"], "give a finite number of dB >= 0"),        # inf: "goal within None"
])
def test_precision_goal_is_refused_where_it_cannot_apply(small_folder, tmp_path, capsys, extra,
                                                         needle):
    """A new-user try: ``--precision-goal`` without ``--precision auto`` was silently ignored
    (``--percentile`` without its method is refused), and a goal of ``inf`` compiled with
    "goal within None" in the summary."""
    model, _ = small_folder
    code, _, err = run_cli(["compile", str(model), "--input", "16x16x3", "-o",
                            str(tmp_path / "o"), "--precision-goal", "inf", *extra], capsys)
    assert code == 2
    assert needle in one_line_error(err)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("value,extra,needle", [
    ("30", [], "--precision-target applies to --precision auto only"),
    ("nan", ["--precision", "auto"], "--precision-target nan: give a number of dB"),
])
def test_precision_target_is_refused_where_it_cannot_apply(small_folder, tmp_path, capsys,
                                                           value, extra, needle):
    """``--precision-target`` (auto's target) without ``--precision auto``, or NaN: exit 2 with
    one line, before any work."""
    model, _ = small_folder
    code, _, err = run_cli(["compile", str(model), "--input", "16x16x3", "-o",
                            str(tmp_path / "o"), "--precision-target", value, *extra], capsys)
    assert code == 2
    assert needle in one_line_error(err)
    assert not (tmp_path / "o").exists()
