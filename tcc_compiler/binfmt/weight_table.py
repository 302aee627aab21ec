"""The layer table of ``quantized_network.bin`` (specs/weights.md): the 48-byte entry's fields
(:data:`LAYER_ENTRY_FIELDS`), its flag bits, the decoded :class:`LayerEntry`, and the checks an
entry must pass when read (:func:`decode_entry`: fields on their own, merged-layer agreement,
each blob inside the data section and decoding to its raw size). The container around it (header,
sections, writer and reader) is :mod:`tcc_compiler.binfmt.weightfile`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, fields

from tcc_compiler.binfmt.cmdfile import SECTION_ALIGN, HeaderField
from tcc_compiler.errors import FormatError
from tcc_compiler.isa import spec
from tcc_compiler.isa.wcodec import LayerKind, decode_blob
from tcc_compiler.isa.wlayout import LayerRecord

LAYER_ENTRY_FIELDS: tuple[HeaderField, ...] = (
    ("layer_index", "I", "position in the table (0, 1, ...)"),
    ("kind", "B", "LayerKind: 0 = conv, 1 = fully connected, 2 = lookup table, 3 = depthwise "
                  "conv split into kernel parts"),
    ("flags", "B", "bit0 = weights blob compressed, bit1 = params blob compressed, "
              "bit2 = merged (one blob of weights + params blocks); others 0"),
    ("reserved0", "2s", "reserved, zero"),
    ("out_channels", "I", "output channels O (params_raw_bytes = 16 * O)"),
    ("block_channels", "I", "output channels per block, 1..O (0 iff O = 0)"),
    ("weights_offset", "I", "offset of the weights blob in the data section (64-aligned)"),
    ("weights_bytes", "I", "stored size of the weights blob (compressed size if bit0)"),
    ("weights_raw_bytes", "I", "size of the int8 OHWI weights, a multiple of O"),
    ("params_offset", "I", "offset of the parameter blob (64-aligned)"),
    ("params_bytes", "I", "stored size of the parameter blob (compressed size if bit1)"),
    ("params_raw_bytes", "I", "size of the 16-byte parameter records: 16 * O"),
    ("name_hash", "I", "zlib.crc32 of the layer name (UTF-8)"),
    ("reserved1", "I", "reserved, zero"),
)
LAYER_ENTRY_BYTES = 48
#: Layer entry flag bits.
FLAG_WEIGHTS_COMPRESSED = 0x01
FLAG_PARAMS_COMPRESSED = 0x02
FLAG_MERGED = 0x04

#: The entry's struct (little-endian, :data:`LAYER_ENTRY_BYTES` bytes).
ENTRY_STRUCT = struct.Struct("<" + "".join(f for _, f, _ in LAYER_ENTRY_FIELDS))
assert ENTRY_STRUCT.size == LAYER_ENTRY_BYTES


@dataclass(frozen=True)
class LayerEntry(LayerRecord):
    """One layer table entry as read: its :class:`~tcc_compiler.isa.wlayout.LayerRecord`
    (offsets are bytes from the start of the data section; ``*_bytes`` stored sizes,
    ``*_raw_bytes`` sizes after decompression, equal when not compressed; the three flag bits
    as booleans), its position ``layer_index`` and ``name_hash`` (zlib.crc32 of the layer
    name)."""

    layer_index: int
    name_hash: int

    @property
    def flags(self) -> int:
        """The entry's ``flags`` field (bit0 weights compressed, bit1 params compressed, bit2
        merged)."""
        return entry_flags(self)


def encode_entry(i: int, rec: LayerRecord, name_hash: int) -> bytes:
    """Layer table entry ``i`` (:data:`LAYER_ENTRY_BYTES` bytes): ``rec``'s fields by their
    :data:`LAYER_ENTRY_FIELDS` names, its flag bits packed, reserved fields zero; the inverse
    of :func:`decode_entry`'s field read."""
    vals = {f.name: getattr(rec, f.name) for f in fields(LayerRecord)}
    vals.update(layer_index=i, kind=int(rec.kind), flags=entry_flags(rec), reserved0=b"",
                name_hash=name_hash, reserved1=0)
    return ENTRY_STRUCT.pack(*(vals[f] for f, _, _ in LAYER_ENTRY_FIELDS))


def entry_flags(rec: LayerRecord) -> int:
    """The layer table ``flags`` field of ``rec`` (:data:`FLAG_WEIGHTS_COMPRESSED`,
    :data:`FLAG_PARAMS_COMPRESSED`, :data:`FLAG_MERGED`)."""
    return ((FLAG_WEIGHTS_COMPRESSED if rec.weights_compressed else 0)
            | (FLAG_PARAMS_COMPRESSED if rec.params_compressed else 0)
            | (FLAG_MERGED if rec.merged else 0))


