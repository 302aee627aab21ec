"""The hardware-boundary data model: one frozen dataclass per NPU command.

The scheduler builds these, the codec turns them into bytes (:mod:`tcc_compiler.isa.codec`) and
back, and the reference executor runs them. Field names, order and widths come from the table in
:mod:`tcc_compiler.isa.spec`; this module is checked against it at import time.

Every command also carries the three header wait fields (``wait_load``, ``wait_compute``,
``wait_store``; keyword-only, default 7 = no wait) and can list the memory it touches with
``accesses(regs)`` (:mod:`tcc_compiler.isa.access`: exact byte ranges and strided patterns),
so a hazard checker can reason about concurrent queues.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import ClassVar

from tcc_compiler.errors import ExecutionError, InternalError
from tcc_compiler.isa import spec
from tcc_compiler.isa.access import Access, Space, box_accesses, strided
from tcc_compiler.isa.access import box_strides  # noqa: F401 (the executor imports it here)
from tcc_compiler.isa.spec import CommandSpec, Queue


@dataclass(frozen=True, kw_only=True)
class Command:
    """Base of all commands: the header wait fields and the link to the spec table.

    Attributes:
        wait_load, wait_compute, wait_store: 0..6 = wait until that queue has at most n
            commands outstanding among those dispatched before this one; 7 = no wait.
    """

    SPEC: ClassVar[CommandSpec]

    wait_load: int = spec.WAIT_NONE
    wait_compute: int = spec.WAIT_NONE
    wait_store: int = spec.WAIT_NONE

    @property
    def name(self) -> str:
        """Mnemonic, e.g. "CONV_TILE"."""
        return self.SPEC.name

    @property
    def opcode(self) -> int:
        """Opcode (header bits 0-7)."""
        return self.SPEC.opcode

    @property
    def queue(self) -> Queue:
        """Queue the command is dispatched to."""
        return self.SPEC.queue

    @property
    def waits(self) -> tuple[int, int, int]:
        """(wait_load, wait_compute, wait_store)."""
        return (self.wait_load, self.wait_compute, self.wait_store)

    def field_values(self) -> tuple[int, ...]:
        """Payload field values in spec packing order (header waits excluded)."""
        return tuple(getattr(self, n) for n in self.SPEC.field_names)

    def accesses(self, regs: "Registers") -> list[Access]:
        """Byte ranges this command reads and writes, given the layer registers before it.

        Configuration commands and END touch no memory (they write layer registers, which the
        in-order COMPUTE queue orders by itself).

        Raises:
            ExecutionError: a tile command has no configuration in ``regs``.
        """
        return []


@dataclass
class Registers:
    """Layer registers of the COMPUTE queue: the last CONV_CFG, POOL_CFG and ADD_CFG seen."""

    conv: "ConvCfg | None" = None
    pool: "PoolCfg | None" = None
    add: "AddCfg | None" = None

    def update(self, cmd: Command) -> None:
        """Apply ``cmd`` if it is a configuration command (else do nothing)."""
        if isinstance(cmd, ConvCfg):
            self.conv = cmd
        elif isinstance(cmd, PoolCfg):
            self.pool = cmd
        elif isinstance(cmd, AddCfg):
            self.add = cmd


def elem_size(wide: int, bit: int) -> int:
    """Bytes per element of the operand whose ``wide`` bit is ``bit``: 2 (int16) or 1."""
    return 2 if wide & bit else 1


@dataclass(frozen=True)
class _Dma(Command):
    """Common part of DMA_LOAD and DMA_STORE (see :data:`spec.DMA_LOAD` for the semantics)."""

    dram: int
    sram: int
    run_bytes: int
    n1: int
    n2: int
    dram_stride1: int
    dram_stride2: int
    sram_stride1: int
    sram_stride2: int

    @property
    def total_bytes(self) -> int:
        """Bytes moved: run_bytes * n1 * n2."""
        return self.run_bytes * self.n1 * self.n2

    def _sides(self, dram_write: bool) -> list[Access]:
        """The DRAM pattern and the SRAM pattern, each one exact :class:`Access`."""
        region, off = spec.split_dram_address(self.dram)
        return (strided(Space.of_region(region), off, self.run_bytes, self.n1,
                        self.dram_stride1, self.n2, self.dram_stride2, dram_write)
                + strided(Space.SRAM, self.sram, self.run_bytes, self.n1, self.sram_stride1,
                          self.n2, self.sram_stride2, not dram_write))


@dataclass(frozen=True)
class DmaLoad(_Dma):
    """DMA_LOAD: copy DRAM -> SRAM (queue LOAD). Addresses: DRAM u32 region|offset, SRAM bytes."""

    SPEC: ClassVar[CommandSpec] = spec.DMA_LOAD

    def accesses(self, regs: Registers) -> list[Access]:
        """DRAM runs read, SRAM runs written (each side one exact strided access)."""
        return self._sides(dram_write=False)


@dataclass(frozen=True)
class DmaStore(_Dma):
    """DMA_STORE: copy SRAM -> DRAM (queue STORE). Addresses: DRAM u32 region|offset, SRAM bytes."""

    SPEC: ClassVar[CommandSpec] = spec.DMA_STORE

    def accesses(self, regs: Registers) -> list[Access]:
        """SRAM runs read, DRAM runs written (each side one exact strided access)."""
        return self._sides(dram_write=True)


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
    def out_bytes(self) -> int:
        """Bytes per output element: 4 for out_mode bit0 (int32), 2 if flags bit5, else 1."""
        if self.out_mode & spec.OUT_MODE_INT32:
            return 4
        return elem_size(self.wide, spec.WIDE_OUT)

    @property
    def accumulate(self) -> bool:
        """True if out_mode bit1 (the tile adds the int32 partial sums at sc_sram) is set."""
        return bool(self.out_mode & spec.OUT_MODE_ACCUMULATE)

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
            out.append(Access(Space.SRAM, cfg.lut_sram, cfg.lut_sram + 256, False))
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


@dataclass(frozen=True)
class End(Command):
    """END: end of program; waits for all queues to drain. Must be the last command."""

    SPEC: ClassVar[CommandSpec] = spec.END


@dataclass(frozen=True)
class DmaLoadZ(Command):
    """DMA_LOAD_Z: expand one raw DEFLATE block from WEIGHTS into SRAM (queue LOAD).

    Reads WEIGHTS ``[dram offset, + src_bytes)``, writes SRAM ``[sram, sram + dst_bytes)``.
    """

    SPEC: ClassVar[CommandSpec] = spec.DMA_LOAD_Z

    dram: int
    sram: int
    src_bytes: int
    dst_bytes: int

    @property
    def total_bytes(self) -> int:
        """Bytes read from DRAM (the compressed size)."""
        return self.src_bytes

    def accesses(self, regs: Registers) -> list[Access]:
        """The compressed DRAM bytes read, the SRAM bytes written."""
        region, off = spec.split_dram_address(self.dram)
        out = []
        if self.src_bytes:
            out.append(Access(Space.of_region(region), off, off + self.src_bytes, False))
        if self.dst_bytes:
            out.append(Access(Space.SRAM, self.sram, self.sram + self.dst_bytes, True))
        return out


@dataclass(frozen=True)
class SemSignal(Command):
    """SEM_SIGNAL: add 1 to cross-core semaphore ``sem`` (queue STORE, after the core's earlier
    stores). Touches no SRAM or DRAM byte."""

    SPEC: ClassVar[CommandSpec] = spec.SEM_SIGNAL

    sem: int


@dataclass(frozen=True)
class SemWait(Command):
    """SEM_WAIT: hold the core's LOAD queue until semaphore ``sem`` has reached ``count``.
    Touches no SRAM or DRAM byte."""

    SPEC: ClassVar[CommandSpec] = spec.SEM_WAIT

    sem: int
    count: int


#: opcode -> command class.
COMMAND_CLASSES: dict[int, type[Command]] = {
    c.SPEC.opcode: c for c in (DmaLoad, DmaStore, ConvCfg, ConvTile, PoolCfg, PoolTile, AddCfg,
                               AddTile, DmaLoadZ, SemSignal, SemWait, LutTile, EwTile,
                               ResizeTile, End)
}
_WAIT_NAMES = ("wait_load", "wait_compute", "wait_store")


def _check_against_spec() -> None:
    """Fail at import if a dataclass and the spec table disagree (spec/code drift)."""
    if set(COMMAND_CLASSES) != set(spec.BY_OPCODE):
        raise InternalError("isa: command classes and spec table list different opcodes")
    for op, cls in COMMAND_CLASSES.items():
        names = tuple(f.name for f in fields(cls) if f.name not in _WAIT_NAMES)
        if names != spec.BY_OPCODE[op].field_names:
            raise InternalError(f"isa: {cls.__name__} fields {names} differ from spec table "
                                f"{spec.BY_OPCODE[op].field_names}")


_check_against_spec()
