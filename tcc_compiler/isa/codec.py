"""Encode and decode NPU command streams, driven entirely by the table in
:mod:`tcc_compiler.isa.spec` (format 2, the register-history encoding of specs/isa.md).

Each command is coded against the history of one (opcode, slot) pair: the last two values of
every field, the last field codes and the last waits. A field equal to its last value (KEEP),
continuing its stride (STEP) or returning to the value before (SWAP) costs no payload bytes;
anything else is an explicit zigzag LEB128 delta. The encoder picks, per command, the slot that
gives the shortest encoding (ties to the lowest slot), or the slot the caller asks for.

Encoding range-checks every field against its table type (a value that does not fit is a
compiler bug -> :class:`InternalError` naming the command index and field). Decoding never
trusts its input: unknown opcode, truncation, non-zero reserved bits, over-long or non-canonical
varints, or a value outside its field type -> :class:`FormatError` naming the command index and
byte offset.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from tcc_compiler.errors import FormatError, InternalError
from tcc_compiler.isa import spec
from tcc_compiler.isa.commands import COMMAND_CLASSES, Command
from tcc_compiler.isa.spec import FieldCode

_W_BIT = 0x40
_F_BIT = 0x80
_NO_WAITS = (spec.WAIT_NONE,) * 3


@dataclass
class _History:
    """Register history of one (opcode, slot): last two field values, codes and waits."""

    prev: list[int]
    prev2: list[int]
    codes: list[int]
    waits: tuple[int, int, int] = _NO_WAITS

    @classmethod
    def fresh(cls, n: int) -> "_History":
        return cls([0] * n, [0] * n, [int(FieldCode.KEEP)] * n)

    def push(self, values: Sequence[int], codes: list[int], waits: tuple[int, int, int]):
        self.prev2, self.prev = self.prev, list(values)
        self.codes, self.waits = codes, waits


@dataclass
class _State:
    """Parser state: one :class:`_History` per (opcode, slot), created on first use."""

    slots: dict[tuple[int, int], _History] = field(default_factory=dict)

    def get(self, cs: spec.CommandSpec, slot: int) -> _History:
        key = (cs.opcode, slot)
        h = self.slots.get(key)
        if h is None:
            h = self.slots[key] = _History.fresh(len(cs.fields))
        return h


def _zigzag(v: int) -> int:
    return 2 * v if v >= 0 else -2 * v - 1


def _unzigzag(u: int) -> int:
    return u >> 1 if not u & 1 else -((u + 1) >> 1)


def _varint(u: int) -> bytes:
    out = bytearray()
    while True:
        b = u & 0x7F
        u >>= 7
        if u:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _varint_len(u: int) -> int:
    return max(1, (u.bit_length() + 6) // 7)


def _check_int(index: int, name: str, fname: str, value, lo: int, hi: int, tname: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InternalError(f"command {index} ({name}): field {fname} = {value!r} is not an int")
    if not lo <= value <= hi:
        raise InternalError(f"command {index} ({name}): field {fname} = {value} outside "
                            f"{tname} range {lo}..{hi}")


def _codes_for(values: Sequence[int], h: _History) -> list[int]:
    """Field codes for ``values``: the slot's last codes if they still predict every value
    with no more delta bytes than new codes would, else per field the slot's last code if it
    predicts without a delta, else the first of KEEP, STEP, SWAP, EXPLICIT that does."""
    fresh, reuse_ok, reuse_extra, fresh_extra = [], True, 0, 0
    for v, p, p2, last in zip(values, h.prev, h.prev2, h.codes):
        ok = (v == p, v == 2 * p - p2, v == p2)
        if last == FieldCode.EXPLICIT:
            reuse_extra += _varint_len(_zigzag(v - p))
        elif not ok[last]:
            reuse_ok = False
        if last != FieldCode.EXPLICIT and ok[last]:
            fresh.append(last)
        elif any(ok):
            fresh.append(ok.index(True))
        else:
            fresh.append(int(FieldCode.EXPLICIT))
            fresh_extra += _varint_len(_zigzag(v - p))
    # Reuse the old codes only when they cost no more payload than new ones: paying the code
    # bytes once is cheaper than a delta on every later command of a loop.
    if reuse_ok and fresh != h.codes and reuse_extra <= fresh_extra:
        return list(h.codes)
    return fresh


def _encode_with(cs: spec.CommandSpec, values: Sequence[int], waits: tuple[int, int, int],
                 slot: int, h: _History) -> tuple[bytes, list[int]]:
    codes = _codes_for(values, h)
    ctrl = cs.opcode | (slot << 4)
    out = bytearray(1)
    if waits != h.waits:
        ctrl |= _W_BIT
        w = waits[0] | (waits[1] << 3) | (waits[2] << 6)
        out += w.to_bytes(2, "little")
    if codes != h.codes:
        ctrl |= _F_BIT
        packed = 0
        for i, c in enumerate(codes):
            packed |= c << (2 * i)
        out += packed.to_bytes(cs.code_bytes, "little")
    for v, p, c in zip(values, h.prev, codes):
        if c == FieldCode.EXPLICIT:
            out += _varint(_zigzag(v - p))
    out[0] = ctrl
    return bytes(out), codes


class Encoder:
    """Stateful encoder of one command stream (the parser's histories mirrored)."""

    def __init__(self) -> None:
        self._state = _State()
        self.index = 0

    def encode(self, cmd: Command, slot: int | None = None) -> bytes:
        """Encode the next command; ``slot`` None = the slot giving the shortest bytes.

        Raises:
            InternalError: a field or wait is not an int or does not fit its type, or ``slot``
                is outside 0..3 (message names the command index and field).
        """
        cs = cmd.SPEC
        waits = cmd.waits
        for wname, w in zip(("wait_load", "wait_compute", "wait_store"), waits):
            _check_int(self.index, cs.name, wname, w, 0, spec.WAIT_NONE, "u3")
        values = cmd.field_values()
        for f, v in zip(cs.fields, values):
            _check_int(self.index, cs.name, f.name, v, f.type.min, f.type.max, f.type.name)
        if slot is not None and not 0 <= slot < spec.N_SLOTS:
            raise InternalError(f"command {self.index} ({cs.name}): slot {slot} outside 0..3")
        best = None
        for s in ([slot] if slot is not None else range(spec.N_SLOTS)):
            raw, codes = _encode_with(cs, values, waits, s, self._state.get(cs, s))
            if best is None or len(raw) < len(best[0]):
                best = (raw, codes, s)
        raw, codes, s = best
        self._state.get(cs, s).push(values, codes, waits)
        self.index += 1
        return raw


def encode_commands(cmds: Iterable[Command], slots: Sequence[int | None] | None = None
                    ) -> bytes:
    """Encode a command stream (the caller supplies the final END).

    Args:
        cmds: the commands in stream order.
        slots: optional history slot per command (None entries: the encoder chooses).

    Raises:
        InternalError: a field does not fit (message names the command index and field).
    """
    return encode_with_offsets(cmds, slots)[0]


def encode_with_offsets(cmds: Iterable[Command], slots: Sequence[int | None] | None = None
                        ) -> tuple[bytes, list[int]]:
    """Like :func:`encode_commands`, also returning the byte offset of every command."""
    enc = Encoder()
    out, offsets = bytearray(), []
    for i, c in enumerate(cmds):
        offsets.append(len(out))
        out += enc.encode(c, None if slots is None else slots[i])
    return bytes(out), offsets


def encode_command(cmd: Command, index: int = 0) -> bytes:
    """Encode one command as the first command of a stream (fresh histories).

    Raises:
        InternalError: a field does not fit its type.
    """
    enc = Encoder()
    enc.index = index
    return enc.encode(cmd)


class _Reader:
    def __init__(self, data: bytes, pos: int, where: str, name: str):
        self.data, self.pos, self.where, self.name = data, pos, where, name

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > len(self.data):
            raise FormatError(f"{self.where} ({self.name}): truncated {what} "
                              f"({len(self.data) - self.pos} bytes left, need {n})")
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def varint(self, max_bytes: int, fname: str) -> int:
        u, shift = 0, 0
        for k in range(max_bytes):
            (b,) = self.take(1, f"delta of field {fname}")
            u |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                if b == 0 and k > 0:
                    raise FormatError(f"{self.where} ({self.name}): non-canonical varint in "
                                      f"field {fname}")
                return u
        raise FormatError(f"{self.where} ({self.name}): varint of field {fname} longer than "
                          f"{max_bytes} bytes")


def decode_stream(data: bytes, path: str = "command stream", reset_after_end: bool = False
                  ) -> tuple[list[Command], list[int], list[int]]:
    """Decode a whole command stream (``data`` holds exactly the stream).

    Does not check END placement; see :func:`end_problem`. ``reset_after_end``: the register
    histories start afresh after every END (a multi-core file's per-core streams).

    Returns:
        (commands, byte offset of each command, history slot of each command).

    Raises:
        FormatError: unknown opcode, truncation, reserved bits set, bad varint, a field value
            outside its type (message names ``path``, the command index and byte offset).
    """
    state = _State()
    cmds: list[Command] = []
    offsets: list[int] = []
    slots: list[int] = []
    pos = 0
    while pos < len(data):
        index = len(cmds)
        where = f"{path}: command {index} at byte {pos:#x}"
        ctrl = data[pos]
        cs = spec.BY_OPCODE.get(ctrl & 0xF)
        if cs is None:
            raise FormatError(f"{where}: unknown opcode {ctrl & 0xF:#x}")
        slot = (ctrl >> 4) & 3
        h = state.get(cs, slot)
        rd = _Reader(data, pos + 1, where, cs.name)
        waits = h.waits
        if ctrl & _W_BIT:
            w = int.from_bytes(rd.take(2, "wait word"), "little")
            if w >> 9:
                raise FormatError(f"{where} ({cs.name}): reserved wait-word bits 9-15 not zero")
            waits = (w & 7, (w >> 3) & 7, (w >> 6) & 7)
        codes = h.codes
        if ctrl & _F_BIT:
            if not cs.fields:
                raise FormatError(f"{where} ({cs.name}): F flag set on a command without "
                                  "fields")
            packed = int.from_bytes(rd.take(cs.code_bytes, "field codes"), "little")
            if packed >> (2 * len(cs.fields)):
                raise FormatError(f"{where} ({cs.name}): reserved field-code bits not zero")
            codes = [(packed >> (2 * i)) & 3 for i in range(len(cs.fields))]
        values = []
        for f, p, p2, c in zip(cs.fields, h.prev, h.prev2, codes):
            if c == FieldCode.KEEP:
                v = p
            elif c == FieldCode.STEP:
                v = 2 * p - p2
            elif c == FieldCode.SWAP:
                v = p2
            else:
                v = p + _unzigzag(rd.varint(spec.varint_max_bytes(f.type), f.name))
            if not f.type.min <= v <= f.type.max:
                raise FormatError(f"{where} ({cs.name}): field {f.name} = {v} outside "
                                  f"{f.type.name} range")
            values.append(v)
        h.push(values, list(codes), waits)
        cmds.append(COMMAND_CLASSES[cs.opcode](*values, wait_load=waits[0],
                                               wait_compute=waits[1], wait_store=waits[2]))
        offsets.append(pos)
        slots.append(slot)
        pos = rd.pos
        if reset_after_end and cs.opcode == spec.END.opcode:
            state = _State()
    return cmds, offsets, slots


def decode_commands(data: bytes, path: str = "command stream") -> list[Command]:
    """The commands of a stream (see :func:`decode_stream`).

    Raises:
        FormatError: any command fails to decode.
    """
    return decode_stream(data, path)[0]


def command_offsets(cmds: Iterable[Command]) -> list[int]:
    """Byte offset of each command when ``cmds`` is encoded with encoder-chosen slots."""
    return encode_with_offsets(list(cmds))[1]


def stream_bytes(cmds: Iterable[Command]) -> int:
    """Encoded size of a command stream in bytes (encoder-chosen slots)."""
    return len(encode_commands(list(cmds)))


def end_problem(cmds: list[Command]) -> str | None:
    """Why ``cmds`` is not a well-terminated program (exactly one END, last), or None if it is."""
    ends = [i for i, c in enumerate(cmds) if c.opcode == spec.END.opcode]
    if not ends:
        return "command stream does not end with END"
    if ends[0] != len(cmds) - 1:
        return f"command {ends[0]} is END but is not the last command"
    return None
