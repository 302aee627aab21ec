"""``npu_cmd.bin``: the command stream container (specs/isa.md, "npu_cmd.bin").

Layout (little-endian): a 64-byte header (:data:`CMD_HEADER_FIELDS`), then the command stream
starting at ``header_bytes`` (64-byte aligned) and running to the end of the file.

This module also holds the helpers both containers share (header tables, header CRC, version and
tool-version checks); :mod:`tcc_compiler.binfmt.weightfile` imports them from here.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from tcc_compiler.errors import FormatError, InternalError
from tcc_compiler.isa import spec
from tcc_compiler.isa.codec import decode_stream, encode_commands, end_problem
from tcc_compiler.isa.commands import Command
from tcc_compiler.isa.disasm import disassemble

FORMAT_MAJOR = 3   # 3: strided tile operands, image-mode flag (specs/isa.md)
FORMAT_MINOR = 0
#: Minor version of a multi-core file (header field ``cores`` > 1; single-core files stay 3.0).
FORMAT_MINOR_CORES = 1
HEADER_BYTES = 64
SECTION_ALIGN = 64
TOOL_VERSION_BYTES = 16
CMD_MAGIC = b"TNPC"

#: A header field: (name, struct format, doc). Offsets follow from the order (no implicit padding).
HeaderField = tuple[str, str, str]

CMD_HEADER_FIELDS: tuple[HeaderField, ...] = (
    ("magic", "4s", 'b"TNPC"'),
    ("version_major", "H", "format major version (3); readers reject other majors"),
    ("version_minor", "H", "format minor version (0; 1 for a multi-core program); readers "
                          "accept any minor"),
    ("header_bytes", "I", "header size, a multiple of 64 (64); the stream starts here"),
    ("stream_bytes", "I", "command stream size in bytes; the file ends there"),
    ("n_commands", "I", "number of commands, END included (of all cores)"),
    ("stream_crc32", "I", "zlib.crc32 of the command stream"),
    ("sram_peak_bytes", "I", "SRAM the program uses at its peak (bytes); the target's "
                        "capacity must be at least this"),
    ("act_arena_bytes", "I", "size of DRAM region ACT (bytes, <= 2**30)"),
    ("input_bytes", "I", "size of DRAM region INPUT (bytes, <= 2**30)"),
    ("output_bytes", "I", "size of DRAM region OUTPUT (bytes, <= 2**30)"),
    ("tool_version", "16s", "ASCII version of the tool that wrote the file, NUL-padded"),
    ("cores", "B", "NPU cores the program uses; 0 = one core (every format 3.0 file). With "
                   "n > 1 (minor 1) the stream holds n per-core streams one after the other, "
                   "each ending with its END, each coded with fresh register histories"),
    ("reserved", "3s", "reserved, zero"),
    ("header_crc32", "I", "zlib.crc32 of header bytes 0..59"),
)


def header_struct(fields: tuple[HeaderField, ...]) -> struct.Struct:
    """The little-endian :class:`struct.Struct` of a header table (checked to be 64 bytes)."""
    st = struct.Struct("<" + "".join(f for _, f, _ in fields))
    if st.size != HEADER_BYTES:
        raise InternalError(f"binfmt: header table is {st.size} bytes, not {HEADER_BYTES}")
    return st


def header_offsets(fields: tuple[HeaderField, ...]) -> list[tuple[str, int, str, str]]:
    """(name, byte offset, struct format, doc) of every header field, for the generated docs."""
    out, pos = [], 0
    for name, fmt, doc in fields:
        out.append((name, pos, fmt, doc))
        pos += struct.calcsize("<" + fmt)
    return out


_CMD_HEADER = header_struct(CMD_HEADER_FIELDS)


def align_up(n: int, align: int = SECTION_ALIGN) -> int:
    """``n`` rounded up to a multiple of ``align``."""
    return -(-n // align) * align


def encode_tool_version(tool_version: str) -> bytes:
    """ASCII ``tool_version`` NUL-padded to 16 bytes.

    Raises:
        InternalError: not ASCII, contains NUL, or longer than 16 bytes.
    """
    try:
        raw = tool_version.encode("ascii")
    except UnicodeEncodeError:
        raise InternalError(f"tool_version {tool_version!r} is not ASCII") from None
    if len(raw) > TOOL_VERSION_BYTES or b"\0" in raw:
        raise InternalError(f"tool_version {tool_version!r} must be <= 16 ASCII chars, no NUL")
    return raw.ljust(TOOL_VERSION_BYTES, b"\0")


def decode_tool_version(raw: bytes, path: str) -> str:
    """Decode a NUL-padded ASCII tool version.

    Raises:
        FormatError: non-ASCII bytes, or non-NUL bytes after the first NUL.
    """
    text, _, tail = raw.partition(b"\0")
    if any(tail) or any(b > 0x7E or b < 0x20 for b in text):
        raise FormatError(f"{path}: header field tool_version is not NUL-padded printable ASCII")
    return text.decode("ascii")


def pack_header(st: struct.Struct, fields: tuple[HeaderField, ...], values: dict) -> bytes:
    """Pack a header from ``values`` (every field but reserved/header_crc32) and append its CRC."""
    args = []
    for name, fmt, _ in fields:
        if name == "header_crc32":
            args.append(0)
        elif name == "reserved":
            args.append(b"")
        else:
            args.append(values[name])
    raw = st.pack(*args)
    crc = zlib.crc32(raw[:HEADER_BYTES - 4])
    return raw[:HEADER_BYTES - 4] + struct.pack("<I", crc)


def unpack_header(data: bytes, st: struct.Struct, fields: tuple[HeaderField, ...],
                  magic: bytes, path: str, major_expected: int = FORMAT_MAJOR) -> dict:
    """Read and validate the common part of a container header.

    Checks, in order: length, magic, major version, header CRC, header_bytes (>= 64, multiple
    of 64, inside the file), reserved bytes zero (minor version 0), tool_version.

    Returns:
        field name -> value (tool_version decoded to str).

    Raises:
        FormatError: naming ``path`` and the failing field.
    """
    if len(data) < HEADER_BYTES:
        raise FormatError(f"{path}: truncated header ({len(data)} bytes, need {HEADER_BYTES})")
    vals = dict(zip((n for n, _, _ in fields), st.unpack_from(data, 0)))
    if vals["magic"] != magic:
        raise FormatError(f"{path}: header field magic is {vals['magic']!r}, expected {magic!r}"
                          " (not a tccc file of this kind)")
    major, minor = vals["version_major"], vals["version_minor"]
    if major != major_expected:  # each container has its own major (weights: weightfile.py)
        raise FormatError(f"{path}: unsupported format version {major}.{minor}, this tccc "
                          f"reads {major_expected}.x")
    crc = zlib.crc32(data[:HEADER_BYTES - 4])
    if crc != vals["header_crc32"]:
        raise FormatError(f"{path}: header field header_crc32 is {vals['header_crc32']:#010x}, "
                          f"header bytes give {crc:#010x} (corrupted header)")
    hb = vals["header_bytes"]
    if hb < HEADER_BYTES or hb % SECTION_ALIGN or hb > len(data):
        raise FormatError(f"{path}: header field header_bytes = {hb} invalid (multiple of 64, "
                          f">= 64, file is {len(data)} bytes)")
    if minor == 0 and any(vals["reserved"]):
        raise FormatError(f"{path}: header field reserved is not zero")
    if minor == 0 and vals.get("cores", 0):
        raise FormatError(f"{path}: header field cores = {vals['cores']} in a format 3.0 file "
                          "(must be 0)")
    vals["tool_version"] = decode_tool_version(vals["tool_version"], path)
    return vals


def _check_u32(name: str, value: int, hi: int = 0xFFFFFFFF) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= hi:
        raise InternalError(f"npu_cmd.bin: {name} = {value!r} outside 0..{hi}")


@dataclass(frozen=True)
class CmdFile:
    """A decoded ``npu_cmd.bin``.

    Attributes:
        path: file name used in messages.
        version_major, version_minor: format version.
        header_bytes: header size (bytes); the stream starts at this file offset.
        sram_peak_bytes: SRAM the program uses at its peak (bytes; the highest end of any SRAM
            buffer). The capacity is the target's (``Target.sram_capacity_bytes``).
        act_arena_bytes, input_bytes, output_bytes: sizes of DRAM regions ACT, INPUT, OUTPUT.
        tool_version: version string of the writer.
        stream_crc32: CRC-32 of the stream.
        commands: decoded commands in stream order (END last).
        offsets: stream byte offset of each command (add ``header_bytes`` for file offsets).
        slots: history slot each command was coded against (0..3).
        cores: NPU cores the program uses (1 for a single-core file, whose header holds 0).
            ``commands`` then holds the per-core streams one after the other, each ending
            with END (:meth:`core_ranges`).
    """

    path: str
    version_major: int
    version_minor: int
    header_bytes: int
    sram_peak_bytes: int
    act_arena_bytes: int
    input_bytes: int
    output_bytes: int
    tool_version: str
    stream_crc32: int
    commands: tuple[Command, ...]
    offsets: tuple[int, ...] = ()
    slots: tuple[int, ...] = ()
    cores: int = 1

    def core_ranges(self) -> list[tuple[int, int]]:
        """[start, end) command indices of each core's stream (END included)."""
        return core_ranges(self.commands)

    def disassemble(self, comments=None) -> str:
        """Listing of the commands with file byte offsets (see :func:`isa.disasm.disassemble`),
        a marker line before each core's stream in a multi-core file."""
        starts = [a for a, _ in self.core_ranges()] if self.cores > 1 else []
        return disassemble(self.commands, comments, base_offset=self.header_bytes,
                           offsets=self.offsets or None, core_starts=starts)


