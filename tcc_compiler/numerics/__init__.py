"""The NPU's integer arithmetic, defined once (see specs/quantization.md).

The quantizer uses it to derive multipliers, the golden integer model and the reference
executor use the same kernels, so a disagreement between them can only come from tiling,
addressing or encoding, which is what the bit-exact check is for.
"""

from tcc_compiler.numerics.requant import (  # noqa: F401
    MULT_BITS,
    SHIFT_MAX,
    quantize_multiplier,
    quantize_multipliers_shared,
    requantize,
    quantize_tensor,
    dequantize_tensor,
)
from tcc_compiler.numerics.kernels import (  # noqa: F401
    conv_accumulate,
    conv_epilogue,
    add_int8,
    maxpool_int8,
    avgpool_int8,
    window_counts,
    channel_shuffle_order,
    conv_epilogue_int32,
)
