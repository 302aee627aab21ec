"""Command set: table layout, encode/decode round trips, range checks, disassembly, doc drift."""

from __future__ import annotations

import importlib.util
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tcc_compiler.errors import ExecutionError, FormatError, InternalError
from tcc_compiler.isa import commands as C
from tcc_compiler.isa import spec
from tcc_compiler.isa.codec import (
    command_offsets,
    decode_command,
    decode_commands,
    encode_command,
    encode_commands,
    end_problem,
)
from tcc_compiler.isa.disasm import disassemble

ROOT = Path(__file__).resolve().parent.parent


def _cmd_strategy(cs: spec.CommandSpec):
    cls = C.COMMAND_CLASSES[cs.opcode]
    ints = [st.integers(f.type.min, f.type.max) for f in cs.fields]
    waits = st.integers(0, spec.WAIT_NONE)
    return st.builds(lambda vals, w: cls(*vals, wait_load=w[0], wait_compute=w[1],
                                          wait_store=w[2]),
                     st.tuples(*ints), st.tuples(waits, waits, waits))


ANY_COMMAND = st.one_of([_cmd_strategy(cs) for cs in spec.COMMANDS])


def _example(cs: spec.CommandSpec, **overrides) -> C.Command:
    vals = {f.name: 1 for f in cs.fields}
    vals.update(overrides)
    return C.COMMAND_CLASSES[cs.opcode](**vals)


# ---------------------------------------------------------------------------------------------
# Table


@pytest.mark.parametrize("cs", spec.COMMANDS, ids=lambda c: c.name)
def test_layout_is_naturally_aligned_whole_words(cs):
    assert cs.length_bytes % 4 == 0
    for f, off in zip(cs.fields, cs.offsets):
        assert off % f.type.size_bytes == 0
        assert 4 <= off and off + f.type.size_bytes <= cs.length_bytes
    assert struct.calcsize(cs.struct_format) == cs.length_bytes - 4


def test_expected_lengths():
    got = {c.name: c.length_words for c in spec.COMMANDS}
    assert got == {"DMA_LOAD": 9, "DMA_STORE": 9, "CONV_CFG": 6, "CONV_TILE": 10,
                   "POOL_CFG": 4, "POOL_TILE": 7, "ADD_CFG": 5, "ADD_TILE": 5, "END": 1}
    assert len({c.opcode for c in spec.COMMANDS}) == len(spec.COMMANDS)


def test_dataclasses_match_table():
    for op, cls in C.COMMAND_CLASSES.items():
        assert cls.SPEC is spec.BY_OPCODE[op]
        assert _example(cls.SPEC).field_values() == (1,) * len(cls.SPEC.fields)


# ---------------------------------------------------------------------------------------------
# Round trips


@settings(max_examples=300, deadline=None)
@given(ANY_COMMAND)
def test_round_trip_random(cmd):
    raw = encode_command(cmd)
    assert len(raw) == cmd.SPEC.length_bytes
    back, end = decode_command(raw, 0, 0)
    assert end == len(raw)
    assert back == cmd and type(back) is type(cmd)


@settings(max_examples=50, deadline=None)
@given(st.lists(ANY_COMMAND, max_size=20))
def test_stream_round_trip(cmds):
    raw = encode_commands(cmds)
    assert decode_commands(raw) == cmds
    assert command_offsets(cmds) == [sum(c.SPEC.length_bytes for c in cmds[:i])
                                     for i in range(len(cmds))]


def test_header_word_bits():
    raw = encode_command(C.End(wait_load=1, wait_compute=2, wait_store=3))
    (word,) = struct.unpack("<I", raw)
    assert word == 0xFF | (1 << 8) | (1 << 16) | (2 << 19) | (3 << 22)


def test_signed_fields_little_endian():
    cfg = _example(spec.CONV_CFG, zp_in=-128, act_hi=127, group=0x1234)
    raw = encode_command(cfg)
    assert raw[12:14] == b"\x34\x12" and raw[16] == 0x80 and raw[20] == 127
    assert raw[21:24] == b"\0\0\0"


# ---------------------------------------------------------------------------------------------
# Range checks (encode -> InternalError naming index and field)


@pytest.mark.parametrize("field,value", [("in_h", 65536), ("in_h", -1), ("pad_t", 256),
                                         ("in_sram", 2 ** 32), ("in_w", 1.0), ("oc", True)])
def test_field_range_errors(field, value):
    cmd = _example(spec.CONV_TILE, **{field: value})
    with pytest.raises(InternalError, match=rf"command 3 \(CONV_TILE\): field {field}"):
        encode_commands([C.End(), C.End(), C.End(), cmd])


@pytest.mark.parametrize("field,value", [("zp_in", 128), ("act_lo", -129)])
def test_signed_range_errors(field, value):
    with pytest.raises(InternalError, match=f"field {field} = {value} outside i8"):
        encode_command(_example(spec.CONV_CFG, **{field: value}))


def test_wait_range_error():
    with pytest.raises(InternalError, match="field wait_store = 8"):
        encode_command(C.End(wait_store=8))


# ---------------------------------------------------------------------------------------------
# Decode checks (FormatError naming the command index)


def _stream():
    return encode_commands([_example(spec.ADD_CFG), _example(spec.CONV_TILE), C.End()])


def test_decode_unknown_opcode():
    raw = bytearray(_stream())
    raw[20] = 0x77                          # second command's opcode
    with pytest.raises(FormatError, match=r"command 1 at byte 0x14: unknown opcode 0x77"):
        decode_commands(bytes(raw))


