"""``quantized_network.bin``: weights and per-channel parameters (specs/weights.md).

Layout (little-endian, every section 64-byte aligned): a 64-byte header
(:data:`WEIGHT_HEADER_FIELDS`), a layer table of 32-byte entries (:data:`LAYER_ENTRY_FIELDS`) at
``table_offset``, and the data section at ``data_offset`` running to the end of the file. The data
section is the NPU's DRAM region WEIGHTS: a WEIGHTS-region address in a command is an offset into
it. Each blob (a layer's OHWI int8 weights, or its 16-byte parameter records) starts 64-aligned.
"""

from __future__ import annotations

import enum
import struct
import zlib
from dataclasses import dataclass

from tcc_compiler.binfmt.cmdfile import (
    FORMAT_MAJOR,
    FORMAT_MINOR,
    HEADER_BYTES,
    SECTION_ALIGN,
    HeaderField,
    align_up,
    encode_tool_version,
    header_struct,
    pack_header,
    unpack_header,
)
from tcc_compiler.errors import FormatError, InternalError
from tcc_compiler.isa import spec

WEIGHT_MAGIC = b"TNPW"

WEIGHT_HEADER_FIELDS: tuple[HeaderField, ...] = (
    ("magic", "4s", 'b"TNPW"'),
    ("version_major", "H", "format major version (2); readers reject other majors"),
    ("version_minor", "H", "format minor version (0); readers accept any minor"),
    ("header_bytes", "I", "header size, a multiple of 64 (64)"),
    ("n_layers", "I", "entries in the layer table"),
    ("table_offset", "I", "file offset of the layer table (64-aligned, >= header_bytes)"),
    ("table_bytes", "I", "32 * n_layers"),
    ("data_offset", "I", "file offset of the data section (64-aligned, after the table)"),
    ("data_bytes", "I", "data section size (multiple of 64, <= 2**30); the file ends there"),
    ("data_crc32", "I", "zlib.crc32 of the data section"),
    ("tool_version", "16s", "ASCII version of the tool that wrote the file, NUL-padded"),
    ("reserved", "8s", "reserved, zero"),
    ("header_crc32", "I", "zlib.crc32 of header bytes 0..59"),
)

LAYER_ENTRY_FIELDS: tuple[HeaderField, ...] = (
    ("layer_index", "I", "position in the table (0, 1, ...)"),
    ("kind", "B", "LayerKind: 0 = conv, 1 = fully connected"),
    ("reserved0", "3s", "reserved, zero"),
    ("weights_offset", "I", "offset of the int8 OHWI weights in the data section (64-aligned)"),
    ("weights_bytes", "I", "size of the weights blob"),
    ("params_offset", "I", "offset of the 16-byte parameter records (64-aligned)"),
    ("params_bytes", "I", "size of the parameter blob (16 * output channels)"),
    ("name_hash", "I", "zlib.crc32 of the layer name (UTF-8)"),
    ("reserved1", "I", "reserved, zero"),
)
LAYER_ENTRY_BYTES = 32

_HEADER = header_struct(WEIGHT_HEADER_FIELDS)
_ENTRY = struct.Struct("<" + "".join(f for _, f, _ in LAYER_ENTRY_FIELDS))
assert _ENTRY.size == LAYER_ENTRY_BYTES


class LayerKind(enum.IntEnum):
    """Kind of a weighted layer (the ``kind`` byte of a layer entry)."""

    CONV = 0
    FC = 1


def name_hash(name: str) -> int:
    """The ``name_hash`` of a layer name: zlib.crc32 of its UTF-8 bytes."""
    return zlib.crc32(name.encode("utf-8"))


@dataclass(frozen=True)
class LayerEntry:
    """One layer table entry. Offsets are bytes from the start of the data section."""

    layer_index: int
    kind: LayerKind
    weights_offset: int
    weights_bytes: int
    params_offset: int
    params_bytes: int
    name_hash: int


