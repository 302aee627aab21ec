"""Encode and decode NPU commands, driven entirely by the table in :mod:`tcc_compiler.isa.spec`.

Encoding range-checks every field (a value that does not fit is a compiler bug ->
:class:`InternalError` naming the command index and field). Decoding never trusts its input:
unknown opcode, wrong length, truncation, non-zero reserved bits or padding ->
:class:`FormatError` naming the command index and byte offset.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from tcc_compiler.errors import FormatError, InternalError
from tcc_compiler.isa import spec
from tcc_compiler.isa.commands import COMMAND_CLASSES, Command

_HEADER = struct.Struct("<I")
_PAYLOAD = {c.opcode: struct.Struct(c.struct_format) for c in spec.COMMANDS}
_WAIT_NAMES = ("wait_load", "wait_compute", "wait_store")
_WAIT_SHIFTS = (16, 19, 22)


def _check_int(index: int, name: str, fname: str, value, lo: int, hi: int, tname: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InternalError(f"command {index} ({name}): field {fname} = {value!r} is not an int")
    if not lo <= value <= hi:
        raise InternalError(f"command {index} ({name}): field {fname} = {value} outside "
                            f"{tname} range {lo}..{hi}")


def encode_command(cmd: Command, index: int = 0) -> bytes:
    """Encode one command to ``4 * length_words`` little-endian bytes.

    Args:
        cmd: the command.
        index: its position in the stream (only used in error messages).

    Raises:
        InternalError: a field (or wait field, 0..7) is not an int or does not fit its type.
    """
    cs = cmd.SPEC
    word = cs.opcode | (cs.length_words << 8)
    for wname, sh in zip(_WAIT_NAMES, _WAIT_SHIFTS):
        w = getattr(cmd, wname)
        _check_int(index, cs.name, wname, w, 0, spec.WAIT_NONE, "u3")
        word |= w << sh
    values = cmd.field_values()
    for f, v in zip(cs.fields, values):
        _check_int(index, cs.name, f.name, v, f.type.min, f.type.max, f.type.name)
    return _HEADER.pack(word) + _PAYLOAD[cs.opcode].pack(*values)


def encode_commands(cmds: Iterable[Command]) -> bytes:
    """Encode a command stream (concatenated commands; the caller supplies the final END).

    Raises:
        InternalError: a field does not fit (message names the command index and field).
    """
    return b"".join(encode_command(c, i) for i, c in enumerate(cmds))


def decode_command(data: bytes, offset: int, index: int, path: str = "command stream"
                   ) -> tuple[Command, int]:
    """Decode the command starting at byte ``offset`` of ``data``.

    Args:
        data: the stream bytes. offset: byte offset of the command (multiple of 4).
        index: command index (for error messages). path: file name for error messages.

    Returns:
        (command, offset of the next command).

    Raises:
        FormatError: truncated header/payload, unknown opcode, wrong length, reserved header
            bits or padding bytes not zero.
    """
    where = f"{path}: command {index} at byte {offset:#x}"
    if offset % 4:
        raise FormatError(f"{where}: not 4-byte aligned")
    if offset + 4 > len(data):
        raise FormatError(f"{where}: truncated header ({len(data) - offset} bytes left)")
    (word,) = _HEADER.unpack_from(data, offset)
    opcode, length = word & 0xFF, (word >> 8) & 0xFF
    cs = spec.BY_OPCODE.get(opcode)
    if cs is None:
        raise FormatError(f"{where}: unknown opcode {opcode:#04x}")
    if length != cs.length_words:
        raise FormatError(f"{where} ({cs.name}): length {length} words, expected "
                          f"{cs.length_words}")
    if word >> 25:
        raise FormatError(f"{where} ({cs.name}): reserved header bits 25-31 not zero")
    end = offset + cs.length_bytes
    if end > len(data):
        raise FormatError(f"{where} ({cs.name}): truncated, needs {cs.length_bytes} bytes, "
                          f"{len(data) - offset} left")
    for a, b in cs.pad_ranges:
        if any(data[offset + a:offset + b]):
            raise FormatError(f"{where} ({cs.name}): reserved padding bytes {a}..{b - 1} "
                              "not zero")
    values = _PAYLOAD[opcode].unpack_from(data, offset + 4)
    waits = {n: (word >> sh) & 7 for n, sh in zip(_WAIT_NAMES, _WAIT_SHIFTS)}
    cmd = COMMAND_CLASSES[opcode](*values, **waits)
    return cmd, end


def decode_commands(data: bytes, path: str = "command stream") -> list[Command]:
    """Decode a whole command stream (``data`` holds exactly the stream).

    Does not check END placement; see :func:`check_end`.

    Raises:
        FormatError: any command fails to decode (see :func:`decode_command`).
    """
    out, pos = [], 0
    while pos < len(data):
        cmd, pos = decode_command(data, pos, len(out), path)
        out.append(cmd)
    return out


def command_offsets(cmds: Iterable[Command]) -> list[int]:
    """Byte offset of each command in the encoded stream."""
    out, pos = [], 0
    for c in cmds:
        out.append(pos)
        pos += c.SPEC.length_bytes
    return out


def stream_bytes(cmds: Iterable[Command]) -> int:
    """Encoded size of a command stream in bytes."""
    return sum(c.SPEC.length_bytes for c in cmds)


def end_problem(cmds: list[Command]) -> str | None:
    """Why ``cmds`` is not a well-terminated program (exactly one END, last), or None if it is."""
    ends = [i for i, c in enumerate(cmds) if c.opcode == spec.END.opcode]
    if not ends:
        return "command stream does not end with END"
    if ends[0] != len(cmds) - 1:
        return f"command {ends[0]} is END but is not the last command"
    return None
