"""Containers: npu_cmd.bin and quantized_network.bin round trips and corrupted-input rejection."""

from __future__ import annotations

import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tcc_compiler.isa.codec import encode_with_offsets
from tcc_compiler.binfmt import (
    LayerKind,
    WeightFileBuilder,
    read_cmd_file,
    read_weight_file,
    write_cmd_file,
)
from tcc_compiler.binfmt.cmdfile import CMD_HEADER_FIELDS, header_offsets
from tcc_compiler.binfmt.weightfile import WEIGHT_HEADER_FIELDS, name_hash
from tcc_compiler.errors import FormatError, InternalError
from tcc_compiler.isa import commands as C
from tcc_compiler.isa import spec
from tcc_compiler.isa.codec import encode_commands

SIZES = dict(sram_peak_bytes=4096, act_arena_bytes=1024, input_bytes=240, output_bytes=480)


def _program():
    return [
        C.DmaLoad(spec.dram_address(spec.Region.INPUT, 0), 0, 240, 1, 1, 0, 0, 0, 0),
        C.AddCfg(0, 0, 0, -128, 127, 1, 1, 1, wait_load=0),
        C.AddTile(0, 0, 256, 240),
        C.DmaStore(spec.dram_address(spec.Region.OUTPUT, 0), 256, 240, 1, 1, 0, 0, 0, 0,
                   wait_compute=0),
        C.End(),
    ]


def _cmd_bytes():
    return write_cmd_file(_program(), tool_version="tccc 0.1.0", **SIZES)


def _weight_bytes(compressor=None):
    b = WeightFileBuilder(compressor)
    b.add_layer("conv1", LayerKind.CONV, bytes(range(100)), bytes(32))
    b.add_layer("fc", LayerKind.FC, b"\x01" * 64, b"\x02" * 16)
    b.add_layer("empty", LayerKind.CONV, b"", b"")
    return b.build("tccc 0.1.0")


def _set_field(data: bytes, fields, name: str, value, fix_crc: bool = True) -> bytes:
    """Rewrite header field ``name`` and (optionally) recompute the header CRC."""
    off, fmt = next((o, f) for n, o, f, _ in header_offsets(fields) if n == name)
    out = bytearray(data)
    struct.pack_into("<" + fmt, out, off, value)
    if fix_crc:
        struct.pack_into("<I", out, 60, zlib.crc32(bytes(out[:60])))
    return bytes(out)


# ---------------------------------------------------------------------------------------------
# npu_cmd.bin


def test_cmd_round_trip():
    data = _cmd_bytes()
    stream, offsets = encode_with_offsets(_program())
    assert data[:4] == b"TNPC" and data[64:] == stream
    f = read_cmd_file(data)
    assert list(f.commands) == _program() and list(f.offsets) == offsets
    assert (f.version_major, f.version_minor, f.header_bytes) == (3, 0, 64)
    assert (f.sram_peak_bytes, f.act_arena_bytes, f.input_bytes, f.output_bytes) == \
        tuple(SIZES.values())
    assert f.tool_version == "tccc 0.1.0"
    assert f.disassemble().splitlines()[0].startswith("0x000040  DMA_LOAD")
    assert _cmd_bytes() == data                     # deterministic


def test_cmd_write_rejects_bad_program():
    with pytest.raises(InternalError, match="END"):
        write_cmd_file(_program()[:-1], tool_version="x", **SIZES)
    with pytest.raises(InternalError, match="tool_version"):
        write_cmd_file(_program(), tool_version="x" * 17, **SIZES)
    with pytest.raises(InternalError, match="input_bytes"):
        write_cmd_file(_program(), tool_version="x", **{**SIZES, "input_bytes": 2 ** 31})