def core_ranges(cmds) -> list[tuple[int, int]]:
    """[start, end) indices of the END-terminated per-core streams of ``cmds`` (one range
    per END; commands after the last END form no range)."""
    out, start = [], 0
    for i, c in enumerate(cmds):
        if c.opcode == spec.END.opcode:
            out.append((start, i + 1))
            start = i + 1
    return out


def cores_problem(cmds, cores: int) -> str | None:
    """Why ``cmds`` is not ``cores`` well-terminated per-core streams, or None: each core's
    stream ends with its one END, every SEM_SIGNAL/SEM_WAIT names a semaphore below
    :data:`~tcc_compiler.isa.spec.N_SEMAPHORES`, each semaphore is signalled by one core only,
    and no SEM_WAIT waits for more signals than the program holds (it would never be
    released)."""
    if cores == 1:
        return end_problem(list(cmds))
    ranges = core_ranges(cmds)
    if not cmds or cmds[-1].opcode != spec.END.opcode:
        return "command stream does not end with END"
    if len(ranges) != cores:
        return (f"{cores} cores need {cores} END-terminated streams, the stream holds "
                f"{len(ranges)}")
    signals: dict[int, int] = {}
    owner: dict[int, int] = {}
    for core, (a, b) in enumerate(ranges):
        for i in range(a, b):
            c = cmds[i]
            if c.opcode in (spec.SEM_SIGNAL.opcode, spec.SEM_WAIT.opcode) \
                    and c.sem >= spec.N_SEMAPHORES:
                return (f"command {i} ({c.name}) of core {core}: semaphore {c.sem} outside "
                        f"0..{spec.N_SEMAPHORES - 1}")
            if c.opcode == spec.SEM_SIGNAL.opcode:
                if owner.setdefault(c.sem, core) != core:
                    return (f"command {i} (SEM_SIGNAL) of core {core}: semaphore {c.sem} is "
                            f"also signalled by core {owner[c.sem]} (one core per semaphore)")
                signals[c.sem] = signals.get(c.sem, 0) + 1
    for core, (a, b) in enumerate(ranges):
        for i in range(a, b):
            c = cmds[i]
            if c.opcode == spec.SEM_WAIT.opcode and not 1 <= c.count <= signals.get(c.sem, 0):
                return (f"command {i} (SEM_WAIT) of core {core}: waits for semaphore {c.sem} "
                        f"to reach {c.count}, the program signals it "
                        f"{signals.get(c.sem, 0)} time(s): it would never be released")
    return None


