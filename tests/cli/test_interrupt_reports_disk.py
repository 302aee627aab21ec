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
    real = fsutil._swap_in

    def swap_with_ctrl_c(tmp, dest, parent):
        os.kill(os.getpid(), signal.SIGINT)   # arrives mid-swap: held until it is done
        real(tmp, dest, parent)

    monkeypatch.setattr(fsutil, "_swap_in", swap_with_ctrl_c)
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

    monkeypatch.setattr(fsutil, "_fsync_tree", ctrl_c)
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
