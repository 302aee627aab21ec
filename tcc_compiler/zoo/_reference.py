"""Float64 NumPy reference kernels and synthetic images used to calibrate zoo BatchNorm statistics.

Everything here works on NHWC batches ``[N, H, W, C]`` of float64; convolution weights are ONNX
OIHW ``[O, I, kH, kW]``. The kernels are deliberately small and slow-but-simple (im2col + one
matmul); they only ever run on a handful of 64x64 images while a zoo model is built.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

# ImageNet normalisation used to turn the synthetic uint8 images into network inputs.
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
# Fixed seed of the calibration images: independent of the model seed so every model sees the
# same data, and the same on every machine.
_IMAGE_SEED = 0x7CC750


def conv2d(x: np.ndarray, w: np.ndarray, stride: int, pad: int) -> np.ndarray:
    """2-D convolution, no bias, no dilation, group 1.

    Args:
        x: input, float64 NHWC ``[N, H, W, C]``.
        w: weights, OIHW ``[O, C, kH, kW]`` (any float dtype; used as float64).
        stride: stride in both spatial axes (pixels).
        pad: zero padding on every side (pixels).

    Returns:
        float64 NHWC ``[N, Ho, Wo, O]`` with ``Ho = (H + 2*pad - kH) // stride + 1``.
    """
    o, c, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0))) if pad else x
    win = sliding_window_view(xp, (kh, kw), axis=(1, 2))[:, ::stride, ::stride]
    n, ho, wo = win.shape[:3]
    cols = win.reshape(n * ho * wo, c * kh * kw)  # (C, kH, kW) order, matches OIHW
    out = cols @ w.reshape(o, c * kh * kw).astype(np.float64).T
    return out.reshape(n, ho, wo, o)


def maxpool2d(x: np.ndarray, kernel: int, stride: int, pad: int) -> np.ndarray:
    """Max pooling with -inf padding (ONNX MaxPool semantics, floor rounding).

    Args:
        x: float64 NHWC ``[N, H, W, C]``.
        kernel, stride, pad: square window size, stride and padding (pixels).

    Returns:
        float64 NHWC ``[N, Ho, Wo, C]``.
    """
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), constant_values=-np.inf)
    win = sliding_window_view(xp, (kernel, kernel), axis=(1, 2))[:, ::stride, ::stride]
    return win.max(axis=(4, 5))


def round_significant(values: np.ndarray, digits: int = 4) -> np.ndarray:
    """Round every element to ``digits`` significant decimal digits.

    Uses Python's correctly rounded decimal formatting, so the result is identical on every
    machine even when ``values`` differ in their last bits (e.g. from a different BLAS).

    Args:
        values: float array of any shape.
        digits: significant digits kept (>= 1).

    Returns:
        float64 array of the same shape.
    """
    flat = [float(f"{v:.{digits - 1}e}") for v in np.asarray(values, np.float64).ravel()]
    return np.array(flat, np.float64).reshape(np.shape(values))


def _one_over_f_field(rng: np.random.Generator, size: int, exponent: float) -> np.ndarray:
    """A zero-mean, unit-std random field whose amplitude spectrum falls as 1/f**exponent."""
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.fftfreq(size)[None, :]
    f = np.sqrt(fx * fx + fy * fy)
    f[0, 0] = 1.0
    spectrum = np.fft.fft2(rng.standard_normal((size, size))) / f**exponent
    spectrum[0, 0] = 0.0
    field = np.fft.ifft2(spectrum).real
    return (field - field.mean()) / (field.std() + 1e-12)


def _dead_leaves(rng: np.random.Generator, size: int, channels: int) -> np.ndarray:
    """Occluding discs of random colour and power-law radius (a classic natural-image model)."""
    img = np.zeros((size, size, channels))
    yy, xx = np.mgrid[0:size, 0:size]
    for _ in range(48):
        radius = size * 0.5 * rng.uniform(0.05, 1.0) ** 2.5 + 1.5
        cy, cx = rng.uniform(-4, size + 4, 2)
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 < radius * radius
        img[mask] = rng.uniform(0.0, 1.0, channels)
    return img


def _mean_std(channels: int) -> tuple[np.ndarray, np.ndarray]:
    if channels == 3:
        return np.array(_IMAGENET_MEAN), np.array(_IMAGENET_STD)
    return np.full(channels, 0.45), np.full(channels, 0.225)


def unit_pixels(images: np.ndarray) -> np.ndarray:
    """Undo :func:`synthetic_images`' normalisation: float64 NHWC pixels in [0, 1] (the input
    range of YOLO models)."""
    mean, std = _mean_std(images.shape[-1])
    return np.clip(images * std + mean, 0.0, 1.0)


def synthetic_images(channels: int, count: int = 8, size: int = 64) -> np.ndarray:
    """Deterministic "natural-like" calibration images, normalised like ImageNet inputs.

    Half are colour-correlated 1/f noise fields, half are dead-leaves images with 1/f texture;
    every image is quantised to uint8 pixels (which also absorbs last-bit FFT differences between
    machines) and then normalised with the ImageNet mean/std (mean 0.45, std 0.225 per channel
    when ``channels != 3``).

    Args:
        channels: channels per image.
        count: number of images.
        size: height and width (pixels).

    Returns:
        float64 NHWC ``[count, size, size, channels]``.
    """
    rng = np.random.default_rng(_IMAGE_SEED)
    images = np.empty((count, size, size, channels))
    for i in range(count):
        exponent = rng.uniform(1.0, 1.6)
        luma = _one_over_f_field(rng, size, exponent)
        chroma = np.stack([_one_over_f_field(rng, size, exponent) for _ in range(channels)], -1)
        texture = luma[:, :, None] + 0.35 * chroma
        if i % 2 == 0:
            base = rng.uniform(0.3, 0.6, channels)
            img = base + rng.uniform(0.10, 0.22) * texture
        else:
            img = _dead_leaves(rng, size, channels) + rng.uniform(0.02, 0.08) * texture
        pixels = np.clip(np.round(img * 255.0), 0, 255)
        images[i] = pixels
    mean, std = _mean_std(channels)
    return (images / 255.0 - mean) / std
