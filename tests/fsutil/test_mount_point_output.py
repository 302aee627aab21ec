"""An empty mount point (a container volume) as the output folder (issue #16 item 5): it cannot
be renamed, so the output is written into it file by file; it used to be refused, and only
after the whole compile."""

from __future__ import annotations

import os
import subprocess

import onnx
import pytest

from tcc_compiler import fsutil
from tcc_compiler.cli.main import main


@pytest.fixture
def model(tmp_path):
    from conftest import residual_net_impl

    path = tmp_path / "net.onnx"
    onnx.save(residual_net_impl(hw=16, c=4), str(path))
    return path


def _compile(model, out) -> int:
    return main(["-q", "compile", str(model), "--input", "16x16x3", "-o", str(out)])


def test_mount_point_is_filled_in_place(model, tmp_path, monkeypatch, capsys):
    """Simulated mount point (renaming it would fail with EBUSY): the folder stays the same
    inode, holds the new output, and a recompile removes the previous output's extra files."""
    vol = tmp_path / "vol"
    vol.mkdir()
    monkeypatch.setattr(fsutil.folder, "is_mount_point", lambda p: os.path.realpath(p) == str(vol))
    monkeypatch.setattr(os, "replace", _no_rename_of(vol, os.replace))
    inode = vol.stat().st_ino
    assert _compile(model, vol) == 0
    assert (vol / "manifest.json").is_file() and (vol / "npu_cmd.bin").is_file()
    assert vol.stat().st_ino == inode
    (vol / "report.html").write_text("old report")     # a file tccc writes: stale now
    assert _compile(model, vol) == 0
    assert not (vol / "report.html").exists()
    assert not [e for e in os.listdir(vol) if e.startswith(".")]   # no staging left
    assert main(["run", str(vol), str(tmp_path / "missing.npy")]) == 2  # a loadable folder...
    assert "missing.npy" in capsys.readouterr().err                   # ...refusing the input


def _no_rename_of(vol, real):
    def replace(src, dst, *a, **k):
        if os.path.realpath(dst) == str(vol) or os.path.realpath(src) == str(vol):
            raise OSError(16, "Device or resource busy", str(dst))   # EBUSY, as a mount
        return real(src, dst, *a, **k)
    return replace


def test_mount_point_with_foreign_files_is_refused_before_compiling(model, tmp_path,
                                                                   monkeypatch, capsys):
    vol = tmp_path / "vol"
    vol.mkdir()
    (vol / "notes.txt").write_text("mine")
    monkeypatch.setattr(fsutil.folder, "is_mount_point", lambda p: os.path.realpath(p) == str(vol))
    from tcc_compiler import api

    monkeypatch.setattr(api, "compile", lambda *a, **k: pytest.fail("compiled first"))
    assert _compile(model, vol) == 2
    assert "notes.txt" in capsys.readouterr().err
    assert (vol / "notes.txt").read_text() == "mine"


def test_real_tmpfs_mount_point(model, tmp_path):
    """The real thing where the test may mount (root in a container); the simulated tests
    above cover the logic everywhere."""
    vol = tmp_path / "vol"
    vol.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs",
                                            str(vol)], capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root / CAP_SYS_ADMIN)")
    try:
        assert fsutil.is_mount_point(vol)
        assert _compile(model, vol) == 0
        assert _compile(model, vol) == 0
        assert (vol / "manifest.json").is_file()
    finally:
        subprocess.run(["umount", str(vol)], check=False)
