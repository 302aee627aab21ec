"""Disassemble npu_cmd.bin: one command per line with its byte offset, fields and the source
ONNX node(s) of the layer it belongs to (from report.json in the same folder, when present)."""

from __future__ import annotations

import logging
from pathlib import Path

from tcc_compiler.emit.jsonfmt import json_text

log = logging.getLogger(__name__)

NAME = "disasm"
HELP = "disassemble npu_cmd.bin (byte offsets, fields, source ONNX node per command)"
ORDER = 50


def add_arguments(p) -> None:
    """Arguments of ``tccc disasm``."""
    p.add_argument("dir", help="compiled output folder")
    p.add_argument("--json", action="store_true",
                   help="print a JSON list: offset, core, mnemonic, fields, waits, source per "
                   "command")


def command_sources(report: dict, n_commands: int) -> list[str | None]:
    """Per command index: "layer [onnx nodes]", or None (the final END, unowned commands).

    A layer row's ``command_ranges`` (``[start, end)`` index runs, written since the scheduler
    interleaves layers: prefetches, cascades, two cores) say exactly which commands it owns.
    A report without them (older tccc) gives per-layer ``commands`` counts only; those are read
    as contiguous ranges in report order.

    Raises:
        ValueError: a range past the program's commands, or two layers claiming one command
            (``tccc disasm`` then warns and prints no source names).
    """
    out: list[str | None] = [None] * n_commands
    rows = report.get("layers", [])
    if rows and all("command_ranges" in row for row in rows):
        for row in rows:
            note = f"{row['name']} [{','.join(row.get('source', []))}]"
            for a, b in row["command_ranges"]:
                if b > n_commands or any(x is not None for x in out[a:b]):
                    why = ("is past the program's {n_commands} commands" if b > n_commands
                           else "overlaps another layer's")
                    raise ValueError(f"layer {row['name']!r}: command range [{a}, {b}) "
                                     + why.format(n_commands=n_commands))
                out[a:b] = [note] * (b - a)
        return out
    i = 0
    for row in rows:
        note = f"{row['name']} [{','.join(row.get('source', []))}]"
        n = int(row.get("commands", 0))
        out[i:i + n] = [note] * len(range(i, min(i + n, n_commands)))
        i += n
    return out[:n_commands]


def commands_json(prog, comments: list[str | None] | None) -> list[dict]:
    """One JSON object per command of a loaded program, in stream order.

    Keys: ``offset`` (file byte offset, int), ``core`` (the NPU core whose stream holds it, 0
    in a one-core file), ``name`` (mnemonic), ``fields`` ({field: int}, raw encoded values as in
    specs/isa.md), ``waits`` ({queue: n} for waits other than 7), ``source`` (the layer and
    ONNX nodes, or null).
    """
    from tcc_compiler.isa import spec
    from tcc_compiler.isa.codec import command_offsets

    cmd = prog.cmd
    offsets = cmd.offsets or command_offsets(cmd.commands)
    core_of = [0] * len(cmd.commands)
    if cmd.cores > 1:
        for k, (a, b) in enumerate(cmd.core_ranges()):
            core_of[a:b] = [k] * (b - a)
    out = []
    for i, (off, c) in enumerate(zip(offsets, cmd.commands)):
        waits = {q: int(w) for q, w in zip(("load", "compute", "store"), c.waits)
                 if w != spec.WAIT_NONE}
        out.append({"offset": cmd.header_bytes + int(off), "core": core_of[i], "name": c.name,
                    "fields": {f.name: int(v) for f, v in zip(c.SPEC.fields, c.field_values())},
                    "waits": waits, "source": comments[i] if comments else None})
    return out


def run(args) -> int:
    """tccc disasm DIR [--json]"""
    from tcc_compiler.api.folders import load_program, read_report
    from tcc_compiler.errors import FormatError

    from tcc_compiler.runtime.segmented import refuse_segmented

    refuse_segmented(args.dir, "tccc disasm")
    prog = load_program(args.dir)
    comments = None
    try:  # report.json only names the source layers: a bad one costs the comments, not the run
        report = read_report(args.dir)
        if report is not None:
            comments = command_sources(report, len(prog.cmd.commands))
    except FormatError as exc:
        log.warning("%s; disassembling without source names", exc)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        log.warning("%s: unexpected layer table (%s: %s); disassembling without source names",
                    Path(args.dir) / "report.json", type(exc).__name__, exc)
    if args.json:
        print(json_text(commands_json(prog, comments), indent=1))
        return 0
    print(prog.cmd.disassemble(comments), end="")
    return 0
