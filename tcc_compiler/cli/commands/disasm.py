"""Disassemble npu_cmd.bin: one command per line with its byte offset and fields."""

from __future__ import annotations

NAME = "disasm"
HELP = "disassemble npu_cmd.bin"
ORDER = 50


def add_arguments(p) -> None:
    """Arguments of ``tccc disasm``."""
    p.add_argument("dir", help="compiled output folder")


def run(args) -> int:
    """tccc disasm DIR"""
    from tcc_compiler.runtime import load_program

    prog = load_program(args.dir)
    print(prog.cmd.disassemble())
    return 0
