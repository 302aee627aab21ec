"""Which compiled depthwise kernel (numerics/jit.py ``depthwise_routine`` and
``depthwise_epilogue_routine``) runs a layer: a pure function of its shape, measured on this
machine; every choice gives the same bytes, only the speed differs."""

from __future__ import annotations

#: A depthwise layer with at most this many channels and a column stride of 1 runs row by
#: row (``depthwise_rows``: contiguous runs of pixels x channels, its taps tiled over the
#: output pixels once per routine), else pixel by pixel (``depthwise_px``); both with int16
#: products. Measured on this machine (loaded, CPU us per tile, best of 60, EfficientNet-
#: Lite0's tiles), rows vs pixels: 21x112x32 3x3 21 vs 65, 12x56x144 3x3 37 vs 44,
#: 28x28x240 5x5 217 vs 216, 14x14x480 3x3 34 vs 29, 14x14x672 5x5 144 vs 103 (the earlier
#: kernels, int32 products and the row kernel's taps tiled on every call: 77, 50, 230, 35,
#: 128).
W1_MAX_CHANNELS = 160

#: Windows up to this many taps run the kernels specialised per window (numerics/jit_dw.py:
#: blocks of pixels with their sums in registers, taps unrolled) unless the padding argues
#: otherwise (:func:`dw_kernel`). Measured on 3x3 and 5x5 windows only (larger unrolled
#: windows are not assumed to be faster: their steps hold more vectors than the registers).
UNROLL_MAX_TAPS = 25

#: The unrolled kernels sum every tap, the padding's zeros included; below this fraction of
#: taps inside the input the pixel or row kernels (which skip them) are faster. Measured
#: with the unrolled kernels' blocks of pixels (numerics/jit_dw.py ``PIXELS``; loaded, CPU us
#: per tile with the epilogue fused, best of 60) unrolled vs the better of rows and pixels:
#: 19x112x32 3x3 (99 % inside) 20 vs 38, 56x56x8 3x3 22 vs 25, 3x7x1152 5x5 (66 %) 14 vs
#: 17, 5x5x320 5x5 (58 %) 5.6 vs 6.4, 4x4x512 5x5 (49 %) 5.7 vs 6.2, 4x4x100 5x5 (49 %) 2.4
#: vs 3.0; 3x3x1024 3x3 (60 %) 4.8 vs 4.7; 2x2x1024 3x3 (44 %) 3.1 vs 2.6, 3x3x512 5x5 (36 %)
#: 5.0 vs 3.7, 2x2x1152 5x5 (16 %) 5.0 vs 2.9. (The per-pixel unrolled kernel before them
#: needed 68 %, and lost to the rows kernel up to 64 channels.)
UNROLL_MIN_INSIDE = 0.48


def dw_kernel(c: int, kernel, strides, pads, dilations, oh: int, ow: int) -> str:
    """Which depthwise kernel jit.py's ``depthwise_routine`` and ``depthwise_epilogue_routine``
    run for an int8 zero point: "unrolled" (numerics/jit_dw.py, windows of at most
    UNROLL_MAX_TAPS taps with at least UNROLL_MIN_INSIDE of the taps inside
    the input), else "rows" (a column stride of 1 and at most W1_MAX_CHANNELS channels) or
    "pixels". kernel (KH, KW), strides/dilations (h, w), pads (top, left[, bottom, right];
    bottom/right 0 when absent), oh/ow the output size. All choices give the same bytes."""
    kh, kw = int(kernel[0]), int(kernel[1])
    rows = int(strides[1]) == 1
    if kh * kw <= UNROLL_MAX_TAPS:
        p = tuple(int(v) for v in pads) + (0, 0)
        inside = (_inside(oh, kh, int(strides[0]), int(dilations[0]), p[0], p[2])
                  * _inside(ow, kw, int(strides[1]), int(dilations[1]), p[1], p[3]))
        if inside >= UNROLL_MIN_INSIDE:
            return "unrolled"
    return "rows" if rows and c <= W1_MAX_CHANNELS else "pixels"


def _inside(o: int, k: int, s: int, d: int, before: int, after: int) -> float:
    """Fraction of the O x K taps of one axis inside an input of ``(O-1) S + (K-1) D + 1
    - before - after`` elements (the smallest the pads allow)."""
    n = (o - 1) * s + (k - 1) * d + 1 - before - after
    hits = sum(1 for i in range(o) for j in range(k) if 0 <= i * s + j * d - before < n)
    return hits / (o * k)
