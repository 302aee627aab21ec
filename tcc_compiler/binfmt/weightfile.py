"""``quantized_network.bin``: weights and per-channel parameters (specs/weights.md).

Layout (little-endian, every section 64-byte aligned): a 64-byte header
(:data:`WEIGHT_HEADER_FIELDS`), a layer table of 48-byte entries (:data:`LAYER_ENTRY_FIELDS`) at
``table_offset``, and the data section at ``data_offset`` running to the end of the file. The data
section is the NPU's DRAM region WEIGHTS: a WEIGHTS-region address in a command is an offset into
it. Each blob (a layer's OHWI int8 weights, or its 16-byte parameter records) starts 64-aligned;
a blob is either raw or compressed per output-channel block (:mod:`tcc_compiler.isa.wcodec`),
which DMA_LOAD_Z expands on the way to SRAM. The scheduler lays the data section out
(:mod:`tcc_compiler.isa.wlayout`); this module writes and reads the container (header,
sections, CRCs); the layer table's entry format and its checks are
:mod:`tcc_compiler.binfmt.weight_table`'s.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from tcc_compiler.binfmt.cmdfile import (
    HEADER_BYTES,
    SECTION_ALIGN,
    HeaderField,
    align_up,
    encode_tool_version,
    header_struct,
    pack_header,
    unpack_header,
)
from tcc_compiler.errors import FormatError
from tcc_compiler.isa import spec
from tcc_compiler.isa.wcodec import BlockCompressor, LayerKind, channel_blocks, decode_blob
from tcc_compiler.isa.wlayout import (LayerBlobs, LayersSizes, WeightLayout, WeightLayoutBuilder,
                                      split_merged)

# the layer table (its entry format, flags, LayerEntry and entry checks): re-exported, as
# callers (tools/gen_isa_doc.py, tests, the executor) import them from here
from tcc_compiler.binfmt.weight_table import (  # noqa: F401
    ENTRY_STRUCT,
    FLAG_MERGED,
    FLAG_PARAMS_COMPRESSED,
    FLAG_WEIGHTS_COMPRESSED,
    LAYER_ENTRY_BYTES,
    LAYER_ENTRY_FIELDS,
    LayerEntry,
    decode_entry,
    encode_entry,
)

WEIGHT_MAGIC = b"TNPW"
#: Format version of quantized_network.bin (its own since 3.0; 2.0 shared npu_cmd.bin's and
#: had no compression and 32-byte layer entries).
WEIGHT_FORMAT_MAJOR = 3
#: Minor 1 added merged layers (flags bit2); a 3.0 file is a 3.1 file without them.
WEIGHT_FORMAT_MINOR = 1

WEIGHT_HEADER_FIELDS: tuple[HeaderField, ...] = (
    ("magic", "4s", 'b"TNPW"'),
    ("version_major", "H", "format major version (3); readers reject other majors"),
    ("version_minor", "H", "format minor version (1); readers accept any minor"),
    ("header_bytes", "I", "header size, a multiple of 64 (64)"),
    ("n_layers", "I", "entries in the layer table"),
    ("table_offset", "I", "file offset of the layer table (64-aligned, >= header_bytes)"),
    ("table_bytes", "I", "48 * n_layers"),
    ("data_offset", "I", "file offset of the data section (64-aligned, after the table)"),
    ("data_bytes", "I", "data section size (multiple of 64, <= 2**30); the file ends there"),
    ("data_crc32", "I", "zlib.crc32 of the data section"),
    ("tool_version", "16s", "ASCII version of the tool that wrote the file, NUL-padded"),
    ("reserved", "8s", "reserved, zero"),
    ("header_crc32", "I", "zlib.crc32 of header bytes 0..59"),
)


_HEADER = header_struct(WEIGHT_HEADER_FIELDS)


def name_hash(name: str) -> int:
    """The ``name_hash`` of a layer name: zlib.crc32 of its UTF-8 bytes."""
    return zlib.crc32(name.encode("utf-8"))


def _merged_record(e: LayerEntry, pos: int) -> int | None:
    """The parameter record (output channel) at byte ``pos`` of the raw merged blob of ``e``
    (each channel block's weights, then its records), or None when ``pos`` is a weight byte."""
    per = e.weights_raw_bytes // e.out_channels if e.out_channels else 0
    start = 0
    for c0, c1 in channel_blocks(e.out_channels, e.block_channels):
        end = start + (c1 - c0) * (per + spec.PARAM_RECORD_BYTES)
        if pos < end:
            at = pos - start - (c1 - c0) * per
            return c0 + at // spec.PARAM_RECORD_BYTES if at >= 0 else None
        start = end
    return None


@dataclass(frozen=True)
class WeightFile(LayersSizes):
    """A decoded ``quantized_network.bin``.

    Attributes:
        path: file name used in messages.
        version_major, version_minor: format version.
        tool_version: version string of the writer.
        data_crc32: CRC-32 of the data section.
        layers: the layer table.
        data: the data section (the DRAM WEIGHTS region), as stored (blocks compressed).
        data_offset: file offset of the data section (bytes): WEIGHTS-region offset ``x`` is
            file byte ``data_offset + x``.
    """

    path: str
    version_major: int
    version_minor: int
    tool_version: str
    data_crc32: int
    layers: tuple[LayerEntry, ...]
    data: bytes
    data_offset: int = 0

    def locate(self, offset: int) -> str:
        """Where WEIGHTS-region byte ``offset`` lies, for messages: ``"<path>: byte N (layer
        table entry L, its parameter record R)"``, naming the blob (weights, params, or a
        merged or compressed blob, whose records are not at fixed places) holding it, or no
        entry when none does (padding)."""
        at = f"{self.path}: byte {self.data_offset + offset}"
        for e in self.layers:
            for blob, start, size in (("weights", e.weights_offset, e.weights_bytes),
                                      ("params", e.params_offset, e.params_bytes)):
                if not start <= offset < start + size:
                    continue
                rec = None
                if blob == "params" and not e.params_compressed:
                    rec = (offset - start) // spec.PARAM_RECORD_BYTES
                elif e.merged and not e.weights_compressed:
                    rec = _merged_record(e, offset - start)
                if rec is not None:
                    return f"{at} (layer table entry {e.layer_index}, its parameter record {rec})"
                kind = ("merged weights + params blob" if e.merged else
                        f"{blob} blob")
                packed = " (compressed)" if (e.weights_compressed if blob == "weights"
                                             else e.params_compressed) else ""
                return f"{at} (layer table entry {e.layer_index}, its {kind}{packed})"
        return f"{at} (in no layer's blob)"

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

    def stored_weights_of(self, entry: LayerEntry) -> bytes:
        """The weights blob of ``entry`` as stored (block index + streams if compressed)."""
        return self.data[entry.weights_offset:entry.weights_offset + entry.weights_bytes]

    def stored_params_of(self, entry: LayerEntry) -> bytes:
        """The parameter blob of ``entry`` as stored."""
        return self.data[entry.params_offset:entry.params_offset + entry.params_bytes]

    def weights_of(self, entry: LayerEntry) -> bytes:
        """The raw int8 OHWI weights of ``entry`` (decompressed; ``weights_raw_bytes`` bytes).

        Raises:
            FormatError: a compressed block does not decode (cannot happen for a file that
                :func:`read_weight_file` accepted).
        """
        if entry.merged:
            return self._split(entry)[0]
        blob = self.stored_weights_of(entry)
        if not entry.weights_compressed:
            return blob
        return decode_blob(blob, entry.weights_raw_bytes, entry.out_channels,
                           entry.block_channels, f"{self.path}: layer {entry.layer_index} "
                           "weights")

    def _split(self, entry: LayerEntry) -> tuple[bytes, bytes]:
        """(weights, params) of a merged entry, decompressed."""
        blob = self.stored_weights_of(entry)
        if entry.weights_compressed:
            blob = decode_blob(blob, entry.raw_bytes, entry.out_channels,
                               entry.block_channels,
                               f"{self.path}: layer {entry.layer_index} merged blob")
        return split_merged(blob, entry.weights_raw_bytes, entry.out_channels,
                            entry.block_channels)

    def params_of(self, entry: LayerEntry) -> bytes:
        """The raw 16-byte parameter records of ``entry`` (decompressed).

        Raises:
            FormatError: as :meth:`weights_of`.
        """
        if entry.merged:
            return self._split(entry)[1]
        blob = self.stored_params_of(entry)
        if not entry.params_compressed:
            return blob
        return decode_blob(blob, entry.params_raw_bytes, entry.out_channels,
                           entry.block_channels, f"{self.path}: layer {entry.layer_index} "
                           "params")


class WeightFileBuilder:
    """Accumulates layer blobs and serialises ``quantized_network.bin``: a
    :class:`~tcc_compiler.isa.wlayout.WeightLayoutBuilder` (the data section) plus
    :func:`write_weight_file` (the container), for callers that build a file directly.

    Args:
        compressor: see :class:`~tcc_compiler.isa.wlayout.WeightLayoutBuilder`.
    """

    def __init__(self, compressor: BlockCompressor | None = None) -> None:
        self._layout = WeightLayoutBuilder(compressor)

    def add_layer(self, name: str, kind: LayerKind | int, weights: bytes, params: bytes, *,
                  block_channels: int | None = None, merged: bool = False) -> LayerBlobs:
        """Add a layer: :meth:`WeightLayoutBuilder.add_layer` (same arguments, result and
        errors)."""
        return self._layout.add_layer(name, kind, weights, params,
                                      block_channels=block_channels, merged=merged)

    @property
    def data_bytes(self) -> int:
        """Current size of the data section (bytes, multiple of 64)."""
        return self._layout.data_bytes

    @property
    def raw_bytes(self) -> int:
        """Weights + params bytes of the layers added so far, before compression."""
        return self._layout.raw_bytes

    @property
    def stored_bytes(self) -> int:
        """Weights + params bytes of the layers added so far, as stored (padding excluded)."""
        return self._layout.stored_bytes

    def build(self, tool_version: str) -> bytes:
        """Serialise header, layer table and data section (:func:`write_weight_file`).

        Raises:
            InternalError: ``tool_version`` is not <= 16 ASCII characters.
        """
        return write_weight_file(self._layout.build(), tool_version)


def write_weight_file(layout: WeightLayout, tool_version: str) -> bytes:
    """``quantized_network.bin`` of a scheduled WEIGHTS region: header, one layer table entry
    per :class:`~tcc_compiler.isa.wlayout.LayerWeights` (in order) and ``layout.data`` as
    the data section.

    Raises:
        InternalError: ``tool_version`` is not <= 16 ASCII characters.
    """
    table = b"".join(encode_entry(i, e, name_hash(e.name)) for i, e in enumerate(layout.layers))
    table_offset = HEADER_BYTES
    data_offset = align_up(table_offset + len(table))
    data = layout.data
    header = pack_header(_HEADER, WEIGHT_HEADER_FIELDS, {
        "magic": WEIGHT_MAGIC, "version_major": WEIGHT_FORMAT_MAJOR,
        "version_minor": WEIGHT_FORMAT_MINOR, "header_bytes": HEADER_BYTES,
        "n_layers": len(layout.layers), "table_offset": table_offset,
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
    h = unpack_header(data, _HEADER, WEIGHT_HEADER_FIELDS, WEIGHT_MAGIC, path,
                      major_expected=WEIGHT_FORMAT_MAJOR)
    if h["version_minor"] <= WEIGHT_FORMAT_MINOR and any(h["reserved"]):
        raise FormatError(f"{path}: header field reserved is not zero")   # zero up to 3.1
    n, t_off, t_bytes = h["n_layers"], h["table_offset"], h["table_bytes"]
    d_off, d_bytes = h["data_offset"], h["data_bytes"]
    if t_off < h["header_bytes"] or t_off % SECTION_ALIGN:
        raise FormatError(f"{path}: header field table_offset = {t_off} invalid (64-aligned, "
                          f">= header_bytes {h['header_bytes']})")
    if t_bytes != n * LAYER_ENTRY_BYTES:
        raise FormatError(f"{path}: header field table_bytes = {t_bytes}, expected 48 * "
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
    layers = [decode_entry(data, t_off + i * LAYER_ENTRY_BYTES, i, section, path)
              for i in range(n)]
    return WeightFile(path=path, version_major=h["version_major"],
                      version_minor=h["version_minor"], tool_version=h["tool_version"],
                      data_crc32=h["data_crc32"], layers=tuple(layers), data=section,
                      data_offset=d_off)


def compression_summary(data: bytes, path: str = "quantized_network.bin") -> dict:
    """Compression figures of a ``quantized_network.bin`` (header and table checked, blobs
    not decoded: for files this process just built; use :func:`read_weight_file` otherwise).

    Returns:
        ``{"codec": "deflate-raw" | "none", "raw_bytes", "stored_bytes", "ratio",
        "compressed_layers", "file_bytes"}``: raw/stored = weights + params bytes of all
        layers before/after compression (padding excluded), ratio = stored / raw (1.0 when
        empty).

    Raises:
        FormatError: bad header or table (see :func:`read_weight_file`).
    """
    h = unpack_header(data, _HEADER, WEIGHT_HEADER_FIELDS, WEIGHT_MAGIC, path,
                      major_expected=WEIGHT_FORMAT_MAJOR)
    if h["table_offset"] + h["table_bytes"] > len(data) \
            or h["table_bytes"] != h["n_layers"] * LAYER_ENTRY_BYTES:
        raise FormatError(f"{path}: header fields table_offset/table_bytes outside the file")
    names = [f for f, _, _ in LAYER_ENTRY_FIELDS]
    raw = stored = n_comp = 0
    for i in range(h["n_layers"]):
        pos = h["table_offset"] + i * LAYER_ENTRY_BYTES
        e = dict(zip(names, ENTRY_STRUCT.unpack_from(data, pos)))
        raw += e["weights_raw_bytes"] + e["params_raw_bytes"]
        stored += e["weights_bytes"] + e["params_bytes"]
        n_comp += bool(e["flags"] & (FLAG_WEIGHTS_COMPRESSED | FLAG_PARAMS_COMPRESSED))
    return {"codec": "deflate-raw" if n_comp else "none", "raw_bytes": raw,
            "stored_bytes": stored, "ratio": round(stored / raw, 4) if raw else 1.0,
            "compressed_layers": n_comp, "file_bytes": len(data)}
