"""Byte-addressed memories of the reference executor (SRAM and the DRAM regions)."""

from __future__ import annotations

import mmap

import numpy as np

#: Element bytes -> the integer dtype of an SRAM operand (1: int8, 2: int16, 4: int32; the
#: CONV_CFG/POOL_CFG/EW_TILE width bits and out_mode pick the bytes, multi-byte elements are
#: little-endian in SRAM).
INT_DTYPES = {1: np.int8, 2: np.int16, 4: np.int32}


class ByteBox:
    """Write-only stand-in for a strided box of multi-byte elements: ``box[...] = y`` stores
    ``y`` (little-endian, [h, w, c]) through the byte view ``raw`` ([h, w, c * itemsize])."""

    def __init__(self, raw: np.ndarray, dtype):
        self.raw, self.dtype = raw, np.dtype(dtype)

    def __setitem__(self, key, y: np.ndarray) -> None:
        y = np.ascontiguousarray(y, dtype=self.dtype.newbyteorder("<"))
        self.raw[...] = y.view(np.uint8).reshape(self.raw.shape)


class Memory:
    """A byte-addressed memory (bytearray) with bounds-checked numpy views."""

    def __init__(self, name: str, buf: bytearray, writable: bool):
        self.name = name
        self.buf = buf
        self.arr = np.frombuffer(self.buf, dtype=np.uint8)
        self.writable = writable

    @classmethod
    def filled(cls, name: str, size: int, fill: int) -> "Memory":
        """A writable memory of ``size`` bytes, each ``fill``.

        Zero-filled memories are anonymous mmaps: the OS hands out zero pages only when they
        are touched, so a header that claims a huge region costs address space, not RAM (a
        hostile 400-byte file cannot make the executor commit gigabytes)."""
        if fill:
            return cls(name, bytearray([fill]) * size, True)
        return cls(name, mmap.mmap(-1, max(size, 1)) if size else bytearray(0), True)

    @property
    def size(self) -> int:
        """Size in bytes."""
        return len(self.arr)
