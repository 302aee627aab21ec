"""Disassembler: one text line per command, driven by the spec table.

Line format::

    0x000024  CONV_CFG   kh=3 kw=3 ... wait(load<=0)  ; conv1

byte offset of the command in the stream, mnemonic, every field (DRAM addresses as
``REGION+0xoffset``, SRAM addresses in hex, other values in decimal), the waits that are not 7,
and an optional comment from the caller (e.g. the source ONNX node). A multi-core stream
(``core_starts``) has a marker line ``; ---- core K ----`` before each core's first command.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from tcc_compiler.isa import spec
from tcc_compiler.isa.codec import command_offsets
from tcc_compiler.isa.commands import Command
from tcc_compiler.isa.spec import Display

_NAME_WIDTH = max(len(c.name) for c in spec.COMMANDS)


def format_field(f: spec.Field, value: int) -> str:
    """``name=value`` for one field, formatted by its :class:`Display` kind."""
    if f.display is Display.DRAM:
        region, off = spec.split_dram_address(value)
        text = f"{region.name}+{off:#x}"
    elif f.display is Display.SRAM:
        text = f"{value:#08x}"
    elif f.display is Display.HEX:
        text = f"{value:#x}"
    else:
        text = str(value)
    return f"{f.name}={text}"


def format_command(cmd: Command) -> str:
    """Mnemonic, fields and non-default waits of one command (no offset, no comment)."""
    parts = [cmd.name.ljust(_NAME_WIDTH)]
    parts += [format_field(f, v) for f, v in zip(cmd.SPEC.fields, cmd.field_values())]
    waits = [f"{q}<={w}" for q, w in zip(("load", "compute", "store"), cmd.waits)
             if w != spec.WAIT_NONE]
    if waits:
        parts.append(f"wait({','.join(waits)})")
    return " ".join(parts).rstrip()


def disassemble(cmds: Sequence[Command],
                comments: Sequence[str | None] | Mapping[int, str] | None = None,
                base_offset: int = 0, offsets: Sequence[int] | None = None,
                core_starts: Sequence[int] = ()) -> str:
    """Disassemble a command list to text, one line per command.

    Args:
        cmds: the commands in stream order.
        comments: optional per-command comment, by command index (a sequence aligned with
            ``cmds`` or a mapping index -> text); None/empty entries print no comment.
        base_offset: byte offset of the first command (e.g. 64 to show file offsets of
            npu_cmd.bin instead of stream offsets).
        offsets: stream byte offset of each command as decoded from a file (None: re-encode
            ``cmds`` with encoder-chosen history slots to find them).
        core_starts: index of each core's first command in a multi-core stream (empty: one
            core, no marker lines).

    Returns:
        The listing, lines joined by "\\n" with a trailing newline (empty string for no commands).
    """
    if comments is None:
        comments = {}
    elif not isinstance(comments, Mapping):
        comments = dict(enumerate(comments))
    lines = []
    if offsets is None:
        offsets = command_offsets(cmds)
    starts = {a: k for k, a in enumerate(core_starts)} if len(core_starts) > 1 else {}
    for i, (off, cmd) in enumerate(zip(offsets, cmds)):
        if i in starts:
            lines.append(f"; ---- core {starts[i]} ----")
        line = f"{base_offset + off:#08x}  {format_command(cmd)}"
        note = comments.get(i)
        if note:
            line += f"  ; {note}"
        lines.append(line)
    return "".join(line + "\n" for line in lines)
