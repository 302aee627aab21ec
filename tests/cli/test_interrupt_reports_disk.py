"""Ctrl-C around the output swap (issue #16 item 9): the message and the exit code say what is
on disk. Before the swap: "unchanged", exit 130, the previous output intact. During the swap:
the swap completes, the summary is printed, a note says the new output is complete, exit 0."""

from __future__ import annotations

import os
import signal

import onnx
import pytest

from tcc_compiler import fsutil
from tcc_compiler.cli.main import main


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from conftest import residual_net_impl

    path = tmp_path_factory.mktemp("intr") / "net.onnx"
    onnx.save(residual_net_impl(hw=16, c=4), str(path))
    return path


def _argv(model, out):
    return ["-q", "compile", str(model), "--input", "16x16x3", "-o", str(out)]


def test_interrupt_during_the_swap_completes_and_says_so(model, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    assert main(_argv(model, out)) == 0
    real = fsutil.folder._swap_in

    def swap_with_ctrl_c(tmp, dest, parent):
        os.kill(os.getpid(), signal.SIGINT)   # arrives mid-swap: held until it is done
        real(tmp, dest, parent)

    monkeypatch.setattr(fsutil.folder, "_swap_in", swap_with_ctrl_c)
    capsys.readouterr()
    assert main(_argv(model, out)) == 0
    cap = capsys.readouterr()
    assert cap.out.startswith(f"wrote {out}/")
    assert "new output is complete" in cap.err and "interrupted;" not in cap.err
    assert (out / "manifest.json").is_file()


def test_interrupt_before_the_swap_leaves_the_previous_output(model, tmp_path, monkeypatch,
                                                              capsys):
    out = tmp_path / "out"
    assert main(_argv(model, out)) == 0
    before = (out / "manifest.json").read_bytes()

    def ctrl_c(folder):
        raise KeyboardInterrupt

    monkeypatch.setattr(fsutil.folder, "_fsync_tree", ctrl_c)
    capsys.readouterr()
    assert main(_argv(model, out)) == 130
    cap = capsys.readouterr()
    assert cap.out == "" and "unchanged" in cap.err and cap.err.count("\n") == 1
    assert (out / "manifest.json").read_bytes() == before
    assert not [e for e in os.listdir(tmp_path) if e.startswith(".out.")]


def test_interrupt_while_starting_is_one_line_not_a_traceback(model, tmp_path, monkeypatch,
                                                              capsys):
    # Ctrl-C while the parser imports the commands (seconds on a loaded machine) printed a
    # KeyboardInterrupt traceback and the process died by SIGINT
    import importlib

    cli = importlib.import_module("tcc_compiler.cli.main")  # the module, not the function

    def ctrl_c():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_parser", ctrl_c)
    assert cli.main(_argv(model, tmp_path / "out")) == 130
    cap = capsys.readouterr()
    assert cap.err == "tccc: interrupted (while starting; nothing was done)\n"
    assert not (tmp_path / "out").exists()


_LATE_CTRL_C = r"""
import os, signal, sys
from tcc_compiler import cli
from tcc_compiler.cli.commands import compile as c
real = c._print_summary
def summary_then_ctrl_c(args, r):
    real(args, r)
    os.kill(os.getpid(), signal.SIGINT)  # after 'wrote ...': the output is already in place
c._print_summary = summary_then_ctrl_c
sys.argv = ["tccc"] + sys.argv[1:]
sys.exit(cli.main())
"""


def test_ctrl_c_after_wrote_is_exit_0_and_says_the_output_is_complete(model, tmp_path):
    """A new user's Ctrl-C right after "wrote ..." (issue #16 item 9): the ``tccc`` process
    died by SIGINT (-2) or exited 130 saying "interrupted" with the new output complete on
    disk. Now: exit 0, one note that the output is complete, no traceback."""
    import subprocess
    import sys

    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-c", _LATE_CTRL_C, *_argv(model, out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, (r.returncode, r.stderr)
    assert r.stdout.startswith("wrote ") or "wrote" in r.stdout or r.stdout == "", r.stdout
    assert "Traceback" not in r.stderr
    assert "the new output is complete" in r.stderr, r.stderr
    assert (out / "npu_cmd.bin").is_file() and (out / "manifest.json").is_file()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # ours untouched


def test_dump_ir_inside_the_output_folder_is_refused_before_any_work(model, tmp_path, capsys):
    out = tmp_path / "out"
    for dump in (out, out / "ir"):
        code = main(_argv(model, out) + ["--dump-ir", str(dump)])
        err = capsys.readouterr().err
        assert code == 2 and "--dump-ir" in err and "inside the output folder" in err, err
        assert not out.exists()