def write_cmd_file(commands: list[Command], *, sram_peak_bytes: int, act_arena_bytes: int,
                   input_bytes: int, output_bytes: int, tool_version: str,
                   slots: list[int | None] | None = None, cores: int = 1) -> bytes:
    """Serialise a program to ``npu_cmd.bin`` bytes.

    Args:
        commands: the program; must end with exactly one END.
        sram_peak_bytes: SRAM the program uses at its peak (bytes).
        act_arena_bytes, input_bytes, output_bytes: DRAM region sizes (bytes, each <= 2**30).
        tool_version: ASCII, at most 16 characters.
        slots: optional history slot per command (see :func:`isa.codec.encode_commands`).
        cores: NPU cores (1..255); with more than one, ``commands`` holds the per-core streams
            one after the other, each ending with END (header ``cores``, minor version 1).

    Raises:
        InternalError: END missing/misplaced, a field or size out of range, a bad semaphore.
    """
    if not 1 <= cores <= 255:
        raise InternalError(f"npu_cmd.bin: cores = {cores} outside 1..255")
    problem = cores_problem(list(commands), cores)
    if problem:
        raise InternalError(f"npu_cmd.bin: {problem}")
    _check_u32("sram_peak_bytes", sram_peak_bytes)
    for name, v in (("act_arena_bytes", act_arena_bytes), ("input_bytes", input_bytes),
                    ("output_bytes", output_bytes)):
        _check_u32(name, v, spec.REGION_OFFSET_MASK + 1)
    stream = b"".join(   # each core's parser starts with fresh register histories
        encode_commands(commands[a:b], None if slots is None else slots[a:b])
        for a, b in core_ranges(commands))
    _check_u32("stream_bytes", len(stream))
    header = pack_header(_CMD_HEADER, CMD_HEADER_FIELDS, {
        "magic": CMD_MAGIC, "version_major": FORMAT_MAJOR,
        "version_minor": FORMAT_MINOR if cores == 1 else FORMAT_MINOR_CORES,
        "cores": 0 if cores == 1 else cores,
        "header_bytes": HEADER_BYTES, "stream_bytes": len(stream),
        "n_commands": len(commands), "stream_crc32": zlib.crc32(stream),
        "sram_peak_bytes": sram_peak_bytes, "act_arena_bytes": act_arena_bytes,
        "input_bytes": input_bytes, "output_bytes": output_bytes,
        "tool_version": encode_tool_version(tool_version),
    })
    return header + stream