@dataclass(frozen=True)
class WeightFile:
    """A decoded ``quantized_network.bin``.

    Attributes:
        path: file name used in messages.
        version_major, version_minor: format version.
        tool_version: version string of the writer.
        data_crc32: CRC-32 of the data section.
        layers: the layer table.
        data: the data section (the DRAM WEIGHTS region).
    """

    path: str
    version_major: int
    version_minor: int
    tool_version: str
    data_crc32: int
    layers: tuple[LayerEntry, ...]
    data: bytes

    def find(self, name: str) -> LayerEntry:
        """The first entry whose name_hash matches ``name``.

        Raises:
            KeyError: no such layer.
        """
        h = name_hash(name)
        for e in self.layers:
            if e.name_hash == h:
                return e
        raise KeyError(name)

    def weights_of(self, entry: LayerEntry) -> bytes:
        """The weights blob of ``entry``."""
        return self.data[entry.weights_offset:entry.weights_offset + entry.weights_bytes]

    def params_of(self, entry: LayerEntry) -> bytes:
        """The parameter blob of ``entry``."""
        return self.data[entry.params_offset:entry.params_offset + entry.params_bytes]


class WeightFileBuilder:
    """Accumulates layer blobs and serialises ``quantized_network.bin``.

    Blobs are appended to the data section in call order, each starting 64-byte aligned (zero
    padding between), so the output is deterministic.
    """

    def __init__(self) -> None:
        self._entries: list[LayerEntry] = []
        self._names: set[str] = set()
        self._data = bytearray()

    def _append(self, blob: bytes) -> int:
        off = len(self._data)
        self._data += blob
        self._data += bytes(align_up(len(self._data)) - len(self._data))
        return off

    def add_layer(self, name: str, kind: LayerKind | int, weights: bytes,
                  params: bytes) -> tuple[int, int]:
        """Add a layer's weights (int8 OHWI bytes) and parameter records (16 bytes per channel).

        Returns:
            (weights_offset, params_offset): byte offsets into the data section, i.e. the
            WEIGHTS-region DRAM offsets commands use to load them.

        Raises:
            InternalError: duplicate name, unknown kind, or the data section would exceed 2**30.
        """
        if name in self._names:
            raise InternalError(f"quantized_network.bin: duplicate layer name {name!r}")
        try:
            kind = LayerKind(kind)
        except ValueError:
            raise InternalError(f"quantized_network.bin: layer {name!r}: unknown kind {kind}"
                                ) from None
        size = align_up(len(self._data) + align_up(len(weights)) + len(params))
        if size > spec.REGION_OFFSET_MASK + 1:
            raise InternalError(f"quantized_network.bin: layer {name!r} makes the data section "
                                "exceed the 1 GiB WEIGHTS region")
        w_off = self._append(bytes(weights))
        p_off = self._append(bytes(params))
        self._names.add(name)
        self._entries.append(LayerEntry(len(self._entries), kind, w_off, len(weights), p_off,
                                        len(params), name_hash(name)))
        return w_off, p_off

    @property
    def data_bytes(self) -> int:
        """Current size of the data section (bytes, multiple of 64)."""
        return len(self._data)

    def build(self, tool_version: str) -> bytes:
        """Serialise header, layer table and data section.

        Raises:
            InternalError: ``tool_version`` is not <= 16 ASCII characters.
        """
        table = b"".join(_ENTRY.pack(e.layer_index, int(e.kind), b"", e.weights_offset,
                                     e.weights_bytes, e.params_offset, e.params_bytes,
                                     e.name_hash, 0) for e in self._entries)
        table_offset = HEADER_BYTES
        data_offset = align_up(table_offset + len(table))
        data = bytes(self._data)
        header = pack_header(_HEADER, WEIGHT_HEADER_FIELDS, {
            "magic": WEIGHT_MAGIC, "version_major": FORMAT_MAJOR,
            "version_minor": FORMAT_MINOR, "header_bytes": HEADER_BYTES,
            "n_layers": len(self._entries), "table_offset": table_offset,
            "table_bytes": len(table), "data_offset": data_offset, "data_bytes": len(data),
            "data_crc32": zlib.crc32(data), "tool_version": encode_tool_version(tool_version),
        })
        pad = bytes(data_offset - table_offset - len(table))
        return header + table + pad + data


