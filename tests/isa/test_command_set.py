"""Command set: table layout, encode/decode round trips, range checks, disassembly, doc drift."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tcc_compiler.errors import ExecutionError, FormatError, InternalError
from tcc_compiler.isa import commands as C
from tcc_compiler.isa import spec
from tcc_compiler.isa.codec import (
    command_offsets,
    decode_commands,
    decode_stream,
    encode_command,
    encode_commands,
    encode_with_offsets,
    end_problem,
)
from tcc_compiler.isa.disasm import disassemble

ROOT = Path(__file__).resolve().parents[2]


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


def test_opcodes_fit_control_byte():
    ops = [c.opcode for c in spec.COMMANDS]
    assert len(set(ops)) == len(ops) and all(1 <= op <= 15 for op in ops)
    widths = [(lo, w) for _, lo, w, _ in spec.CONTROL_BITS]
    assert sum(w for _, w in widths) == 8 and widths[0] == (0, 4)
    # CONV_TILE: 15 tile fields + 3 strided operands x (pixel, row) stride = 21 fields x 2 bits
    assert spec.CONV_TILE.code_bytes == 6 and spec.DMA_LOAD.code_bytes == 3
    assert spec.END.code_bytes == 0 and spec.END.max_bytes == 3
    assert spec.varint_max_bytes(spec.U32) == 5 and spec.varint_max_bytes(spec.U8) == 2


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
    assert len(raw) <= cmd.SPEC.max_bytes
    back, offsets, slots = decode_stream(raw)
    assert back == [cmd] and type(back[0]) is type(cmd) and offsets == [0]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(ANY_COMMAND, st.one_of(st.none(), st.integers(0, 3))), max_size=30))
def test_stream_round_trip(items):
    cmds = [c for c, _ in items]
    slots = [s for _, s in items]
    raw, offsets = encode_with_offsets(cmds, slots)
    back, back_offsets, back_slots = decode_stream(raw)
    assert back == cmds and back_offsets == offsets
    assert all(s is None or s == b for s, b in zip(slots, back_slots))
    assert command_offsets(cmds) == encode_with_offsets(cmds)[1]


def test_control_byte_and_wait_word():
    raw = encode_command(C.End(wait_load=1, wait_compute=2, wait_store=3))
    assert raw == bytes([0xF | 0x40]) + (1 | (2 << 3) | (3 << 6)).to_bytes(2, "little")
    assert encode_command(C.End()) == b"\x0f"            # waits 7,7,7 = the initial history


def _store(dram, sram, **kw):
    return C.DmaStore(dram, sram, 4096, 1, 1, 0, 0, 0, 0, **kw)


def test_history_codes_hand_computed():
    # A tile loop: DRAM address advances by 4096, SRAM ping-pongs between 0x100 and 0x2100.
    cmds = [_store(0x1000, 0x100, wait_compute=0), _store(0x2000, 0x2100, wait_compute=0),
            _store(0x3000, 0x100, wait_compute=0), _store(0x4000, 0x2100, wait_compute=0)]
    raw, offsets = encode_with_offsets(cmds, [0, 0, 0, 0])
    # command 0: ctrl 0x02|W|F, wait word 0x1c7 (load 7, compute 0, store 7), codes
    # dram/sram/run_bytes/n1/n2 EXPLICIT (3), strides KEEP (0) -> bits 0..9 set = 0x0003ff,
    # then zigzag varints 0x1000 -> 0x2000 = 80 40, 0x100 -> 0x200 = 80 04, 4096 -> 80 40,
    # 1 -> 02, 1 -> 02.
    first = bytes([0xC2, 0xC7, 0x01, 0xFF, 0x03, 0x00, 0x80, 0x40, 0x80, 0x04, 0x80, 0x40,
                   0x02, 0x02])
    assert raw[:offsets[1]] == first
    # command 1: dram STEP (prev 0x1000 + (0x1000 - prev2 0) = 0x2000), sram EXPLICIT
    # (+0x2000 -> zigzag 0x4000 = 80 80 01), the rest KEEP -> codes 0b1101 = 0x0d, ctrl 0x02|F.
    assert raw[offsets[1]:offsets[2]] == bytes([0x82, 0x0D, 0x00, 0x00, 0x80, 0x80, 0x01])
    # command 2: dram STEP (1), sram SWAP (2), rest KEEP -> codes 0b1001 = 0x09, no payload.
    assert raw[offsets[2]:offsets[3]] == bytes([0x82, 0x09, 0x00, 0x00])
    # command 3: same codes and waits: the control byte alone.
    assert raw[offsets[3]:] == b"\x02"
    assert decode_commands(raw) == cmds


# ---------------------------------------------------------------------------------------------
# Range checks (encode -> InternalError naming index and field)


@pytest.mark.parametrize("field,value", [("in_h", 65536), ("in_h", -1), ("pad_t", 256),
                                         ("in_sram", 2 ** 32), ("in_w", 1.0), ("oc", True)])
def test_field_range_errors(field, value):
    cmd = _example(spec.CONV_TILE, **{field: value})
    with pytest.raises(InternalError, match=rf"command 3 \(CONV_TILE\): field {field}"):
        encode_commands([C.End(), C.End(), C.End(), cmd])


@pytest.mark.parametrize("field,value,type_", [("zp_in", 128, "i8"),
                                               ("act_lo", -32769, "i16")])
def test_signed_range_errors(field, value, type_):
    # act_lo/act_hi are i16: an int16 output's clamp bounds (mixed precision)
    with pytest.raises(InternalError, match=f"field {field} = {value} outside {type_}"):
        encode_command(_example(spec.CONV_CFG, **{field: value}))


def test_wait_range_error():
    with pytest.raises(InternalError, match="field wait_store = 8"):
        encode_command(C.End(wait_store=8))


# ---------------------------------------------------------------------------------------------
# Decode checks (FormatError naming the command index)


def _stream():
    return encode_commands([_example(spec.ADD_CFG), _example(spec.CONV_TILE), C.End()])


def _offsets():
    return encode_with_offsets([_example(spec.ADD_CFG), _example(spec.CONV_TILE), C.End()])[1]


def test_decode_unknown_opcode():
    raw = bytearray(_stream())
    off = _offsets()[1]
    raw[off] = (raw[off] & 0xF0) | 0x0                  # second command's opcode -> 0
    with pytest.raises(FormatError, match=rf"command 1 at byte {off:#x}: unknown opcode 0x0"):
        decode_commands(bytes(raw))


def test_decode_truncated():
    raw = _stream()
    bounds = set(_offsets())
    for cut in range(1, len(raw)):
        if cut in bounds:                              # command boundaries: a shorter stream
            continue
        with pytest.raises(FormatError, match="truncated"):
            decode_commands(raw[:cut])


def test_decode_reserved_bits():
    raw = bytearray(encode_command(C.End(wait_load=0)))
    raw[2] |= 0x80                                       # wait word bit 15
    with pytest.raises(FormatError, match="command 0 .*reserved wait-word bits"):
        decode_commands(bytes(raw))
    raw = bytearray(encode_command(_example(spec.CONV_TILE)))
    assert raw[0] & 0x80 and not raw[0] & 0x40           # F set, no wait word
    raw[6] |= 0x80                                       # code bit 47: above the 21 fields
    with pytest.raises(FormatError, match="reserved field-code bits"):
        decode_commands(bytes(raw))
    with pytest.raises(FormatError, match="F flag set on a command without fields"):
        decode_commands(bytes([0x8F, 0x00]))


def test_decode_bad_varints_and_ranges():
    # ADD_TILE with only field n EXPLICIT (codes 0b11 << 6 = 0xc0).
    head = bytes([0x88, 0xC0])
    assert decode_commands(head + b"\x02")[0].n == 1
    with pytest.raises(FormatError, match="non-canonical varint in field n"):
        decode_commands(head + b"\x82\x00")
    with pytest.raises(FormatError, match="longer than 5 bytes"):
        decode_commands(head + b"\xff" * 6)
    with pytest.raises(FormatError, match="field n = -1 outside u32"):
        decode_commands(head + b"\x01")                # zigzag 1 = -1
    # CONV_CFG zp_in (field 10) EXPLICIT +128 does not fit i8.
    codes = (3 << 20).to_bytes(spec.CONV_CFG.code_bytes, "little")
    with pytest.raises(FormatError, match="field zp_in = 128 outside i8"):
        decode_commands(bytes([0x83]) + codes + b"\x80\x02")


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
    offs = encode_with_offsets(cmds)[1]
    assert lines[1].startswith(f"{offs[1]:#08x}  CONV_CFG") and ";" not in lines[1]
    assert lines[2].startswith(f"{offs[2]:#08x}  END") and lines[2].endswith("; end")
    assert disassemble(cmds, {2: "x"}, base_offset=64).splitlines()[2].startswith(
        f"{64 + offs[2]:#08x}")


# ---------------------------------------------------------------------------------------------
# Accesses and helpers


def test_dma_accesses_merge_and_stay_exact():
    """Contiguous runs merge into one range; a strided side is one exact pattern, also far
    beyond the 4096 runs above which accesses used to be one conservative hull."""
    cmd = C.DmaStore(spec.dram_address(spec.Region.OUTPUT, 100), 0, 8, 3, 2, 8, 24, 16, 48)
    acc = cmd.accesses(C.Registers())
    dram = [a for a in acc if a.space is C.Space.OUTPUT]
    sram = [a for a in acc if a.space is C.Space.SRAM]
    assert dram == [C.Access(C.Space.OUTPUT, 100, 148, True)]      # contiguous: merged
    # 3 runs 16 apart per row, rows 48 = 3 x 16 apart: one level of 6 runs
    assert sram == [C.Access(C.Space.SRAM, 0, 88, False, 8, 6, 16)]
    assert sram[0].runs() == [(16 * i, 16 * i + 8) for i in range(6)]
    big = C.DmaLoad(0, 0, 1, 100, 100, 2, 300, 1, 100)
    [w] = [a for a in big.accesses(C.Registers()) if a.space is C.Space.WEIGHTS]
    assert w == C.Access(C.Space.WEIGHTS, 0, 99 * 300 + 99 * 2 + 1, False, 1, 100, 2, 100, 300)
    assert w.covers(302) and not w.covers(303) and not w.covers(200)
    half = C.DmaLoad(spec.dram_address(spec.Region.ACT, 16), 0, 16, 25600, 1, 48, 0, 16, 0)
    [d, s] = half.accesses(C.Registers())    # a Split half of a 48-channel concat at 160x160
    assert (d.run, d.n1, d.s1, d.n2) == (16, 25600, 48, 1) and d.end == 16 + 25599 * 48 + 16
    assert d.covers(16) and not d.covers(32) and not d.covers(16 + 25599 * 48 - 1)
    assert s == C.Access(C.Space.SRAM, 0, 16 * 25600, True)


def test_conv_tile_accesses_need_cfg():
    packed = {n: 0 for n in spec.CONV_TILE.field_names if n.endswith("_stride")}
    tile = _example(spec.CONV_TILE, in_sram=0, w_sram=1000, p_sram=2000, out_sram=3000,
                    sc_sram=4000, in_h=3, in_w=3, in_c=4, oc=2, out_h=1, out_w=1, **packed)
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
    assert not rec["clamp_lo"].any() and not rec["clamp_hi"].any()   # zero: no clamp
    with pytest.raises(InternalError, match="shift"):
        spec.pack_conv_params([0], [1], [0])
    rec = spec.unpack_conv_params(spec.pack_conv_params([0, 1], [1, 1], [1, 1], None,
                                                        [0, 255], [7, 0]))
    assert rec["clamp_lo"].tolist() == [0, 255] and rec["clamp_hi"].tolist() == [7, 0]
    with pytest.raises(InternalError, match="clamp_lo"):
        spec.pack_conv_params([0], [1], [1], None, [256], [0])


def test_channel_clamp_bytes_narrow_the_output():
    """clamp_lo/clamp_hi: output clamped to [MIN + lo, MAX - hi] per channel, in place."""
    import numpy as np

    from tcc_compiler.numerics.epilogue import channel_clamp

    y = np.array([[-128, 5, 127], [0, -7, 100]], np.int8)
    got = channel_clamp(y, np.array([128, 0, 0], np.uint8), np.array([0, 130, 27], np.uint8))
    assert got is y and y.tolist() == [[0, -3, 100], [0, -7, 100]]
    assert channel_clamp(y, None, None) is y


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


def test_strided_operand_accesses():
    """A 2x2-pixel, 4-channel output box of an 8-channel, 5-column resident int8 tensor:
    pixel stride 8, row stride 40 -> four 4-byte runs at 0, 8, 40, 48 (hand-computed)."""
    regs = C.Registers()
    regs.update(_example(spec.CONV_CFG, kh=1, kw=1, cin_g=4, out_mode=0, flags=0))
    tile = _example(spec.CONV_TILE, in_sram=1000, w_sram=2000, p_sram=3000, out_sram=0,
                    sc_sram=0, in_h=2, in_w=2, in_c=4, oc=4, out_h=2, out_w=2,
                    in_px_stride=0, in_row_stride=0, out_px_stride=8, out_row_stride=40,
                    sc_px_stride=0, sc_row_stride=0)
    [write] = [a for a in tile.accesses(regs) if a.is_write]
    assert write.runs() == [(0, 4), (8, 12), (40, 44), (48, 52)]
    bad = _example(spec.CONV_TILE, in_sram=1000, w_sram=2000, p_sram=3000, out_sram=0,
                   sc_sram=0, in_h=2, in_w=2, in_c=4, oc=4, out_h=2, out_w=2,
                   in_px_stride=0, in_row_stride=0, out_px_stride=2, out_row_stride=0,
                   sc_px_stride=0, sc_row_stride=0)
    with pytest.raises(ExecutionError, match="smaller than the packed"):
        bad.accesses(regs)
