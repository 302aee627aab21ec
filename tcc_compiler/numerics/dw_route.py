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
#: sums in registers, taps unrolled) unless the rows kernel or the padding argue otherwise
#: (:func:`dw_kernel`). Measured on 3x3 and 5x5 windows only (a two-pixel variant of the
#: 5x5 kernel was not vectorised by the compiler and ran 5x slower, so larger unrolled
#: windows are not assumed to vectorise).
UNROLL_MAX_TAPS = 25

#: Stride-1 layers of at most this many channels keep the rows kernel: measured (loaded, CPU
#: us per tile, best of 40, Lite0's tiles) rows vs unrolled: 21x112x32 3x3 26 vs 37,
#: 12x56x144 3x3 31 vs 23.
ROWS_MAX_CHANNELS = 64

#: The unrolled kernels sum every tap, the padding's zeros included; below this fraction of
#: taps inside the input the pixel kernel (which skips them) is faster. Measured with the
#: unrolled kernels' channel blocks (numerics/jit_dw.py ``CHANNEL_BLOCK``; RT priority,
#: loaded, CPU us per tile with the epilogue fused, best of 80) unrolled vs pixels:
#: 14x14x672 5x5 pad 2 (84 % inside) 103 vs 136, 7x7x1152 3x3 pad 1 (82 %) 22 vs 25,
#: 10x10x320 5x5 (77 %) 24 vs 34, 6x7x1152 5x5 (70 %) 26 vs 27, 7x7x576 5x5 (69 %) 22 vs 24,
#: 7x7x240 5x5 (69 %) 10.5 vs 10.8; 5x7x1152 5x5 (66 %) 22 vs 19, 3x3x1024 3x3 (60 %) 5.2
#: vs 4.7, 4x4x512 5x5 (49 %) 10 vs 6. (Before the channel blocks the limit was 85 %:
#: 14x14x672 5x5 137 vs 113-128.)
UNROLL_MIN_INSIDE = 0.68


def dw_kernel(c: int, kernel, strides, pads, dilations, oh: int, ow: int) -> str:
    """Which depthwise kernel jit.py's ``depthwise_routine`` and ``depthwise_epilogue_routine``
    run for an int8 zero point: "unrolled" (numerics/jit_dw.py, windows of at most
    UNROLL_MAX_TAPS taps with at least UNROLL_MIN_INSIDE of the taps inside
    the input, unless "rows" applies), "rows" (a column stride of 1 and at most
    ROWS_MAX_CHANNELS channels, or W1_MAX_CHANNELS when not unrolled) or
    "pixels". kernel (KH, KW), strides/dilations (h, w), pads (top, left[, bottom, right];
    bottom/right 0 when absent), oh/ow the output size. All choices give the same bytes."""
    kh, kw = int(kernel[0]), int(kernel[1])
    rows = int(strides[1]) == 1
    if rows and c <= ROWS_MAX_CHANNELS:
        return "rows"
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