def read_weight_file(data: bytes, path: str = "quantized_network.bin") -> WeightFile:
    """Decode and validate ``quantized_network.bin`` bytes.

    Raises:
        FormatError: bad magic/version/CRC, sections out of bounds or misaligned, non-zero
            padding/reserved bytes, or a table entry pointing outside the data section (one line
            naming ``path`` and the field).
    """
    data = bytes(data)
    h = unpack_header(data, _HEADER, WEIGHT_HEADER_FIELDS, WEIGHT_MAGIC, path)
    n, t_off, t_bytes = h["n_layers"], h["table_offset"], h["table_bytes"]
    d_off, d_bytes = h["data_offset"], h["data_bytes"]
    if t_off < h["header_bytes"] or t_off % SECTION_ALIGN:
        raise FormatError(f"{path}: header field table_offset = {t_off} invalid (64-aligned, "
                          f">= header_bytes {h['header_bytes']})")
    if t_bytes != n * LAYER_ENTRY_BYTES:
        raise FormatError(f"{path}: header field table_bytes = {t_bytes}, expected 32 * "
                          f"n_layers = {n * LAYER_ENTRY_BYTES}")
    if d_off % SECTION_ALIGN or d_off < t_off + t_bytes:
        raise FormatError(f"{path}: header field data_offset = {d_off} invalid (64-aligned, "
                          f">= end of table {t_off + t_bytes})")
    if d_off + d_bytes != len(data):
        raise FormatError(f"{path}: header fields data_offset + data_bytes = {d_off + d_bytes} "
                          f"but the file is {len(data)} bytes (truncated or padded)")
    if d_bytes % SECTION_ALIGN:
        raise FormatError(f"{path}: header field data_bytes = {d_bytes} not a multiple of 64")
    if d_bytes > spec.REGION_OFFSET_MASK + 1:
        raise FormatError(f"{path}: header field data_bytes = {d_bytes} exceeds the WEIGHTS "
                          "region (2**30 bytes)")
    if any(data[h["header_bytes"]:t_off]) or any(data[t_off + t_bytes:d_off]):
        raise FormatError(f"{path}: padding between sections is not zero")
    section = data[d_off:]
    crc = zlib.crc32(section)
    if crc != h["data_crc32"]:
        raise FormatError(f"{path}: header field data_crc32 is {h['data_crc32']:#010x}, data "
                          f"section gives {crc:#010x} (corrupted data)")
    layers = []
    for i in range(n):
        vals = dict(zip((f for f, _, _ in LAYER_ENTRY_FIELDS),
                        _ENTRY.unpack_from(data, t_off + i * LAYER_ENTRY_BYTES)))
        where = f"{path}: layer table entry {i}"
        if vals["layer_index"] != i:
            raise FormatError(f"{where}: field layer_index = {vals['layer_index']}, expected {i}")
        if any(vals["reserved0"]) or vals["reserved1"]:
            raise FormatError(f"{where}: reserved fields not zero")
        if vals["kind"] not in LayerKind._value2member_map_:
            raise FormatError(f"{where}: field kind = {vals['kind']} unknown")
        for blob in ("weights", "params"):
            off, size = vals[f"{blob}_offset"], vals[f"{blob}_bytes"]
            if off % SECTION_ALIGN or off + size > d_bytes:
                raise FormatError(f"{where}: field {blob}_offset/{blob}_bytes = {off}/{size} "
                                  f"outside the data section ({d_bytes} bytes) or not 64-aligned")
        layers.append(LayerEntry(i, LayerKind(vals["kind"]), vals["weights_offset"],
                                 vals["weights_bytes"], vals["params_offset"],
                                 vals["params_bytes"], vals["name_hash"]))
    return WeightFile(path=path, version_major=h["version_major"],
                      version_minor=h["version_minor"], tool_version=h["tool_version"],
                      data_crc32=h["data_crc32"], layers=tuple(layers), data=section)
