"""The layout of the DRAM WEIGHTS region (specs/weights.md): every weighted layer's weight and
parameter blobs, 64-aligned, block by block, at the offsets the load commands address.

The scheduler drives :class:`WeightLayoutBuilder`: it decides the channel blocks (one weight
DMA each) and the layer order, and the per-block codec (:mod:`tcc_compiler.isa.wcodec`) gives
each block's stored size. The result is a frozen :class:`WeightLayout` in the scheduler's
``Program``, from which :func:`tcc_compiler.binfmt.weightfile.write_weight_file` writes
``quantized_network.bin`` (header and layer table around this data section) without deciding
anything. Being the format of a DRAM region the commands address, it sits with the ISA, below
both the scheduler and the containers.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from tcc_compiler.errors import InternalError
from tcc_compiler.isa import spec
from tcc_compiler.isa.wcodec import (BLOB_ALIGN, Block, BlockCompressor, LayerKind,
                                     blob_chunks, channel_blocks, encode_blob)


def _align(n: int) -> int:
    """``n`` rounded up to a multiple of :data:`~tcc_compiler.isa.wcodec.BLOB_ALIGN`."""
    return -(-n // BLOB_ALIGN) * BLOB_ALIGN


@dataclass(frozen=True)
class LayerBlobs:
    """Where :meth:`WeightLayoutBuilder.add_layer` put a layer (offsets into the region).

    Attributes:
        weights_offset, params_offset: blob offsets (64-aligned; equal when ``merged``).
        weight_blocks, param_blocks: one :class:`~tcc_compiler.isa.wcodec.Block` per channel
            block, offsets absolute in the region. A block with ``compressed`` is loaded with
            DMA_LOAD_Z (``stored_bytes`` -> ``raw_bytes``), else with DMA_LOAD. When
            ``merged``, ``param_blocks`` is empty and weight block ``k`` holds the block's
            weights followed by its parameter records (:func:`merge_blocks`): one load brings
            both, the records at ``(c1 - c0) * weight bytes per channel`` after the weights.
        merged: the layer's weights and params share one blob (specs/weights.md, "Merged
            layers").
    """

    weights_offset: int
    params_offset: int
    weight_blocks: tuple[Block, ...]
    param_blocks: tuple[Block, ...]
    merged: bool = False


class LayerSizes:
    """A weighted layer's byte counts from its four size fields (``weights_bytes``,
    ``weights_raw_bytes``, ``params_bytes``, ``params_raw_bytes``, bytes): one definition for
    the region's :class:`LayerWeights` and the weight file's layer table entries
    (:class:`tcc_compiler.binfmt.weight_table.LayerEntry`), both :class:`LayerRecord`."""

    __slots__ = ()

    @property
    def raw_bytes(self) -> int:
        """Weights + params bytes after decompression."""
        return self.weights_raw_bytes + self.params_raw_bytes

    @property
    def stored_bytes(self) -> int:
        """Weights + params bytes as stored."""
        return self.weights_bytes + self.params_bytes


class LayersSizes:
    """The byte counts of all ``self.layers`` (:class:`LayerSizes`), padding excluded: one
    definition for :class:`WeightLayout` and the read weight file
    (:class:`tcc_compiler.binfmt.weightfile.WeightFile`)."""

    __slots__ = ()

    @property
    def raw_bytes(self) -> int:
        """Weights + params bytes of all layers after decompression."""
        return sum(e.raw_bytes for e in self.layers)

    @property
    def stored_bytes(self) -> int:
        """Weights + params bytes of all layers as stored (padding excluded)."""
        return sum(e.stored_bytes for e in self.layers)


@dataclass(frozen=True)
class LayerRecord(LayerSizes):
    """A weighted layer's record in the WEIGHTS region, the fields a weight file layer table
    entry holds besides its identity (specs/weights.md, "Layer table"): one definition for the
    layout being built (:class:`LayerWeights`) and the entry read back
    (:class:`tcc_compiler.binfmt.weight_table.LayerEntry`).

    Attributes:
        kind: :class:`~tcc_compiler.isa.wcodec.LayerKind`.
        out_channels: O. block_channels: output channels per block (1..O, 0 iff O = 0).
        weights_offset, weights_bytes, weights_raw_bytes: the int8 OHWI weights blob: offset
            in the region (data section), stored size, size after decompression (bytes).
        params_offset, params_bytes, params_raw_bytes: the same for the 16-byte records.
        weights_compressed, params_compressed: the blob is block-compressed (entry flags
            bit0, bit1).
        merged: one blob at ``weights_offset`` holds both, block by block
            (:func:`merge_blocks`; entry flags bit2); then ``params_offset ==
            weights_offset``, ``params_bytes == 0``, ``weights_bytes`` is the merged blob's
            stored size and both compressed flags are the merged blob's.
    """

    kind: LayerKind
    out_channels: int
    block_channels: int
    weights_offset: int
    weights_bytes: int
    weights_raw_bytes: int
    params_offset: int
    params_bytes: int
    params_raw_bytes: int
    weights_compressed: bool
    params_compressed: bool
    merged: bool


@dataclass(frozen=True)
class LayerWeights(LayerRecord):
    """One weighted layer of the region (:class:`LayerRecord`) and its IR node ``name``."""

    name: str


@dataclass(frozen=True, eq=False)
class WeightLayout(LayersSizes):
    """The WEIGHTS region: its layers in load order and its bytes ``data`` (blobs 64-aligned,
    zero padding between; a multiple of 64 bytes long), joined from ``pieces`` when first
    read: the schedule search builds the layout of every program it lowers (ResNet-50 224:
    eight of about 25 MB) and writes or runs only the winner's. Equal (and hashed) by layers
    and data."""

    layers: tuple[LayerWeights, ...] = ()
    pieces: tuple[bytes, ...] = field(default=(), repr=False)

    @functools.cached_property
    def data(self) -> bytes:
        """The region's bytes (``pieces`` joined, once)."""
        return b"".join(self.pieces)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, WeightLayout):
            return NotImplemented
        return self.layers == other.layers and self.data == other.data

    def __hash__(self) -> int:
        return hash((self.layers, self.data))


