"""An int16 activation's range is twice its observed one (quant/quantize.py INT16_HEADROOM),
capped at the fused activation's bounds: room for inputs beyond the calibration's at a
rounding noise still far below an int8 step."""

from __future__ import annotations

import numpy as np

from tcc_compiler.quant.quantize import activation_params_int16


def test_range_is_doubled_and_capped_at_the_activation_bounds():
    p = activation_params_int16(-1.5, 3.0)
    assert int(p.zero_point) == 0 and np.isclose(float(p.scale), 6.0 / 32767)
    relu6 = activation_params_int16(0.0, 5.0, (0.0, 6.0))   # a Relu6 output never passes 6
    assert np.isclose(float(relu6.scale), 6.0 / 32767)
    assert float(activation_params_int16(0.0, 0.0).scale) == 1.0