@pytest.mark.parametrize("name,value,match", [
    ("magic", b"TNPW", "magic"),
    ("version_major", 1, r"unsupported format version 1\.0, this tccc reads 3\.x"),
    ("header_bytes", 32, "header_bytes"),
    ("header_bytes", 256, "header_bytes"),
    ("header_bytes", 128, "header_bytes = 128"),        # past the end of the short file
    ("stream_bytes", 4, "stream_bytes"),
    ("n_commands", 4, "n_commands"),
    ("n_commands", 10 ** 6, "n_commands"),
    ("stream_crc32", 0, "stream_crc32"),
    ("input_bytes", 2 ** 31, "input_bytes"),
    ("tool_version", b"\xff" * 16, "tool_version"),
    ("reserved", b"\x01", "reserved"),
])
def test_cmd_bad_header_field(name, value, match):
    bad = _set_field(_cmd_bytes(), CMD_HEADER_FIELDS, name, value)
    with pytest.raises(FormatError, match=match) as exc:
        read_cmd_file(bad, "prog/npu_cmd.bin")
    assert str(exc.value).startswith("prog/npu_cmd.bin: ") and "\n" not in str(exc.value)


def test_cmd_minor_version_accepted():
    f = read_cmd_file(_set_field(_cmd_bytes(), CMD_HEADER_FIELDS, "version_minor", 7))
    assert f.version_minor == 7


def test_cmd_header_crc_checked():
    bad = _set_field(_cmd_bytes(), CMD_HEADER_FIELDS, "sram_peak_bytes", 1, fix_crc=False)
    with pytest.raises(FormatError, match="header_crc32"):
        read_cmd_file(bad)


def test_cmd_missing_end_and_bad_command():
    for cmds, match in ((_program()[:-1], "does not end with END"),
                        ([C.End(), C.End()], "not the last")):
        stream = encode_commands(cmds)
        data = _cmd_bytes()[:64] + stream
        data = _set_field(data, CMD_HEADER_FIELDS, "stream_bytes", len(stream))
        data = _set_field(data, CMD_HEADER_FIELDS, "n_commands", len(cmds))
        data = _set_field(data, CMD_HEADER_FIELDS, "stream_crc32", zlib.crc32(stream))
        with pytest.raises(FormatError, match=match):
            read_cmd_file(data)
    data = bytearray(_cmd_bytes())
    data[64] = 0x90                                 # unknown opcode 0x0, CRCs fixed up
    stream = bytes(data[64:])
    bad = _set_field(bytes(data), CMD_HEADER_FIELDS, "stream_crc32", zlib.crc32(stream))
    with pytest.raises(FormatError, match="command 0 at byte 0x0: unknown opcode 0x0"):
        read_cmd_file(bad)


def test_cmd_truncation_and_flips_only_format_errors():
    data = _cmd_bytes()
    for cut in range(len(data)):
        with pytest.raises(FormatError):
            read_cmd_file(data[:cut])
    with pytest.raises(FormatError):
        read_cmd_file(data + b"\0" * 4)
    for pos in range(len(data)):
        bad = bytearray(data)
        bad[pos] ^= 0x10
        with pytest.raises(FormatError):
            read_cmd_file(bytes(bad))


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([n for n, f, _ in CMD_HEADER_FIELDS if f == "I"]),
       st.integers(0, 2 ** 32 - 1))
def test_cmd_fuzz_header_u32(name, value):
    data = _set_field(_cmd_bytes(), CMD_HEADER_FIELDS, name, value)
    try:
        read_cmd_file(data)
    except FormatError:
        pass


# ---------------------------------------------------------------------------------------------
# quantized_network.bin


def test_weight_round_trip():
    data = _weight_bytes()
    assert data[:4] == b"TNPW" and len(data) % 64 == 0
    w = read_weight_file(data)
    assert [e.layer_index for e in w.layers] == [0, 1, 2]
    assert w.layers[0].kind is LayerKind.CONV and w.layers[1].kind is LayerKind.FC
    conv = w.find("conv1")
    assert conv.name_hash == name_hash("conv1")
    assert w.weights_of(conv) == bytes(range(100)) and w.params_of(conv) == bytes(32)
    assert (conv.weights_offset, conv.params_offset) == (0, 128)
    fc = w.find("fc")
    assert fc.weights_offset % 64 == 0 and w.params_of(fc) == b"\x02" * 16
    assert w.tool_version == "tccc 0.1.0" and len(w.data) % 64 == 0
    with pytest.raises(KeyError):
        w.find("nope")
    assert _weight_bytes() == data


