"""The commands that move data or synchronise: DMA_LOAD, DMA_STORE, DMA_LOAD_Z (queues LOAD and
STORE), SEM_SIGNAL, SEM_WAIT (cross-core semaphores) and END. Imported through
:mod:`tcc_compiler.isa.commands`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from tcc_compiler.isa import spec
from tcc_compiler.isa.access import Access, Space, strided
from tcc_compiler.isa.cmd_base import Command
from tcc_compiler.isa.spec import CommandSpec

if TYPE_CHECKING:
    from tcc_compiler.isa.commands import Registers


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
