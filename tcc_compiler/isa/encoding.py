"""The command encoding's building blocks (format 3, specs/isa.md "Encoding"): the scalar field
types, the queues a command is dispatched to and their wait values, the control byte and wait
word bit fields, the 2-bit field codes of the register history and the longest zigzag LEB128
delta. :mod:`tcc_compiler.isa.spec` builds the command table from them and re-exports every name.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


@dataclass(frozen=True)
class FieldType:
    """A scalar field type of the command encoding.

    Attributes:
        name: spelling in the table and the docs ("u8", "i32", ...).
        size_bytes: width in bytes (also its alignment).
        signed: two's complement if True, unsigned otherwise.
        struct_char: the :mod:`struct` format character (little-endian is set by the caller).
    """

    name: str
    size_bytes: int
    signed: bool
    struct_char: str

    @property
    def min(self) -> int:
        """Smallest representable value."""
        return -(1 << (8 * self.size_bytes - 1)) if self.signed else 0

    @property
    def max(self) -> int:
        """Largest representable value."""
        bits = 8 * self.size_bytes - (1 if self.signed else 0)
        return (1 << bits) - 1


U8 = FieldType("u8", 1, False, "B")
I8 = FieldType("i8", 1, True, "b")
U16 = FieldType("u16", 2, False, "H")
I16 = FieldType("i16", 2, True, "h")
U32 = FieldType("u32", 4, False, "I")
I32 = FieldType("i32", 4, True, "i")


class Queue(enum.IntEnum):
    """Execution queue a command is dispatched to. LOAD/COMPUTE/STORE run concurrently."""

    LOAD = 0      # DMA DRAM -> SRAM
    COMPUTE = 1   # MAC array and vector unit
    STORE = 2     # DMA SRAM -> DRAM
    CONTROL = 3   # END: handled by the command parser itself


#: The queues that carry wait fields, in header order (wait_load, wait_compute, wait_store).
WAIT_QUEUES = (Queue.LOAD, Queue.COMPUTE, Queue.STORE)
#: Wait field value meaning "do not wait on this queue".
WAIT_NONE = 7
#: Largest meaningful wait value ("at most 6 commands outstanding").
WAIT_MAX = 6


def varint_max_bytes(t: FieldType) -> int:
    """Longest zigzag LEB128 encoding of a delta between two values of type ``t``.

    The delta lies in [min - max, max - min], i.e. needs ``8 * size + 1`` bits signed; zigzag
    maps it to an unsigned value of that many bits, 7 bits per LEB128 byte.
    """
    return (8 * t.size_bytes + 1 + 6) // 7


#: Control byte bit fields (byte 0 of every command): (name, first bit, width in bits, doc).
CONTROL_BITS: tuple[tuple[str, int, int, str], ...] = (
    ("opcode", 0, 4, "command opcode (1..15)"),
    ("slot", 4, 2, "history slot 0..3: which register history of this opcode the fields "
                   "are coded against (e.g. one per DMA stream: input, weights, params)"),
    ("W", 6, 1, "1 = a 16-bit wait word follows; 0 = reuse the slot's last waits "
                "(initially 7, 7, 7)"),
    ("F", 7, 1, "1 = field codes follow; 0 = reuse the slot's last codes (initially all KEEP)"),
)
#: Wait word bit fields (u16 little-endian, present when W = 1).
WAIT_WORD_BITS: tuple[tuple[str, int, int, str], ...] = (
    ("wait_load", 0, 3, "wait until LOAD has <= n outstanding earlier commands; 7 = no wait"),
    ("wait_compute", 3, 3, "same for the COMPUTE queue"),
    ("wait_store", 6, 3, "same for the STORE queue"),
    ("reserved", 9, 7, "reserved, 0"),
)
#: History slots per opcode.
N_SLOTS = 4


class FieldCode(enum.IntEnum):
    """How a field's value follows from the slot's history (prev = last value, prev2 = the one
    before; both start at 0). Codes are 2 bits per field, field i at bits 2i..2i+1, LSB first."""

    KEEP = 0       # value = prev
    STEP = 1       # value = prev + (prev - prev2): continue a constant stride
    SWAP = 2       # value = prev2: ping-pong between two buffers
    EXPLICIT = 3   # value = prev + delta, delta a zigzag LEB128 varint that follows