def test_weight_builder_offsets_and_errors():
    b = WeightFileBuilder()
    a = b.add_layer("a", 0, b"x" * 65, b"y" * 16)
    assert (a.weights_offset, a.params_offset) == (0, 128)
    assert [(k.offset, k.stored_bytes, k.compressed) for k in a.weight_blocks] == [(0, 65, False)]
    c = b.add_layer("b", 1, b"w" * 6, b"z" * 48, block_channels=2)
    assert (c.weights_offset, c.params_offset) == (192, 256)
    assert [(k.offset, k.raw_bytes, k.c0, k.c1) for k in c.param_blocks] == [
        (256, 32, 0, 2), (288, 16, 2, 3)]
    with pytest.raises(InternalError, match="whole"):
        b.add_layer("c", 0, b"x" * 5, b"y" * 32)      # 5 bytes for 2 channels
    with pytest.raises(InternalError, match="whole"):
        b.add_layer("c", 0, b"", b"z")                 # not a 16-byte record
    with pytest.raises(InternalError, match="block_channels"):
        b.add_layer("c", 0, b"x" * 4, b"y" * 32, block_channels=3)
    with pytest.raises(InternalError, match="duplicate"):
        b.add_layer("a", 0, b"", b"")
    with pytest.raises(InternalError, match="kind"):
        b.add_layer("c", 9, b"", b"")
    empty = read_weight_file(WeightFileBuilder().build("t"))
    assert empty.layers == () and empty.data == b""


@pytest.mark.parametrize("name,value,match", [
    ("magic", b"TNPC", "magic"),
    ("version_major", 2, r"unsupported format version 2\.1, this tccc reads 3\.x"),
    ("n_layers", 4, "table_bytes"),
    ("n_layers", 2 ** 32 - 1, "table_bytes"),
    ("table_offset", 0, "table_offset"),
    ("table_offset", 65, "table_offset"),
    ("data_offset", 64, "data_offset"),
    ("data_bytes", 64, "data_bytes"),
    ("data_bytes", 2 ** 32 - 1, "data_bytes"),
    ("data_crc32", 1, "data_crc32"),
    ("reserved", b"\x00\x01", "reserved"),
])
def test_weight_bad_header_field(name, value, match):
    bad = _set_field(_weight_bytes(), WEIGHT_HEADER_FIELDS, name, value)
    with pytest.raises(FormatError, match=match) as exc:
        read_weight_file(bad, "q.bin")
    assert str(exc.value).startswith("q.bin: ")


@pytest.mark.parametrize("offset_in_entry,value,match", [
    (0, 5, "layer_index"), (4, 7, "kind"), (5, 8, "flags"), (6, 1, "reserved"),
    (44, 1, "reserved"), (8, 2, "params_raw_bytes"), (12, 2, "block_channels"),
    (12, 0, "block_channels"), (16, 64 * 1000, "weights_offset"),
    (20, 10 ** 6, "weights_offset"), (20, 63, "weights_bytes = 63 differs"),
    (24, 63, "weights_raw_bytes"), (28, 3, "params_offset"),
    (36, 32, "params_raw_bytes"), (5, 1, "not below"),
])
def test_weight_bad_table_entry(offset_in_entry, value, match):
    data = bytearray(_weight_bytes())
    pos = 64 + 48 + offset_in_entry                 # entry 1
    if offset_in_entry in (4, 5, 6):
        data[pos] = value
    else:
        struct.pack_into("<I", data, pos, value)
    with pytest.raises(FormatError, match=rf"layer table entry 1: .*{match}"):
        read_weight_file(bytes(data))


