"""A damaged manifest whose file records hold null or strings is bad input (FormatError, exit
2), not an internal error: formatting ``None`` with ``:,`` / ``:08x`` was a TypeError that the
decoder fuzzer (tests/binfmt/test_fuzz_decoders.py) found."""

from __future__ import annotations

from pathlib import Path

import pytest

from tcc_compiler.emit.files import CMD_FILE, WEIGHT_FILE
from tcc_compiler.errors import FormatError
from tcc_compiler.runtime.loaded import _check_file_records


@pytest.mark.parametrize("rec", [{"bytes": None, "crc32": None}, {"bytes": "12", "crc32": "x"},
                                 {}])
@pytest.mark.parametrize("name", [CMD_FILE, WEIGHT_FILE])
def test_null_or_string_file_records_are_a_format_error(rec, name):
    manifest = {"files": {name: rec}}
    with pytest.raises(FormatError, match=name):
        _check_file_records(Path("out"), manifest, [(name, b"not a tccc binary")])