def read_cmd_file(data: bytes, path: str = "npu_cmd.bin") -> CmdFile:
    """Decode and validate ``npu_cmd.bin`` bytes.

    Raises:
        FormatError: bad magic/version/CRC/sizes, a command that does not decode, a command count
            that disagrees with the header, or END missing/misplaced (one line naming ``path``).
    """
    data = bytes(data)
    h = unpack_header(data, _CMD_HEADER, CMD_HEADER_FIELDS, CMD_MAGIC, path)
    hb, sb = h["header_bytes"], h["stream_bytes"]
    if hb + sb != len(data):
        raise FormatError(f"{path}: header field stream_bytes = {sb} but the file holds "
                          f"{len(data) - hb} bytes after the header (truncated or padded)")
    for name in ("act_arena_bytes", "input_bytes", "output_bytes"):
        if h[name] > spec.REGION_OFFSET_MASK + 1:
            raise FormatError(f"{path}: header field {name} = {h[name]} exceeds a DRAM region "
                              "(2**30 bytes)")
    stream = data[hb:]
    crc = zlib.crc32(stream)
    if crc != h["stream_crc32"]:
        raise FormatError(f"{path}: header field stream_crc32 is {h['stream_crc32']:#010x}, "
                          f"stream gives {crc:#010x} (corrupted command stream)")
    if h["n_commands"] > sb:
        raise FormatError(f"{path}: header field n_commands = {h['n_commands']} cannot fit in "
                          f"{sb} stream bytes")
    cores = max(1, h["cores"])
    if h["cores"] == 1:
        raise FormatError(f"{path}: header field cores = 1 (a single-core file holds 0)")
    cmds, offsets, slots = decode_stream(stream, path, reset_after_end=cores > 1)
    if len(cmds) != h["n_commands"]:
        raise FormatError(f"{path}: header field n_commands = {h['n_commands']} but the stream "
                          f"holds {len(cmds)} commands")
    problem = cores_problem(cmds, cores)
    if problem:
        raise FormatError(f"{path}: {problem}")
    return CmdFile(path=path, version_major=h["version_major"],
                   version_minor=h["version_minor"], header_bytes=hb,
                   sram_peak_bytes=h["sram_peak_bytes"], act_arena_bytes=h["act_arena_bytes"],
                   input_bytes=h["input_bytes"], output_bytes=h["output_bytes"],
                   tool_version=h["tool_version"], stream_crc32=h["stream_crc32"],
                   commands=tuple(cmds), offsets=tuple(offsets), slots=tuple(slots),
                   cores=cores)