def test_weight_truncation_and_flips_only_format_errors():
    data = _weight_bytes()
    for cut in range(len(data)):
        with pytest.raises(FormatError):
            read_weight_file(data[:cut])
    for pos in list(range(0, 64)) + list(range(256, len(data), 7)):   # header and data
        bad = bytearray(data)
        bad[pos] ^= 0x01
        with pytest.raises(FormatError):
            read_weight_file(bytes(bad))


@settings(max_examples=200, deadline=None)
@given(st.integers(64, 64 + 3 * 48 - 1), st.integers(0, 255))
def test_weight_fuzz_table_bytes(pos, value):
    data = bytearray(_weight_bytes())
    data[pos] = value
    try:
        read_weight_file(bytes(data))
    except FormatError:
        pass


# ---------------------------------------------------------------------------------------------
# merged layers (flags bit2, format 3.1): one blob of [block weights | block records] blocks


@pytest.mark.parametrize("compress", [False, True])
def test_merged_layer_round_trip_and_blocks(compress):
    """A merged layer's blob holds each block's weights then its records; the reader gives
    back the same weights and params as a separate-blob layer; with compression each block is
    one DEFLATE stream expanding to weights + records."""
    from tcc_compiler.isa.wcodec import BlockCompressor, inflate_exact
    from tcc_compiler.isa.wlayout import merge_blocks, split_merged

    w = bytes(range(6)) * 40 + bytes(240)            # O = 6 channels of 80 bytes
    p = b"".join(bytes([k]) * 16 for k in range(6))  # records 0.., 1.., ...
    b = WeightFileBuilder(BlockCompressor() if compress else None)
    bl = b.add_layer("m", LayerKind.CONV, w, p, block_channels=4, merged=True)
    b.add_layer("s", LayerKind.CONV, w, p, block_channels=4)
    wf = read_weight_file(b.build("t"))
    m, s = wf.layers
    assert m.merged and not s.merged and m.params_bytes == 0
    assert m.params_offset == m.weights_offset and bl.merged and bl.param_blocks == ()
    assert wf.weights_of(m) == wf.weights_of(s) == w and wf.params_of(m) == wf.params_of(s) == p
    assert [(k.c0, k.c1, k.raw_bytes) for k in bl.weight_blocks] == [(0, 4, 384), (4, 6, 192)]
    raw = merge_blocks(w, p, 6, 4)
    assert raw[320:384] == p[:64] and split_merged(raw, len(w), 6, 4) == (w, p)
    data = wf.data
    for k in bl.weight_blocks:   # what one DMA_LOAD(_Z) per block brings to SRAM
        stored = data[k.offset:k.offset + k.stored_bytes]
        got = inflate_exact(stored, k.raw_bytes, "t") if k.compressed else stored
        n = (k.c1 - k.c0) * 80
        assert got == w[k.c0 * 80:k.c0 * 80 + n] + p[k.c0 * 16:k.c1 * 16]
    assert m.weights_compressed == m.params_compressed == compress


@pytest.mark.parametrize("offset_in_entry,value,match", [
    (5, 0x05, "bit0 == bit1"), (32, 16, "params_bytes"), (28, 0, "params_offset"),
])
def test_merged_entry_rejected(offset_in_entry, value, match):
    """A merged entry whose compressed flags differ or that names a parameter blob of its
    own is a FormatError naming the field."""
    from tcc_compiler.isa.wcodec import BlockCompressor

    b = WeightFileBuilder(BlockCompressor())
    b.add_layer("a", LayerKind.CONV, bytes(64), bytes(32))
    b.add_layer("m", LayerKind.CONV, bytes(200) + bytes(range(200)), bytes(range(64)),
                block_channels=2, merged=True)
    data = bytearray(b.build("t"))
    pos = 64 + 48 + offset_in_entry                 # entry 1 (merged, compressed: flags 7)
    assert data[64 + 48 + 5] == 0x07
    if offset_in_entry == 5:
        data[pos] = value
    else:
        struct.pack_into("<I", data, pos, value)
    with pytest.raises(FormatError, match=rf"layer table entry 1: .*{match}"):
        read_weight_file(bytes(data))
