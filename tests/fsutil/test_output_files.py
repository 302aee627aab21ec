"""fsutil's output files: atomic writes keep symlinks, devices and FIFOs are refused, a failed
write says what failed.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from tcc_compiler import fsutil
from tcc_compiler.errors import InputError


def test_atomic_write_through_file_symlink_keeps_link(tmp_path):
    real = tmp_path / "real.bin"
    real.write_bytes(b"old")
    link = tmp_path / "ln.bin"
    link.symlink_to(real)
    fsutil.atomic_write_bytes(link, b"new")
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert real.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ln.bin", "real.bin"]


def test_write_output_file_refuses_device(capsys):
    if not Path("/dev/null").exists() or not stat.S_ISCHR(os.stat("/dev/null").st_mode):
        pytest.skip("no /dev/null character device")
    with pytest.raises(InputError, match=r"^--csv /dev/null: not a regular file$"):
        fsutil.write_output_file("/dev/null", "x", "--csv")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_write_output_file_refuses_fifo(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="not a regular file"):
        fsutil.write_output_file(fifo, b"x", "-o")
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_output_write_failure_says_what_failed(tmp_path, monkeypatch):
    from tcc_compiler import fsutil

    def refuse(path, data):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(fsutil.files, "atomic_write_bytes", refuse)
    with pytest.raises(InputError, match="read-only or not writable"):
        fsutil.write_output_file(tmp_path / "x.csv", "a", "--csv")