def _place(blob_offset: int, blocks: list[Block]) -> tuple[Block, ...]:
    """``blocks`` with offsets made absolute (blob at ``blob_offset`` in the region)."""
    return tuple(Block(blob_offset + b.offset, b.stored_bytes, b.raw_bytes, b.compressed,
                       b.c0, b.c1) for b in blocks)


def merge_blocks(weights: bytes, params: bytes, out_channels: int,
                 block_channels: int) -> bytes:
    """The raw merged blob of a layer: for each channel block ``[c0, c1)`` in order, its
    weights (``(c1 - c0) * len(weights) / O`` bytes of OHWI int8) followed by its ``c1 - c0``
    16-byte parameter records. Every channel then takes ``len(weights) / O + 16`` bytes, so the
    blob splits into blocks by channel like any other (specs/weights.md, "Merged layers")."""
    per = len(weights) // out_channels
    rec = spec.PARAM_RECORD_BYTES
    w, p = memoryview(weights), memoryview(params)   # slices without copies: one join copies
    return b"".join([part for c0, c1 in channel_blocks(out_channels, block_channels)
                     for part in (w[c0 * per:c1 * per], p[c0 * rec:c1 * rec])])


def prefetch_merged(compressor: BlockCompressor, weights: bytes, params: bytes,
                    block_channels: int) -> int:
    """Start compressing, on ``compressor``'s background threads
    (:meth:`~tcc_compiler.isa.wcodec.BlockCompressor.prefetch`), the blocks of the merged
    blob a :meth:`WeightLayoutBuilder.add_layer` with ``merged`` and this compressor would
    compress for the same ``weights`` (int8 OHWI bytes), ``params`` (16-byte records, one per
    output channel) and ``block_channels``; nothing when the layer's blob is already made.
    Returns how many blocks were started.

    Raises:
        InternalError: sizes inconsistent (as :meth:`WeightLayoutBuilder.add_layer`).
    """
    o = len(params) // spec.PARAM_RECORD_BYTES
    key = (weights, params, o, block_channels)
    if not o or key in compressor.merged:
        return 0
    raw = compressor.merged_raw.get(key)
    if raw is None:   # kept for the layer's add_layer (no second merge)
        raw = compressor.merged_raw[key] = merge_blocks(weights, params, o, block_channels)
    return compressor.prefetch(*blob_chunks(raw, o, block_channels, len(weights) // o,
                                            compressor))


