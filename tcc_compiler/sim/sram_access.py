"""Bounds-checked numpy views of the current core's SRAM, for the executor's command handlers
(:class:`SramAccess`, a part of :class:`~tcc_compiler.sim.executor.Executor`).

Every view is over the SRAM :class:`~tcc_compiler.sim.memory.Memory` the executor runs on
(``self._sram``: the current core's); a range past its end raises
:class:`~tcc_compiler.errors.ExecutionError` naming the command index, mnemonic, operand and
range. Multi-byte elements are little-endian (specs/isa.md).
"""

from __future__ import annotations

import math

import numpy as np

from tcc_compiler.errors import ExecutionError
from tcc_compiler.isa.commands import Command, box_strides
from tcc_compiler.sim.memory import ByteBox

#: Operand dtype -> its little-endian form (multi-byte elements are little-endian).
_LE = {t: np.dtype(t).newbyteorder("<") for t in (np.int8, np.int16, np.int32, np.uint8,
                                                  np.uint16)}

class SramAccess:
    """The SRAM view helpers of the executor; ``self._sram`` (a
    :class:`~tcc_compiler.sim.memory.Memory`) is the SRAM they view."""

    @staticmethod
    def _err(i: int, cmd: Command, msg: str) -> ExecutionError:
        return ExecutionError(f"command {i} ({cmd.name}): {msg}")

    def _sram_view(self, i: int, cmd: Command, what: str, addr: int, nbytes: int) -> np.ndarray:
        """uint8 view of SRAM [addr, addr + nbytes), bounds-checked."""
        if addr + nbytes > self._sram.size:
            raise self._err(i, cmd, f"sram range {addr:#x}-{addr + nbytes:#x} ({what}) outside "
                                    f"SRAM (size {self._sram.size})")
        return self._sram.arr[addr:addr + nbytes]

    def _sram_box(self, i: int, cmd: Command, what: str, addr: int, shape: tuple,
                  px_stride: int, row_stride: int, dtype=np.int8,
                  write: bool = False) -> np.ndarray:
        """[h, w, c] view of a strided SRAM operand (strides in bytes, 0 = packed, see
        :func:`~tcc_compiler.isa.commands.box_strides`), bounds-checked: writable for int8
        and packed operands; a strided multi-byte operand is a copy when read, a
        :class:`ByteBox` when ``write``."""
        h, w, c = shape
        eb = np.dtype(dtype).itemsize
        if not (px_stride or row_stride):
            return self._sram_tensor(i, cmd, what, addr, shape, dtype)
        try:
            px, row = box_strides(w, c * eb, px_stride, row_stride)
        except ExecutionError as exc:
            raise self._err(i, cmd, f"{what}: {exc}") from None
        end = addr + (h - 1) * row + (w - 1) * px + c * eb if h and w and c else addr
        self._sram_view(i, cmd, what, addr, end - addr)
        if eb == 1:   # an ndarray over the SRAM's buffer: a few times cheaper than as_strided
            return np.ndarray((h, w, c), dtype, self._sram.buf, addr, (row, px, 1))
        raw = np.ndarray((h, w, c * eb), np.uint8, self._sram.buf, addr, (row, px, 1))
        if not write:
            return np.ascontiguousarray(raw).view(np.dtype(dtype).newbyteorder("<"))
        return ByteBox(raw, dtype)

    def _sram_tensor(self, i, cmd, what, addr, shape, dtype=np.int8) -> np.ndarray:
        dt = _LE[dtype] if dtype in _LE else np.dtype(dtype).newbyteorder("<")
        n = math.prod(shape) * dt.itemsize
        if addr + n > self._sram.size:
            self._sram_view(i, cmd, what, addr, n)   # raises, naming the range
        return np.ndarray(shape, dt, self._sram.buf, addr)
