"""manifest.json checks: messages of the quantization-parameter checks.
"""

from __future__ import annotations

import pytest


def test_manifest_single_channel_quant_message():
    from tcc_compiler.errors import FormatError
    from tcc_compiler.runtime.manifest_check import _Checker

    with pytest.raises(FormatError, match="expected 1 finite positive numbers") as ei:
        _Checker("m.json").quant({"scale": [-1.0], "zero_point": [0]}, "input", 1)
    assert "1 or 1" not in str(ei.value)

