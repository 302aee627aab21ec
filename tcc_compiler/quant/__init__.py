"""INT8 quantization: calibration, graph quantization, lowered parameters, golden model."""

from tcc_compiler.quant.calibrate import METHODS, collect_ranges  # noqa: F401
from tcc_compiler.quant.quantize import quantize_graph  # noqa: F401
from tcc_compiler.quant.params import (ConvQuant, PoolQuant, AddQuant, conv_quant,  # noqa: F401
                                       pool_quant, add_quant, quantize_input,
                                       dequantize_output)
from tcc_compiler.quant.golden import run_golden  # noqa: F401
