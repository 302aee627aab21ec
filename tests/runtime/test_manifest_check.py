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



def _two_inputs(second_offset: int) -> dict:
    """The ``input``/``inputs`` fields of a two-input program: 'a' [1,8,32,32] at 0 (8192 B),
    'b' [1,3,32,32] at ``second_offset``."""
    def rec(name, c, off):
        return {"name": name, "shape": [1, c, 32, 32], "npu_hwc": [32, 32, c], "offset": off,
                "dtype": "int8", "region": "INPUT", "npu_layout": "NHWC",
                "scale": [0.02], "zero_point": [0]}
    first = rec("a", 8, 0)
    return {"input": first, "inputs": [first, rec("b", 3, second_offset)]}


@pytest.mark.parametrize("offset, input_bytes, says", [
    (4096, None, "4096 overlaps the previous input (it ends at byte 8192)"),
    (8192, 10000, "8192 + 3072 bytes leaves the INPUT region (10000 bytes)")])
def test_inputs_offset_messages_name_the_fault(offset, input_bytes, says):
    """An overlap checked without the command header's INPUT size said '(None bytes)'."""
    from tcc_compiler.errors import FormatError
    from tcc_compiler.runtime.manifest_check import FieldChecker, _check_inputs

    with pytest.raises(FormatError) as ei:
        _check_inputs(FieldChecker("m.json"), _two_inputs(offset), input_bytes)
    assert str(ei.value) == f"m.json: inputs[1].offset: {says}"


def test_an_integer_too_large_for_a_float_is_not_a_number():
    """JSON integers are unbounded: a scale of 10**400 raised OverflowError in math.isfinite
    (``tccc run`` exit 1, found by a new-user attack) instead of the field's message."""
    from tcc_compiler.errors import FormatError
    from tcc_compiler.runtime.manifest_check import _Checker

    with pytest.raises(FormatError, match="expected 1 finite positive numbers"):
        _Checker("m.json").quant({"scale": [10 ** 400], "zero_point": [0]}, "input", 1)


@pytest.mark.parametrize("field", ["mean", "std", "scale"])
def test_preprocess_numbers_too_large_for_a_float_are_refused(field):
    """A manifest's (or a caller's) preprocessing mean/std/scale of 10**400 raised
    OverflowError (exit 1) instead of the InputError naming the field."""
    from tcc_compiler.datasets.images import Preprocess
    from tcc_compiler.errors import InputError

    value = 10 ** 400 if field == "scale" else [10 ** 400, 0.5, 0.5]
    with pytest.raises(InputError, match=f"preprocess: {field} must be"):
        Preprocess(**{"width": 8, "height": 8, field: value})