def test_decode_wrong_length():
    raw = bytearray(_stream())
    raw[21] = 9
    with pytest.raises(FormatError, match=r"command 1 .*CONV_TILE.*length 9 words, expected 10"):
        decode_commands(bytes(raw))


def test_decode_truncated():
    raw = _stream()
    for cut in range(1, len(raw)):
        if cut in (20, 60):                 # command boundaries: a shorter valid stream
            continue
        with pytest.raises(FormatError, match="truncated"):
            decode_commands(raw[:cut])


def test_decode_reserved_bits_and_padding():
    raw = bytearray(_stream())
    raw[3] = 0x80
    with pytest.raises(FormatError, match="command 0 .*reserved header bits"):
        decode_commands(bytes(raw))
    raw = bytearray(_stream())
    raw[10] = 1                             # ADD_CFG padding bytes 10..11
    with pytest.raises(FormatError, match="command 0 .*padding"):
        decode_commands(bytes(raw))


def test_end_problem():
    assert end_problem([C.End()]) is None
    assert "does not end" in end_problem([_example(spec.ADD_CFG)])
    assert "not the last" in end_problem([C.End(), _example(spec.ADD_CFG), C.End()])


# ---------------------------------------------------------------------------------------------
# Disassembler


def test_disassemble_lines_offsets_comments():
    load = C.DmaLoad(spec.dram_address(spec.Region.ACT, 0x40), 0x100, 48, 1, 5, 0, 48, 0, 48,
                     wait_compute=0)
    cmds = [load, _example(spec.CONV_CFG), C.End()]
    text = disassemble(cmds, comments=["conv1 input", None, "end"])
    lines = text.splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("0x000000  DMA_LOAD")
    assert "dram=ACT+0x40" in lines[0] and "sram=0x000100" in lines[0]
    assert "wait(compute<=0)" in lines[0] and lines[0].endswith("; conv1 input")
    assert lines[1].startswith("0x000024  CONV_CFG") and ";" not in lines[1]
    assert lines[2].startswith("0x00003c  END") and lines[2].endswith("; end")
    assert disassemble(cmds, {2: "x"}, base_offset=64).splitlines()[2].startswith("0x00007c")


# ---------------------------------------------------------------------------------------------
# Accesses and helpers


def test_dma_accesses_merge_and_hull():
    cmd = C.DmaStore(spec.dram_address(spec.Region.OUTPUT, 100), 0, 8, 3, 2, 8, 24, 16, 48)
    acc = cmd.accesses(C.Registers())
    dram = [a for a in acc if a.space is C.Space.OUTPUT]
    sram = [a for a in acc if a.space is C.Space.SRAM]
    assert dram == [C.Access(C.Space.OUTPUT, 100, 148, True)]      # contiguous: merged
    assert len(sram) == 6 and not any(a.is_write for a in sram)
    big = C.DmaLoad(0, 0, 1, 100, 100, 2, 200, 1, 100)
    assert [a for a in big.accesses(C.Registers()) if a.space is C.Space.WEIGHTS] == \
        [C.Access(C.Space.WEIGHTS, 0, 99 * 200 + 99 * 2 + 1, False)]


def test_conv_tile_accesses_need_cfg():
    tile = _example(spec.CONV_TILE, in_sram=0, w_sram=1000, p_sram=2000, out_sram=3000,
                    sc_sram=4000, in_h=3, in_w=3, in_c=4, oc=2, out_h=1, out_w=1)
    with pytest.raises(ExecutionError):
        tile.accesses(C.Registers())
    regs = C.Registers()
    regs.update(_example(spec.CONV_CFG, kh=3, kw=3, cin_g=4, out_mode=1, flags=0))
    acc = tile.accesses(regs)
    assert acc[0] == C.Access(C.Space.SRAM, 0, 36, False)
    assert acc[1] == C.Access(C.Space.SRAM, 1000, 1000 + 2 * 9 * 4, False)
    assert acc[-1] == C.Access(C.Space.SRAM, 3000, 3000 + 2 * 4, True)


def test_dram_address_helpers():
    a = spec.dram_address(spec.Region.INPUT, 0x123)
    assert a == 0x80000123 and spec.split_dram_address(a) == (spec.Region.INPUT, 0x123)
    with pytest.raises(InternalError):
        spec.dram_address(spec.Region.ACT, 1 << 30)


def test_conv_params_pack_round_trip():
    raw = spec.pack_conv_params([-5, 7], [2 ** 30, 1], [31, 1], [3, 0])
    assert len(raw) == 32
    rec = spec.unpack_conv_params(raw)
    assert rec["bias"].tolist() == [-5, 7] and rec["shift"].tolist() == [31, 1]
    assert rec["sc_mult"].tolist() == [3, 0] and not rec["reserved"].any()
    with pytest.raises(InternalError, match="shift"):
        spec.pack_conv_params([0], [1], [0])


# ---------------------------------------------------------------------------------------------
# Spec/doc drift


def test_generated_docs_up_to_date():
    path = ROOT / "tools" / "gen_isa_doc.py"
    mod_spec = importlib.util.spec_from_file_location("gen_isa_doc", path)
    gen = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(gen)
    for md, tables in gen.targets():
        text = md.read_text()
        assert gen.render(text, tables, md) == text, \
            f"{md} is out of date: run python tools/gen_isa_doc.py"