def split_merged(raw: bytes, weights_raw_bytes: int, out_channels: int,
                 block_channels: int) -> tuple[bytes, bytes]:
    """Inverse of :func:`merge_blocks`: (weights, params) of a raw merged blob."""
    per = weights_raw_bytes // out_channels
    rec = spec.PARAM_RECORD_BYTES
    w, p, pos = [], [], 0
    for c0, c1 in channel_blocks(out_channels, block_channels):
        n = (c1 - c0) * per
        w.append(raw[pos:pos + n])
        p.append(raw[pos + n:pos + n + (c1 - c0) * rec])
        pos += n + (c1 - c0) * rec
    return b"".join(w), b"".join(p)


def _raw_blocks(raw: bytes, out_channels: int, block_channels: int) -> list[Block]:
    """The blocks of an uncompressed blob (verbatim slices, offsets relative to the blob)."""
    per = len(raw) // out_channels if out_channels else 0
    return [Block(c0 * per, (c1 - c0) * per, (c1 - c0) * per, False, c0, c1)
            for c0, c1 in channel_blocks(out_channels, block_channels)]


class WeightLayoutBuilder:
    """Appends layer blobs to the WEIGHTS region in call order, each 64-byte aligned (zero
    padding between), so the layout is deterministic.

    Args:
        compressor: compress every blob per channel block (raw DEFLATE,
            :mod:`~tcc_compiler.isa.wcodec`) with this memoising compressor; None stores every
            blob raw. A blob stays raw when compression does not make it smaller, a block when
            its stream is not smaller than the block.
    """

    def __init__(self, compressor: BlockCompressor | None = None) -> None:
        self.compressor = compressor
        # (id of a compressor memo entry, region offset) -> its blocks placed there, shared
        # by the builders of one compressor (:meth:`_add_merged`)
        self._placed: dict = compressor.placed if compressor is not None else {}
        self._layers: list[LayerWeights] = []
        self._names: set[str] = set()
        # the region as pieces (blobs and their zero padding), joined once by build(): the
        # schedule search lowers a network several times and builds only the winner's region
        self._pieces: list[bytes] = []
        self._size = 0
        self._raw_total = self._stored_total = 0   # running sums (the scheduler asks per op)

    def _append(self, blob: bytes) -> int:
        off = self._size
        pad = _align(off + len(blob)) - off - len(blob)
        self._pieces += [blob, bytes(pad)]
        self._size += len(blob) + pad
        return off

    def _blob(self, raw: bytes, o: int, bc: int, split: int = 0
              ) -> tuple[bytes, list[Block], bool]:
        """(stored blob, its blocks relative to it, compressed) of one raw blob (``split``:
        :func:`~tcc_compiler.isa.wcodec.encode_blob`'s ``split_channel_bytes``)."""
        if self.compressor is not None and o:
            blob, blocks = encode_blob(raw, o, bc, self.compressor, split)
            if len(blob) < len(raw):
                return blob, blocks, True
        return raw, _raw_blocks(raw, o, bc), False

    def add_layer(self, name: str, kind: LayerKind | int, weights: bytes, params: bytes, *,
                  block_channels: int | None = None, merged: bool = False) -> LayerBlobs:
        """Add a layer's weights (int8 OHWI bytes) and parameter records (16 bytes per channel).

        Args:
            name: unique layer name.
            kind: :class:`~tcc_compiler.isa.wcodec.LayerKind`.
            weights: int8 ``[O, KH, KW, C/group]`` bytes; a multiple of O bytes.
            params: ``O`` records of 16 bytes (O = ``len(params) // 16``).
            block_channels: output channels per block (the scheduler's weight DMA block;
                default O, one block).
            merged: store weights and params as one blob of merged blocks
                (:func:`merge_blocks`), so one load per block brings both.

        Returns:
            :class:`LayerBlobs`: the blob offsets and every block's placement -- the
            WEIGHTS-region DRAM offsets and sizes the load commands use.

        Raises:
            InternalError: duplicate name, unknown kind, sizes inconsistent with O, or the
                region would exceed 2**30 bytes.
        """
        if name in self._names:
            raise InternalError(f"quantized_network.bin: duplicate layer name {name!r}")
        try:
            kind = LayerKind(kind)
        except ValueError:
            raise InternalError(f"quantized_network.bin: layer {name!r}: unknown kind {kind}"
                                ) from None
        weights, params = bytes(weights), bytes(params)
        o = len(params) // spec.PARAM_RECORD_BYTES
        if len(params) % spec.PARAM_RECORD_BYTES or (len(weights) % o if o else weights):
            raise InternalError(f"quantized_network.bin: layer {name!r}: {len(params)} param "
                                f"bytes and {len(weights)} weight bytes do not make whole "
                                "16-byte records and whole output channels")
        bc = (o if block_channels is None else int(block_channels)) if o else 0
        channel_blocks(o, bc)   # range check (InternalError)
        if merged and o:
            return self._add_merged(name, kind, weights, params, o, bc)
        w_blob, w_blocks, w_z = self._blob(weights, o, bc)
        p_blob, p_blocks, p_z = self._blob(params, o, bc)
        size = _align(self._size + _align(len(w_blob)) + len(p_blob))
        if size > spec.REGION_OFFSET_MASK + 1:
            raise InternalError(f"quantized_network.bin: layer {name!r} makes the data section "
                                "exceed the 1 GiB WEIGHTS region")
        w_off = self._append(w_blob)
        p_off = self._append(p_blob)
        self._names.add(name)
        entry = LayerWeights(kind, o, bc, w_off, len(w_blob), len(weights), p_off, len(p_blob),
                             len(params), w_z, p_z, merged=False, name=name)
        self._layers.append(entry)
        self._raw_total += entry.raw_bytes
        self._stored_total += entry.stored_bytes
        return LayerBlobs(w_off, p_off, _place(w_off, w_blocks), _place(p_off, p_blocks))

    def _add_merged(self, name: str, kind: LayerKind, weights: bytes, params: bytes, o: int,
                    bc: int) -> LayerBlobs:
        """:meth:`add_layer` with ``merged``: one blob of merged blocks (with a compressor,
        memoised by the very ``weights`` and ``params`` objects and the blocking: the schedule
        search adds a layer's same bytes objects once per lowering, and the memo then skips
        merging, hashing and comparing its whole blob; equal bytes give the equal blob)."""
        memo = self.compressor.merged if self.compressor is not None else None
        key = (weights, params, o, bc)
        got = memo.get(key) if memo is not None else None
        if got is None:
            raw = self.compressor.merged_raw.pop(key, None) if memo is not None else None
            if raw is None:   # (else merged by prefetch_merged)
                raw = merge_blocks(weights, params, o, bc)
            blob, blocks, z = self._blob(raw, o, bc, len(weights) // o)
            got = (blob, tuple(blocks), z)
            if memo is not None:
                memo[key] = got
        blob, blocks, z = got
        if _align(self._size + len(blob)) > spec.REGION_OFFSET_MASK + 1:
            raise InternalError(f"quantized_network.bin: layer {name!r} makes the data section "
                                "exceed the 1 GiB WEIGHTS region")
        off = self._append(blob)
        placed = self._placed.get((id(got), off)) if memo is not None else None
        if placed is None:   # (the search lays a layer out at the same offset again and again)
            placed = _place(off, blocks)
            if memo is not None:   # (got lives in the compressor's memo: its id is its own)
                self._placed[(id(got), off)] = placed
        self._names.add(name)
        entry = LayerWeights(kind, o, bc, off, len(blob), len(weights), off, 0, len(params), z,
                             z, merged=True, name=name)
        self._layers.append(entry)
        self._raw_total += entry.raw_bytes
        self._stored_total += entry.stored_bytes
        return LayerBlobs(off, off, placed, (), merged=True)

    @property
    def data_bytes(self) -> int:
        """Current size of the region (bytes, multiple of 64)."""
        return self._size

    @property
    def raw_bytes(self) -> int:
        """Weights + params bytes of the layers added so far, before compression."""
        return self._raw_total

    @property
    def stored_bytes(self) -> int:
        """Weights + params bytes of the layers added so far, as stored (padding excluded)."""
        return self._stored_total

    def checkpoint(self) -> tuple:
        """The state so far, for :meth:`resumed` (the schedule search's lowering
        checkpoints; the lists only grow, so this builder must be kept alive)."""
        return (self, len(self._layers), set(self._names), len(self._pieces), self._size,
                self._raw_total, self._stored_total)

    @classmethod
    def resumed(cls, cp: tuple) -> WeightLayoutBuilder:
        """A new builder (the same compressor) in the state of checkpoint ``cp``."""
        src, n_layers, names, n_pieces, size, raw, stored = cp
        b = cls(src.compressor)
        b._layers, b._names, b._pieces = src._layers[:n_layers], set(names), src._pieces[:n_pieces]
        b._size, b._raw_total, b._stored_total = size, raw, stored
        return b

    def build(self) -> WeightLayout:
        """The frozen layout of the layers added so far."""
        return WeightLayout(tuple(self._layers), tuple(self._pieces))
