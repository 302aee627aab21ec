"""Saved and loaded models through the API: ``save`` never deletes foreign files, a loaded
model's ``ir`` names the stages it holds.
"""

from __future__ import annotations

import pytest

from tcc_compiler.errors import InputError


def test_api_save_refuses_foreign_files(small_folder, tmp_path):
    import tcc_compiler as tc

    _, src = small_folder
    dest = tmp_path / "d"
    dest.mkdir()
    (dest / "data.csv").write_text("x\n")
    with pytest.raises(InputError, match="data.csv"):
        tc.load(src).save(dest)
    assert (dest / "data.csv").is_file()


def test_loaded_model_ir_missing_stage_lists_available(small_folder):
    import tcc_compiler as tc

    _, out = small_folder
    m = tc.load(out)
    assert "graph" in m.ir["quantize"]
    with pytest.raises(KeyError, match="available: quantize"):
        m.ir["fuse-activation"]

