"""A new user's mistakes named in plain words, one line each (exit 2 at the CLI): an unusable
labels file says why without repeating its path in Python's exception text, and an output
file whose folder refuses writes names that folder, not the hidden temporary file tccc
writes beside the output before renaming it into place."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from tcc_compiler.errors import InputError
from tcc_compiler.fsutil.paths import plain_os_error
from tcc_compiler.runtime.evaluate import read_labels


def test_a_missing_or_binary_labels_file_says_why_once(tmp_path):
    missing = tmp_path / "labels.csv"
    with pytest.raises(InputError) as info:
        read_labels(missing, tmp_path)
    assert str(info.value) == f"{missing}: cannot read labels file (No such file or directory)"
    binary = tmp_path / "bin.csv"
    binary.write_bytes(b"\xff\xfe\x00\x81label")
    with pytest.raises(InputError, match=r"bin\.csv: labels file is not UTF-8 text$"):
        read_labels(binary, tmp_path)


def test_a_refused_temporary_file_names_its_folder():
    dest = Path("/data/out/model.onnx")
    tmp = PermissionError(errno.EACCES, "Permission denied", "/data/out/.model.onnx.k3j2")
    assert plain_os_error(dest, tmp, "write -o") == \
        "/data/out/model.onnx: cannot write -o: /data/out is read-only or not writable by you"
    # dest itself, or a folder on the way to it, is named as it is
    for name in ("/data/out/model.onnx", "/data"):
        exc = PermissionError(errno.EACCES, "Permission denied", name)
        assert plain_os_error(dest, exc, "write -o").endswith(
            f": {name} is read-only or not writable by you")
