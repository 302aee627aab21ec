"""The COMPUTE queue's commands: layer configuration (CONV_CFG, POOL_CFG, ADD_CFG) and the
tile commands (CONV_TILE, POOL_TILE, ADD_TILE, LUT_TILE, EW_TILE, RESIZE_TILE), each listing the
SRAM bytes it reads and writes given the layer registers. Imported through
:mod:`tcc_compiler.isa.commands`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from tcc_compiler.errors import ExecutionError
from tcc_compiler.isa import spec
from tcc_compiler.isa.access import Access, Space, box_accesses
from tcc_compiler.isa.cmd_base import Command, elem_size
from tcc_compiler.isa.spec import CommandSpec

if TYPE_CHECKING:
    from tcc_compiler.isa.commands import Registers


@dataclass(frozen=True)
class ConvCfg(Command):
    """CONV_CFG: conv layer registers (kernel, strides, dilations, output mode, zero points)."""

    SPEC: ClassVar[CommandSpec] = spec.CONV_CFG

    kh: int
    kw: int
    sh: int
    sw: int
    dh: int
    dw: int
    out_mode: int
    flags: int
    group: int
    cin_g: int
    zp_in: int
    zp_out: int
    zp_sc: int
    act_lo: int
    act_hi: int
    lut_sram: int = 0

    @property
    def wide(self) -> int:
        """The element-width bits (spec.WIDE_*) held in flags bits 4-6."""
        return (self.flags >> spec.CONV_FLAG_WIDE_SHIFT) & spec.WIDE_MASK

    @property
    def has_shortcut(self) -> bool:
        """True if flags bit0 (fused residual add) is set."""
        return bool(self.flags & spec.CONV_FLAG_SHORTCUT)

    @property
    def has_lut(self) -> bool:
        """True if flags bit3 (LUT epilogue) is set."""
        return bool(self.flags & spec.CONV_FLAG_LUT)

    @property
    def in_bytes(self) -> int:
        """Bytes per input element: 2 if flags bit4 (int16), else 1."""
        return elem_size(self.wide, spec.WIDE_IN)

    @property
    def lut_bytes(self) -> int:
        """Bytes of the LUT epilogue's table at lut_sram: 256 int8 entries, or 257 int16 knots
        (514) with an int16 requantized value (flags bit5); 0 without flags bit3."""
        if not self.has_lut:
            return 0
        return 2 * spec.LUT_WIDE_KNOTS if self.requant_bytes == 2 else 256

    @property
    def requant_bytes(self) -> int:
        """Bytes per requantized element (the epilogue's clamp type): 2 if flags bit5, else 1
        (with a LUT epilogue, the table's input)."""
        return elem_size(self.wide, spec.WIDE_OUT)

    @property
    def lut16(self) -> bool:
        """True if out_mode bit3 (the LUT epilogue's interpolated output is int16) is set."""
        return bool(self.out_mode & spec.OUT_MODE_LUT16)

    @property
    def out_bytes(self) -> int:
        """Bytes per output element: 4 for out_mode bit0 (int32); with a LUT epilogue (flags
        bit3) 2 if out_mode bit3 (int16 table output) else 1 (the table maps an int16
        requantized value to int8 too); else 2 if flags bit5, else 1."""
        if self.out_mode & spec.OUT_MODE_INT32:
            return 4
        if self.has_lut:
            return 2 if self.lut16 else 1
        return self.requant_bytes

    @property
    def accumulate(self) -> bool:
        """True if out_mode bit1 (the tile adds the int32 partial sums at sc_sram) is set."""
        return bool(self.out_mode & spec.OUT_MODE_ACCUMULATE)

    @property
    def two_slope(self) -> bool:
        """True if out_mode bit2 (two-slope requantization: sc_mult below zero) is set."""
        return bool(self.out_mode & spec.OUT_MODE_TWO_SLOPE)

    @property
    def sc_bytes(self) -> int:
        """Bytes per shortcut element: 2 if flags bit6 (int16), else 1."""
        return elem_size(self.wide, spec.WIDE_B)

    @property
    def wide_weights(self) -> bool:
        """True if flags bit7 (int16 weights, 64-bit accumulator) is set."""
        return bool(self.flags & spec.CONV_FLAG_WIDE_W)

    @property
    def w_bytes(self) -> int:
        """Bytes per weight: 2 if flags bit7 (int16, little-endian), else 1."""
        return 2 if self.wide_weights else 1


@dataclass(frozen=True)
class ConvTile(Command):
    """CONV_TILE: convolve one NHWC tile in SRAM with the current CONV_CFG (queue COMPUTE)."""

    SPEC: ClassVar[CommandSpec] = spec.CONV_TILE

    in_sram: int
    w_sram: int
    p_sram: int
    out_sram: int
    sc_sram: int
    in_h: int
    in_w: int
    in_c: int
    oc: int
    out_h: int
    out_w: int
    pad_t: int
    pad_l: int
    pad_b: int
    pad_r: int
    in_px_stride: int = 0
    in_row_stride: int = 0
    out_px_stride: int = 0
    out_row_stride: int = 0
    sc_px_stride: int = 0
    sc_row_stride: int = 0

    @property
    def pads(self) -> tuple[int, int, int, int]:
        """(top, left, bottom, right)."""
        return (self.pad_t, self.pad_l, self.pad_b, self.pad_r)

    def accesses(self, regs: Registers) -> list[Access]:
        """Input, weights, params (and shortcut) read; output written; all in SRAM, strided
        operands as their exact runs."""
        cfg = regs.conv
        if cfg is None:
            raise ExecutionError("CONV_TILE without a preceding CONV_CFG")
        elem = cfg.out_bytes
        out = box_accesses(self.in_sram, self.in_h, self.in_w, self.in_c * cfg.in_bytes,
                           self.in_px_stride, self.in_row_stride, False)
        out += [
            Access(Space.SRAM, self.w_sram,
                   self.w_sram + self.oc * cfg.kh * cfg.kw * cfg.cin_g * cfg.w_bytes, False),
            Access(Space.SRAM, self.p_sram, self.p_sram + self.oc * spec.PARAM_RECORD_BYTES,
                   False),
        ]
        if cfg.has_shortcut and cfg.out_mode == spec.OUT_MODE_INT8:
            out += box_accesses(self.sc_sram, self.out_h, self.out_w, self.oc * cfg.sc_bytes,
                                self.sc_px_stride, self.sc_row_stride, False)
        elif cfg.accumulate:   # the int32 partial sums
            out += box_accesses(self.sc_sram, self.out_h, self.out_w, self.oc * 4,
                                self.sc_px_stride, self.sc_row_stride, False)
        if cfg.has_lut:
            out.append(Access(Space.SRAM, cfg.lut_sram, cfg.lut_sram + cfg.lut_bytes, False))
        out += box_accesses(self.out_sram, self.out_h, self.out_w, self.oc * elem,
                            self.out_px_stride, self.out_row_stride, True)
        return out


@dataclass(frozen=True)
class PoolCfg(Command):
    """POOL_CFG: pooling registers (kind, window, strides, avg requantization)."""

    SPEC: ClassVar[CommandSpec] = spec.POOL_CFG

    kind: int
    kh: int
    kw: int
    sh: int
    sw: int
    zp_in: int
    zp_out: int
    shift: int
    mult: int
    wide: int = 0

    @property
    def elem_bytes(self) -> int:
        """Bytes per element of the input and output: 2 if wide bit0 (int16), else 1."""
        return elem_size(self.wide, spec.WIDE_IN)


@dataclass(frozen=True)
class PoolTile(Command):
    """POOL_TILE: pool one NHWC int8 tile in SRAM with the current POOL_CFG (queue COMPUTE)."""

    SPEC: ClassVar[CommandSpec] = spec.POOL_TILE

    in_sram: int
    out_sram: int
    in_h: int
    in_w: int
    c: int
    out_h: int
    out_w: int
    pad_t: int
    pad_l: int
    pad_b: int
    pad_r: int
    in_px_stride: int = 0
    in_row_stride: int = 0
    out_px_stride: int = 0
    out_row_stride: int = 0

    @property
    def pads(self) -> tuple[int, int, int, int]:
        """(top, left, bottom, right)."""
        return (self.pad_t, self.pad_l, self.pad_b, self.pad_r)

    def accesses(self, regs: Registers) -> list[Access]:
        """Input tile read, output tile written (SRAM, strided operands as exact runs)."""
        if regs.pool is None:
            raise ExecutionError("POOL_TILE without a preceding POOL_CFG")
        eb = regs.pool.elem_bytes
        return (box_accesses(self.in_sram, self.in_h, self.in_w, self.c * eb,
                             self.in_px_stride, self.in_row_stride, False)
                + box_accesses(self.out_sram, self.out_h, self.out_w, self.c * eb,
                               self.out_px_stride, self.out_row_stride, True))


@dataclass(frozen=True)
class AddCfg(Command):
    """ADD_CFG: element-wise add registers (zero points, clamp, multipliers, shared shift)."""

    SPEC: ClassVar[CommandSpec] = spec.ADD_CFG

    zp_a: int
    zp_b: int
    zp_out: int
    act_lo: int
    act_hi: int
    shift: int
    mult_a: int
    mult_b: int


@dataclass(frozen=True)
class AddTile(Command):
    """ADD_TILE: add n int8 elements at a_sram and b_sram into out_sram (queue COMPUTE)."""

    SPEC: ClassVar[CommandSpec] = spec.ADD_TILE

    a_sram: int
    b_sram: int
    out_sram: int
    n: int

    def accesses(self, regs: Registers) -> list[Access]:
        """a and b read, out written (n bytes each, SRAM)."""
        if regs.add is None:
            raise ExecutionError("ADD_TILE without a preceding ADD_CFG")
        return [Access(Space.SRAM, self.a_sram, self.a_sram + self.n, False),
                Access(Space.SRAM, self.b_sram, self.b_sram + self.n, False),
                Access(Space.SRAM, self.out_sram, self.out_sram + self.n, True)]


@dataclass(frozen=True)
class LutTile(Command):
    """LUT_TILE: table lookup of n int8 elements, or a softmax over runs of ``group`` of them
    (queue COMPUTE); needs no configuration."""

    SPEC: ClassVar[CommandSpec] = spec.LUT_TILE

    in_sram: int
    out_sram: int
    lut_sram: int
    n: int
    tables: int
    ch0: int
    group: int = 0

    @property
    def table_bytes(self) -> int:
        """Bytes of the tables read: 256 int8 entries per table, or one table of 256 u16
        exp entries in softmax mode (``group`` > 0)."""
        return 2 * 256 if self.group else 256 * self.tables

    def accesses(self, regs: Registers) -> list[Access]:
        """Input and tables read, output written (SRAM)."""
        return [Access(Space.SRAM, self.in_sram, self.in_sram + self.n, False),
                Access(Space.SRAM, self.lut_sram, self.lut_sram + self.table_bytes, False),
                Access(Space.SRAM, self.out_sram, self.out_sram + self.n, True)]


@dataclass(frozen=True)
class EwTile(Command):
    """EW_TILE: element-wise add/sub/mul of n int8 elements, b optionally a per-channel vector
    broadcast along a (queue COMPUTE); carries its own parameters (no configuration)."""

    SPEC: ClassVar[CommandSpec] = spec.EW_TILE

    kind: int
    zp_a: int
    zp_b: int
    zp_out: int
    act_lo: int
    act_hi: int
    shift: int
    mult_a: int
    mult_b: int
    a_sram: int
    b_sram: int
    out_sram: int
    n: int
    b_period: int
    b0: int
    wide: int = 0

    def elem_bytes(self) -> tuple[int, int, int]:
        """Bytes per element of (a, b, out): 2 where the wide bit is set (int16), else 1."""
        return (elem_size(self.wide, spec.WIDE_IN), elem_size(self.wide, spec.WIDE_B),
                elem_size(self.wide, spec.WIDE_OUT))

    def accesses(self, regs: Registers) -> list[Access]:
        """a and b read, out written (SRAM)."""
        nb = self.b_period or self.n
        ea, eb, eo = self.elem_bytes()
        return [Access(Space.SRAM, self.a_sram, self.a_sram + self.n * ea, False),
                Access(Space.SRAM, self.b_sram, self.b_sram + nb * eb, False),
                Access(Space.SRAM, self.out_sram, self.out_sram + self.n * eo, True)]


@dataclass(frozen=True)
class ResizeTile(Command):
    """RESIZE_TILE: bilinear upsampling of a band of whole int8 rows (queue COMPUTE); carries
    its own parameters (no configuration)."""

    SPEC: ClassVar[CommandSpec] = spec.RESIZE_TILE

    in_sram: int
    out_sram: int
    in_h: int
    in_w: int
    c: int
    out_h: int
    full_h: int
    in_y0: int
    out_y0: int
    fh: int
    fw: int
    mode: int

    @property
    def in_bytes(self) -> int:
        """Bytes of the input band (int8 [in_h, in_w, c])."""
        return self.in_h * self.in_w * self.c

    @property
    def out_bytes(self) -> int:
        """Bytes of the output tile (int8 [out_h, in_w * fw, c])."""
        return self.out_h * self.in_w * self.fw * self.c

    def accesses(self, regs: Registers) -> list[Access]:
        """Input band read, output tile written (SRAM, packed)."""
        return [Access(Space.SRAM, self.in_sram, self.in_sram + self.in_bytes, False),
                Access(Space.SRAM, self.out_sram, self.out_sram + self.out_bytes, True)]
