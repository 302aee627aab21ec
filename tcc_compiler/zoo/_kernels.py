"""Float32 NumPy kernels (NCHW) used to calibrate the detector and mobile zoo models.

Every function takes and returns float32 arrays in ONNX layouts: activations NCHW
``[N, C, H, W]``, convolution weights OIHW ``[O, I/groups, kH, kW]``, transposed-convolution
weights IOHW ``[I, O, kH, kW]``. They follow the ONNX operator definitions (floor output-size
rule, zero padding, ``-inf`` padding for MaxPool) and only run on a handful of small images while
a zoo model is built, so they favour plain code over speed.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

Pads = tuple[int, int, int, int]  # (top, left, bottom, right) pixels, ONNX order x1b, x2b, x1e, x2e


def _pad(x: np.ndarray, pads: Pads, value: float = 0.0) -> np.ndarray:
    top, left, bottom, right = pads
    if not any(pads):
        return x
    return np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=value)


def conv_out_hw(h: int, w: int, kernel: int, stride: int, pads: Pads) -> tuple[int, int]:
    """ONNX Conv/MaxPool output size (floor rule) for a square kernel.

    Returns:
        ``(Ho, Wo)`` with ``Ho = (H + top + bottom - k) // stride + 1``.
    """
    top, left, bottom, right = pads
    return (h + top + bottom - kernel) // stride + 1, (w + left + right - kernel) // stride + 1


def conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, stride: int, pads: Pads,
           groups: int = 1) -> np.ndarray:
    """Grouped 2-D convolution (ONNX Conv, dilation 1).

    Args:
        x: float32 NCHW ``[N, C, H, W]``.
        w: float32 OIHW ``[O, C/groups, k, k]``.
        b: float32 ``[O]`` or None.
        stride: stride in both axes (pixels); pads: (top, left, bottom, right) zero padding.
        groups: ``C`` and ``O`` must both be multiples of it.

    Returns:
        float32 NCHW ``[N, O, Ho, Wo]``.
    """
    o, cg, k, _ = w.shape
    xp = _pad(x, pads)
    win = sliding_window_view(xp, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]
    n, c, ho, wo = win.shape[:4]
    if groups == c and cg == 1 and o == c:  # depthwise
        out = np.einsum("nchwij,cij->nchw", win, w[:, 0], optimize=True)
    else:
        og = o // groups
        outs = []
        for g in range(groups):
            part = win[:, g * cg:(g + 1) * cg]  # [N, cg, Ho, Wo, k, k]
            cols = part.transpose(0, 2, 3, 1, 4, 5).reshape(n * ho * wo, cg * k * k)
            wg = w[g * og:(g + 1) * og].reshape(og, cg * k * k)
            outs.append((cols @ wg.T).reshape(n, ho, wo, og))
        out = np.concatenate(outs, axis=3).transpose(0, 3, 1, 2)
    if b is not None:
        out = out + b[None, :, None, None]
    return np.ascontiguousarray(out, dtype=np.float32)


def conv_transpose2d(x: np.ndarray, w: np.ndarray, stride: int, pad: int) -> np.ndarray:
    """ONNX ConvTranspose (group 1, no bias, no output_padding).

    Args:
        x: float32 NCHW ``[N, I, H, W]``; w: float32 IOHW ``[I, O, k, k]``.
        stride, pad: stride and symmetric padding (pixels).

    Returns:
        float32 NCHW ``[N, O, (H-1)*stride - 2*pad + k, ...]``: the zero-inserted input
        convolved with the flipped kernel, which is the definition of the transposed conv.
    """
    n, c, h, wd = x.shape
    k = w.shape[2]
    up = np.zeros((n, c, (h - 1) * stride + 1, (wd - 1) * stride + 1), np.float32)
    up[:, :, ::stride, ::stride] = x
    flipped = np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))  # OIHW
    edge = k - 1 - pad
    return conv2d(up, flipped, None, 1, (edge, edge, edge, edge))


def maxpool2d(x: np.ndarray, kernel: int, stride: int, pad: int) -> np.ndarray:
    """ONNX MaxPool (floor mode, ``-inf`` padding), float32 NCHW in and out."""
    xp = _pad(x, (pad,) * 4, -np.inf)
    win = sliding_window_view(xp, (kernel, kernel), axis=(2, 3))[:, :, ::stride, ::stride]
    return np.ascontiguousarray(win.max(axis=(4, 5)))


def resize_nearest(x: np.ndarray, factor: int) -> np.ndarray:
    """ONNX Resize, nearest, integer scale ``factor`` on H and W (asymmetric/floor)."""
    return np.repeat(np.repeat(x, factor, axis=2), factor, axis=3)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function, float32, overflow-safe."""
    return (0.5 * (1.0 + np.tanh(0.5 * x))).astype(np.float32)


def hardsigmoid(x: np.ndarray) -> np.ndarray:
    """ONNX HardSigmoid with alpha 1/6, beta 0.5 (torch's Hardsigmoid)."""
    return np.clip(x / 6.0 + 0.5, 0.0, 1.0).astype(np.float32)


def softmax(x: np.ndarray, axis: int) -> np.ndarray:
    """Numerically stable softmax along ``axis``."""
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return (e / e.sum(axis=axis, keepdims=True)).astype(np.float32)