def decode_entry(data: bytes, pos: int, i: int, section: bytes, path: str) -> LayerEntry:
    """Decode and validate layer table entry ``i`` at file offset ``pos``; compressed blobs
    are decoded in full (index, every DEFLATE stream and its size).

    Raises:
        FormatError: one line naming ``path``, the entry and the field.
    """
    vals = dict(zip((f for f, _, _ in LAYER_ENTRY_FIELDS), ENTRY_STRUCT.unpack_from(data, pos)))
    where = f"{path}: layer table entry {i}"
    _check_fields(vals, i, where)
    blobs = (("weights", FLAG_WEIGHTS_COMPRESSED), ("params", FLAG_PARAMS_COMPRESSED))
    if vals["flags"] & FLAG_MERGED:
        _check_merged(vals, where)
        blobs = (("weights", FLAG_WEIGHTS_COMPRESSED),)
    for blob, bit in blobs:
        _check_blob(vals, blob, bit, section, where)
    rec = {f.name: vals[f.name] for f in fields(LayerRecord) if f.name in vals}
    flags = vals["flags"]
    rec.update(kind=LayerKind(vals["kind"]),
               weights_compressed=bool(flags & FLAG_WEIGHTS_COMPRESSED),
               params_compressed=bool(flags & FLAG_PARAMS_COMPRESSED),
               merged=bool(flags & FLAG_MERGED))
    return LayerEntry(**rec, layer_index=i, name_hash=vals["name_hash"])


def _check_fields(vals: dict, i: int, where: str) -> None:
    """Entry ``i``'s fields (``vals``) that hold on their own: index, reserved fields and
    flag bits, kind, channel block, raw sizes (FormatError: one line naming the field)."""
    if vals["layer_index"] != i:
        raise FormatError(f"{where}: field layer_index = {vals['layer_index']}, expected {i}")
    if any(vals["reserved0"]) or vals["reserved1"]:
        raise FormatError(f"{where}: reserved fields not zero")
    if vals["kind"] not in LayerKind._value2member_map_:
        raise FormatError(f"{where}: field kind = {vals['kind']} unknown")
    flags = vals["flags"]
    if flags & ~(FLAG_WEIGHTS_COMPRESSED | FLAG_PARAMS_COMPRESSED | FLAG_MERGED):
        raise FormatError(f"{where}: field flags = {flags:#x} has reserved bits set")
    o, bc = vals["out_channels"], vals["block_channels"]
    if not (1 <= bc <= o if o else bc == 0):
        raise FormatError(f"{where}: field block_channels = {bc} outside 1..out_channels ({o})")
    if vals["params_raw_bytes"] != spec.PARAM_RECORD_BYTES * o:
        raise FormatError(f"{where}: field params_raw_bytes = {vals['params_raw_bytes']}, "
                          f"expected 16 * out_channels = {spec.PARAM_RECORD_BYTES * o}")
    if (vals["weights_raw_bytes"] % o if o else vals["weights_raw_bytes"]):
        raise FormatError(f"{where}: field weights_raw_bytes = {vals['weights_raw_bytes']} is "
                          f"not a multiple of out_channels ({o})")


def _check_blob(vals: dict, blob: str, bit: int, section: bytes, where: str) -> None:
    """Blob ``blob`` ("weights"/"params", compressed when flag ``bit`` is set) lies 64-aligned
    in the data ``section``, stored verbatim or smaller and decoding to its raw size (a merged
    entry's weights + params) (FormatError: one line naming the field)."""
    flags, d_bytes = vals["flags"], len(section)
    off, size = vals[f"{blob}_offset"], vals[f"{blob}_bytes"]
    raw = vals[f"{blob}_raw_bytes"]
    if flags & FLAG_MERGED:   # the merged blob expands to weights + params
        raw += vals["params_raw_bytes"]
    if off % SECTION_ALIGN or off + size > d_bytes:
        raise FormatError(f"{where}: field {blob}_offset/{blob}_bytes = {off}/{size} "
                          f"outside the data section ({d_bytes} bytes) or not 64-aligned")
    if not flags & bit:
        if size != raw:
            raise FormatError(f"{where}: field {blob}_bytes = {size} differs from "
                              f"{blob}_raw_bytes = {raw} in an uncompressed blob")
        return
    if size >= raw:
        raise FormatError(f"{where}: field {blob}_bytes = {size} not below {blob}_raw_bytes "
                          f"= {raw} in a compressed blob")
    decode_blob(section[off:off + size], raw, vals["out_channels"], vals["block_channels"],
                f"{where}: {blob}")


def _check_merged(vals: dict, where: str) -> None:
    """The fields of a merged entry (flags bit2) that must agree: one blob, both compressed
    flags equal, no separate parameter bytes.

    Raises:
        FormatError: one line naming the entry and the field.
    """
    f = vals["flags"]
    if bool(f & FLAG_WEIGHTS_COMPRESSED) != bool(f & FLAG_PARAMS_COMPRESSED):
        raise FormatError(f"{where}: field flags = {f:#x}: a merged layer must have bit0 == bit1")
    if vals["params_offset"] != vals["weights_offset"] or vals["params_bytes"]:
        raise FormatError(f"{where}: fields params_offset/params_bytes = "
                          f"{vals['params_offset']}/{vals['params_bytes']}: a merged layer "
                          f"has params_offset = weights_offset ({vals['weights_offset']}) "
                          "and params_bytes = 0")
