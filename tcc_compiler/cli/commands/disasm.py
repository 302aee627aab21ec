"""Disassemble npu_cmd.bin: one command per line with its byte offset, fields and the source
ONNX node(s) of the layer it belongs to (from report.json in the same folder, when present)."""

from __future__ import annotations

import json
from pathlib import Path

NAME = "disasm"
HELP = "disassemble npu_cmd.bin (byte offsets, fields, source ONNX node per command)"
ORDER = 50


def add_arguments(p) -> None:
    """Arguments of ``tccc disasm``."""
    p.add_argument("dir", help="compiled output folder")


def command_sources(report: dict, n_commands: int) -> list[str | None]:
    """Per command index: "layer [onnx nodes]" from the report's per-layer command counts.

    Layers own contiguous command ranges in report order; the final END belongs to none.
    """
    out: list[str | None] = []
    for layer in report.get("layers", []):
        note = f"{layer['name']} [{','.join(layer.get('source', []))}]"
        out += [note] * int(layer.get("commands", 0))
    out = out[:n_commands]
    return out + [None] * (n_commands - len(out))


def run(args) -> int:
    """tccc disasm DIR"""
    from tcc_compiler.runtime import load_program

    prog = load_program(args.dir)
    report_path = Path(args.dir) / "report.json"
    comments = None
    if report_path.is_file():
        comments = command_sources(json.loads(report_path.read_text()),
                                   len(prog.cmd.commands))
    print(prog.cmd.disassemble(comments), end="")
    return 0
