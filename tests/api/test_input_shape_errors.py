"""The API's ``input_shape``: a wrong string or tuple is an InputError naming the argument and
the CLI flag; limits are checked.
"""

from __future__ import annotations

import pytest
from conftest import residual_net_impl

from tcc_compiler.errors import InputError


def test_api_errors_name_the_argument_and_the_flag():
    import tcc_compiler as tc

    with pytest.raises(InputError, match="input_whc/--input"):
        tc.compile(residual_net_impl(hw=16), "16x16")


@pytest.mark.parametrize("shape", [(32, 32), (32, 32, 3, 1), ("a", 32, 3)])
def test_api_tuple_input_shape_is_input_error(gap_fc_model, shape):
    import tcc_compiler as tc

    with pytest.raises(InputError, match="input_whc/--input"):
        tc.compile(str(gap_fc_model), shape)


def test_api_tuple_input_shape_limits_checked(gap_fc_model):
    import tcc_compiler as tc

    with pytest.raises(InputError, match="1..8192"):
        tc.compile(str(gap_fc_model), (9000, 16, 3))

