"""The base of every NPU command class (:mod:`tcc_compiler.isa.commands` lists them all): the
header wait fields, the link to the spec table row, and the element size of a ``wide`` operand.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from tcc_compiler.isa import spec
from tcc_compiler.isa.access import Access
from tcc_compiler.isa.spec import CommandSpec, Queue

if TYPE_CHECKING:
    from tcc_compiler.isa.commands import Registers


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


def elem_size(wide: int, bit: int) -> int:
    """Bytes per element of the operand whose ``wide`` bit is ``bit``: 2 (int16) or 1."""
    return 2 if wide & bit else 1
