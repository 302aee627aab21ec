"""The weight codec of DMA_LOAD_Z: raw DEFLATE per channel block (specs/weights.md,
"Compression").

It lives in the ISA package because it is part of what DMA_LOAD_Z means: the command reads
``src_bytes`` of a DEFLATE stream from DRAM and writes ``dst_bytes`` to SRAM, so the scheduler
needs each block's compressed size (for the command's fields, its cost and the WEIGHTS-region
addresses) before any container is written, and the executor decodes the same streams. The
containers (:mod:`tcc_compiler.binfmt`) only store what the scheduler laid out.

A layer's weights ``[O, KH, KW, C/group]`` (OHWI int8) and its parameter records ``[O] x 16``
bytes are both split along the output channel into blocks of ``block_channels`` channels (the
scheduler's channel block: one block per weight DMA, the last block may be shorter). Each block
is compressed on its own with DEFLATE (RFC 1951, no zlib/gzip wrapper; ``zlib`` level 9,
``wbits = -15``, ``memLevel = 9``) so that one ``DMA_LOAD_Z`` command can fetch and expand one
block. A block whose DEFLATE stream would not be smaller than the block is stored verbatim (and
loaded by a plain ``DMA_LOAD``).

Compressed blob layout (offsets relative to the blob, little-endian)::

    u32 stored_bytes[n_blocks]        # the block index, n_blocks = ceil(O / block_channels)
    block 0 | block 1 | ...           # concatenated, no padding

Block ``k`` covers channels ``[k * bc, min((k + 1) * bc, O))``; its raw size is
``channels * raw_bytes / O``. ``stored_bytes == raw size`` means stored verbatim;
``stored_bytes < raw size`` means a raw DEFLATE stream that expands to exactly the raw size and
ends exactly at its last byte; ``stored_bytes > raw size`` is invalid.

DEFLATE was chosen over a home-made coder because hardware DEFLATE decoders exist and the
measured gain of the alternatives is small: on the zoo ResNet-50 weights (order-0 entropy 7.21
bits/byte, i.e. an ideal order-0 coder reaches 0.901) DEFLATE per block gives 0.906.
"""

from __future__ import annotations

import enum
import itertools
import os
import struct
import threading
import zlib
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterable

from tcc_compiler.errors import FormatError, InternalError

#: Alignment of every blob in the WEIGHTS region (the weight file's data section), bytes.
BLOB_ALIGN = 64

#: zlib parameters of the encoder (the decoder accepts any valid raw DEFLATE stream).
DEFLATE_LEVEL = 9
DEFLATE_WBITS = -15
DEFLATE_MEMLEVEL = 9
#: Bytes per block index entry (u32 stored_bytes).
INDEX_ENTRY_BYTES = 4
#: The smallest weight part (bytes before a merged block's ``split``) whose DEFLATE state
#: :class:`BlockCompressor` keeps, so that a longer block starting with the same bytes (a
#: coarse block: schedule/ops/convslots.py ``COARSE_FACTOR`` fine blocks' weights) continues
#: it instead of compressing them again. A kept state costs zlib's ~400 KB at these settings
#: (window, hash chains, pending buffer), so only a blob's even blocks keep one (a coarse
#: block starts where one does). ResNet-50 224 (8 photos): 39 coarse blocks continue a kept
#: state, the search's DEFLATE CPU 0.744 -> 0.663 s, the lowering's own peak RSS 307 -> 365
#: MB (below the compile's peak, reached before the lowering). Smaller blocks gain little.
KEEP_MIN_BYTES = 1 << 16
#: Bytes of a block's start that key :class:`BlockCompressor`'s kept states (with the kept
#: length; a hit is then compared over its whole length).
_KEEP_KEY_BYTES = 64


class LayerKind(enum.IntEnum):
    """Kind of a weighted layer (the ``kind`` byte of a weight file layer entry)."""

    CONV = 0
    FC = 1
    LUT = 2   # lookup-table activation: weights = T tables x 256 int8, params T zero records
    #: depthwise conv run as parts of its kernel: each block's weights part after part
    #: (specs/weights.md, "Split depthwise layers")
    DW_SPLIT = 3


@dataclass(frozen=True)
class Block:
    """One channel block of a blob as stored.

    Attributes:
        offset: byte offset of the stored block (relative to the blob, or to the data section
            once the builder has placed the blob).
        stored_bytes: bytes the block occupies in the file (what the DMA reads from DRAM).
        raw_bytes: bytes after expansion (what the DMA writes to SRAM).
        compressed: True = a raw DEFLATE stream (load with DMA_LOAD_Z); False = verbatim bytes.
        c0, c1: output channel range ``[c0, c1)`` of the block.
    """

    offset: int
    stored_bytes: int
    raw_bytes: int
    compressed: bool
    c0: int
    c1: int


def channel_blocks(out_channels: int, block_channels: int) -> list[tuple[int, int]]:
    """Channel ranges ``[c0, c1)`` of the blocks: ``ceil(O / bc)`` blocks of ``bc`` channels.

    Raises:
        InternalError: ``block_channels`` outside 1..max(O, 1).
    """
    if out_channels == 0:
        return []
    if not 1 <= block_channels <= out_channels:
        raise InternalError(f"weight compression: block_channels {block_channels} outside "
                            f"1..{out_channels}")
    return [(c, min(c + block_channels, out_channels))
            for c in range(0, out_channels, block_channels)]


def deflate(raw: bytes, split: int = 0) -> bytes:
    """Raw DEFLATE stream (RFC 1951) of ``raw`` with the encoder settings of this module.
    ``split`` > 0: the DEFLATE block ends after ``raw[:split]`` (zlib ``Z_BLOCK``), so the
    bytes after it get Huffman codes of their own: a merged block's parameter records
    (specs/weights.md) then compress as well as in a stream of their own (measured on the zoo
    MobileNetV2: 3,358,792 B merged vs 3,358,812 B as separate streams; one stream over both
    without the split: 3,370,994 B)."""
    co = zlib.compressobj(DEFLATE_LEVEL, zlib.DEFLATED, DEFLATE_WBITS, DEFLATE_MEMLEVEL)
    if 0 < split < len(raw):
        return co.compress(raw[:split]) + co.flush(zlib.Z_BLOCK) + co.compress(raw[split:]) \
            + co.flush()
    return co.compress(raw) + co.flush()


#: A DEFLATE state kept after a block's first bytes: (their count n, the stream's bytes so
#: far (a view of the block's stream), a copy of the zlib compressor after them).
Kept = tuple[int, memoryview, "zlib._Compress"]


def deflate_resumable(raw: bytes, split: int,
                      start: Kept | None = None) -> tuple[bytes, Kept]:
    """(:func:`deflate` of ``raw`` at ``split``, 0 < ``split`` < len(raw); the state after
    its first ``split`` bytes, before the split's block end). ``start``: a state of that kind
    after ``n`` <= ``split`` bytes that ``raw`` starts with, continued instead of compressing
    them again. The stream is :func:`deflate`'s byte for byte: zlib's output does not depend on
    how its input is cut into ``compress`` calls when none flushes (deflate() with Z_NO_FLUSH
    waits for MIN_LOOKAHEAD bytes of input before it decides anything; checked on every
    coarse block of the zoo ResNet-50: tests/binfmt/test_compress_ahead.py).

    Raises:
        InternalError: ``split`` outside 1..len(raw) - 1, or ``start`` longer than it.
    """
    if not 0 < split < len(raw) or (start is not None and start[0] > split):
        raise InternalError(f"resumable DEFLATE: split {split} of {len(raw)} bytes, kept "
                            f"{start[0] if start else 0}")
    view = memoryview(raw)
    if start is None:
        co = zlib.compressobj(DEFLATE_LEVEL, zlib.DEFLATED, DEFLATE_WBITS, DEFLATE_MEMLEVEL)
        head = [co.compress(view[:split])]
    else:
        n, out, kept = start
        co = kept.copy()
        head = [out, co.compress(view[n:split])]
    state = co.copy()
    n_head = sum(len(h) for h in head)
    z = b"".join(head + [co.flush(zlib.Z_BLOCK), co.compress(view[split:]), co.flush()])
    return z, (split, memoryview(z)[:n_head], state)   # (the head is z's own first bytes)


class BlockCompressor:
    """A memoising :func:`deflate`: the same raw block is compressed once.

    The scheduler lowers a network several times (one try per resident-zone size) and most
    layers keep their channel blocks across tries; one compressor shared by those tries makes
    the repeated compression free. Whole blobs are memoised too (:func:`encode_blob` of the
    same raw bytes and channel split), so a layer a try lays out as an earlier one did costs
    one dict look-up, not a pass over its bytes. Memory: the memos hold every distinct raw
    block and its stream, and every distinct blob (about three times the weight bytes).
    """

    def __init__(self) -> None:
        self._memo: dict[tuple[bytes, int], bytes] = {}   # (raw, split) -> stream
        # (raw, split) -> the stream being made on a background thread (:meth:`prefetch`)
        self._pending: dict[tuple[bytes, int], Future] = {}
        self._pool: ThreadPoolExecutor | None = None   # made by the first prefetch
        # (raw, out_channels, block_channels, split bytes per channel) -> (blob, blocks): raw
        # is the key itself, so a hit on the same bytes object compares by identity and its
        # hash is computed once
        self._blobs: dict[tuple[bytes, int, int, int], tuple[bytes, tuple[Block, ...]]] = {}
        #: (weights, params, out_channels, block_channels) -> (stored blob, its blocks,
        #: compressed) of a merged layer (filled by
        #: :class:`~tcc_compiler.isa.wlayout.WeightLayoutBuilder`; keyed by the layer's own
        #: bytes objects, hashed once and matched by identity across lowerings)
        self.merged: dict[tuple[bytes, bytes, int, int], tuple[bytes, tuple, bool]] = {}
        #: the same key -> the raw merged blob of a layer prefetched
        #: (:func:`~tcc_compiler.isa.wlayout.prefetch_merged`) and not laid out yet
        self.merged_raw: dict[tuple[bytes, bytes, int, int], bytes] = {}
        #: (raw, out_channels, block_channels, split bytes per channel) -> the blocks
        #: (:func:`blob_chunks`) of a blob prefetched and not encoded yet: the same block bytes
        #: objects each time, so the memo lookups of later prefetches of the blob and of its
        #: :func:`encode_blob` neither slice nor hash its bytes again (ResNet-50 224: about
        #: 130 prefetches of 73 merged blobs per compile)
        self.parts: dict[tuple[bytes, int, int, int], tuple] = {}
        #: (id of a :attr:`merged` value, WEIGHTS-region offset) -> its blocks placed at that
        #: offset (kept for :class:`~tcc_compiler.isa.wlayout.WeightLayoutBuilder`: a search's
        #: lowerings lay a layer out at the same offset again and again)
        self.placed: dict[tuple[int, int], tuple] = {}
        # (kept length, its first _KEEP_KEY_BYTES bytes) -> [(raw block, its Kept state)]:
        # the states :meth:`_make` continues (blocks of >= KEEP_MIN_BYTES weight bytes)
        self._kept: dict[tuple[int, bytes], list[tuple[bytes, Kept]]] = {}
        self._kept_lens: set[int] = set()
        self._kept_lock = threading.Lock()

    def _make(self, raw: bytes, split: int, keep: bool = False) -> bytes:
        """The stream of ``raw`` at ``split`` (:func:`deflate`'s bytes), made here or by a
        background thread. A merged block of at least :data:`KEEP_MIN_BYTES` weight bytes
        continues the longest kept state its bytes start with (:func:`deflate_resumable`);
        with ``keep`` (an even block of its blob: a coarse block of ``COARSE_FACTOR`` 2
        starts where such a block starts) it keeps its own for later blocks."""
        if not KEEP_MIN_BYTES <= split < len(raw):
            return deflate(raw, split)
        z, state = deflate_resumable(raw, split, self._kept_start(raw, split))
        if not keep:
            return z
        with self._kept_lock:
            self._kept.setdefault((split, bytes(raw[:_KEEP_KEY_BYTES])), []).append(
                (raw, state))
            self._kept_lens.add(split)
        return z

    def _kept_start(self, raw: bytes, split: int) -> Kept | None:
        """The longest kept state (at most ``split`` bytes) of a block ``raw`` starts with."""
        with self._kept_lock:
            lens = sorted((n for n in self._kept_lens if n <= split), reverse=True)
            for n in lens:
                for other, state in self._kept.get((n, bytes(raw[:_KEEP_KEY_BYTES])), ()):
                    if raw.startswith(memoryview(other)[:n]):
                        return state
        return None

    def deflate(self, raw: bytes, split: int = 0) -> bytes:
        """The raw DEFLATE stream of ``raw`` (:func:`deflate`), from the memo when seen (or
        from its :meth:`prefetch`, waited for when under way)."""
        key = (raw, split)
        z = self._memo.get(key)
        if z is None:
            fut = self._pending.pop(key, None)
            if fut is not None and not fut.cancel():   # under way or done: its stream
                z = self._memo[key] = fut.result()
            else:
                z = self._memo[key] = self._make(raw, split)
        return z

    def prefetch(self, raws: Iterable[bytes], splits: Iterable[int] | None = None) -> int:
        """Start compressing the blocks ``raws`` (at ``splits``, default none) that are
        neither in the memo nor already started, on up to ``os.cpu_count()`` background
        threads, in the given order, and return at once; :meth:`deflate` and
        :meth:`deflate_many` of the same bytes then take the stream made (waiting for it when
        under way; a block not started yet is taken back and compressed by the caller). The
        schedule search calls it with the blocks it predicts its next lowering will ask for
        (schedule/precompress.py), so the compression overlaps the lowering's own work; a
        block never asked for costs only its compression. Streams are :func:`deflate`'s, so
        nothing a lowering gets depends on what was prefetched. Returns how many blocks were
        queued. Call :meth:`close` when done."""
        started = 0
        for i, key in enumerate(zip(raws, splits if splits is not None
                                    else itertools.repeat(0))):
            if key in self._memo or key in self._pending:
                continue
            if self._pool is None:
                self._pool = ThreadPoolExecutor(os.cpu_count() or 1,
                                                thread_name_prefix="tccc-deflate")
            self._pending[key] = self._pool.submit(self._make, *key, i % 2 == 0)
            started += 1
        return started

    def drop_queued(self) -> int:
        """Drop the prefetched blocks not started yet (a newer prediction replaces an older
        one: the blocks it names again are queued in its order); returns how many."""
        before = len(self._pending)
        self._pending = {k: f for k, f in self._pending.items() if not f.cancel()}
        return before - len(self._pending)

    def close(self) -> None:
        """Drop the prefetched blocks not started yet and let the background threads end
        once the started ones are done (the memo stays usable; a later :meth:`prefetch`
        makes new threads)."""
        for fut in self._pending.values():
            fut.cancel()
        self._pending.clear()
        with self._kept_lock:   # (the streams stay in the memo)
            self._kept.clear()
            self._kept_lens.clear()
        self.parts.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def deflate_many(self, raws: list[bytes], splits: list[int] | None = None) -> list[bytes]:
        """:meth:`deflate` of each of ``raws`` (at ``splits``, default none); blocks neither
        in the memo nor under way from :meth:`prefetch` are compressed on up to
        ``os.cpu_count()`` threads (zlib releases the GIL while compressing: measured about
        1.1 s per 25 MB of ResNet-50 weights on one core). Output order and bytes do not
        depend on the threads."""
        keys = list(zip(raws, splits or [0] * len(raws)))
        first: dict = {}   # key -> its first index
        for i, k in enumerate(keys):
            first.setdefault(k, i)
        todo = [k for k in first if k not in self._memo and not self._under_way(k)]
        workers = min(len(todo), os.cpu_count() or 1)
        make = lambda k: self._make(*k, first[k] % 2 == 0)   # noqa: E731
        if workers > 1 and sum(len(r) for r, _ in todo) >= 1 << 16:
            with ThreadPoolExecutor(workers) as pool:
                self._memo.update(zip(todo, pool.map(make, todo)))
        else:
            self._memo.update((k, make(k)) for k in todo)
        return [self.deflate(r, sp) for r, sp in keys]

    def _under_way(self, key: tuple[bytes, int]) -> bool:
        """Whether ``key``'s :meth:`prefetch` has started (or finished); one not started yet
        is taken back (cancelled and forgotten), for the caller to compress."""
        fut = self._pending.get(key)
        if fut is None:
            return False
        if fut.cancel():
            del self._pending[key]
            return False
        return True


def blob_chunks(raw: bytes, out_channels: int, block_channels: int,
                split_channel_bytes: int = 0,
                compressor: BlockCompressor | None = None) -> tuple[list[bytes], list[int]]:
    """(raw bytes, DEFLATE split) of each block :func:`encode_blob` compresses for the same
    arguments (the keys of :class:`BlockCompressor`'s memo); with ``compressor``, kept in its
    :attr:`~BlockCompressor.parts` for the next call and the blob's :func:`encode_blob`.

    Raises:
        InternalError: as :func:`encode_blob`.
    """
    key = (raw, out_channels, block_channels, split_channel_bytes)
    parts = compressor.parts.get(key) if compressor is not None else None
    if parts is None:
        parts = _blob_parts(raw, out_channels, block_channels, split_channel_bytes)
        if compressor is not None:
            compressor.parts[key] = parts
    return parts[1:]


def _blob_parts(raw: bytes, out_channels: int, block_channels: int, split_channel_bytes: int
                ) -> tuple[list[tuple[int, int, int]], list[bytes], list[int]]:
    """(:func:`_raw_sizes`, raw bytes, DEFLATE split) of each block of ``raw``.

    Raises:
        InternalError: as :func:`encode_blob`.
    """
    try:
        sizes = _raw_sizes(len(raw), out_channels, block_channels, "weight compression")
    except FormatError as exc:
        raise InternalError(str(exc)) from None
    starts = itertools.accumulate((n for _, _, n in sizes), initial=0)
    return (sizes, [raw[a:b] for a, b in itertools.pairwise(starts)],
            [(c1 - c0) * split_channel_bytes for c0, c1, _ in sizes])


def inflate_exact(stream: bytes, raw_bytes: int, where: str) -> bytes:
    """Expand a raw DEFLATE stream that must decode to exactly ``raw_bytes`` bytes.

    The output is bounded while decoding (a hostile stream cannot expand beyond
    ``raw_bytes + 1`` bytes), and the stream must end exactly at its last byte.

    Raises:
        FormatError: ``"{where}: ..."``: invalid stream, wrong decoded size, truncated stream
            or bytes after its end.
    """
    d = zlib.decompressobj(DEFLATE_WBITS)
    try:
        out = d.decompress(stream, raw_bytes + 1)
    except zlib.error as exc:
        raise FormatError(f"{where}: invalid DEFLATE stream ({exc})") from None
    if len(out) > raw_bytes or d.unconsumed_tail:
        raise FormatError(f"{where}: DEFLATE stream expands beyond {raw_bytes} bytes")
    if not d.eof:
        raise FormatError(f"{where}: DEFLATE stream truncated ({len(stream)} bytes give "
                          f"{len(out)} of {raw_bytes} bytes and no final block)")
    if d.unused_data:
        raise FormatError(f"{where}: {len(d.unused_data)} bytes after the end of the DEFLATE "
                          "stream")
    if len(out) != raw_bytes:
        raise FormatError(f"{where}: DEFLATE stream expands to {len(out)} bytes, expected "
                          f"{raw_bytes}")
    return out


def _raw_sizes(raw_bytes: int, out_channels: int, block_channels: int,
               where: str) -> list[tuple[int, int, int]]:
    """(c0, c1, raw size) of each block; ``raw_bytes`` must be a multiple of ``out_channels``."""
    if out_channels == 0:
        if raw_bytes:
            raise FormatError(f"{where}: {raw_bytes} raw bytes but 0 output channels")
        return []
    if raw_bytes % out_channels:
        raise FormatError(f"{where}: raw size {raw_bytes} is not a multiple of the "
                          f"{out_channels} output channels")
    per = raw_bytes // out_channels
    if not 1 <= block_channels <= out_channels:
        raise FormatError(f"{where}: block_channels {block_channels} outside "
                          f"1..{out_channels}")
    return [(c0, c1, (c1 - c0) * per) for c0, c1 in channel_blocks(out_channels,
                                                                   block_channels)]


def encode_blob(raw: bytes, out_channels: int, block_channels: int,
                compressor: BlockCompressor | None = None,
                split_channel_bytes: int = 0) -> tuple[bytes, list[Block]]:
    """Compress ``raw`` (``out_channels`` equal slices) block by block (with ``compressor``'s
    memo if given). ``split_channel_bytes`` > 0: a merged blob (specs/weights.md), each block
    of ``c`` channels split (:func:`deflate`) after its ``c * split_channel_bytes`` weight
    bytes.

    Returns:
        (blob, blocks): the compressed blob (index + blocks) and its blocks with offsets
        relative to the blob.

    Raises:
        InternalError: sizes inconsistent (``len(raw)`` not a multiple of ``out_channels``,
            ``block_channels`` outside 1..O).
    """
    key = (bytes(raw), out_channels, block_channels, split_channel_bytes)
    got = compressor._blobs.get(key) if compressor is not None else None
    if got is None:
        blob, blocks = _encode_blob(key[0], out_channels, block_channels, compressor,
                                    split_channel_bytes)
        got = (blob, tuple(blocks))
        if compressor is not None:
            compressor._blobs[key] = got
    return got[0], list(got[1])


def _encode_blob(raw: bytes, out_channels: int, block_channels: int,
                 compressor: BlockCompressor | None,
                 split_channel_bytes: int = 0) -> tuple[bytes, list[Block]]:
    """:func:`encode_blob` without the blob memo."""
    parts = compressor.parts.pop((raw, out_channels, block_channels, split_channel_bytes),
                                 None) if compressor is not None else None
    sizes, chunks, splits = parts or _blob_parts(raw, out_channels, block_channels,
                                                 split_channel_bytes)
    pos = INDEX_ENTRY_BYTES * len(sizes)
    parts: list[bytes] = []
    blocks: list[Block] = []
    streams = (compressor.deflate_many(chunks, splits) if compressor is not None
               else [deflate(c, sp) for c, sp in zip(chunks, splits)])
    for (c0, c1, n), chunk, z in zip(sizes, chunks, streams):
        packed = z if len(z) < n else chunk
        blocks.append(Block(pos, len(packed), n, len(z) < n, c0, c1))
        parts.append(packed)
        pos += len(packed)
    index = struct.pack(f"<{len(blocks)}I", *(b.stored_bytes for b in blocks))
    return b"".join([index, *parts]), blocks   # one copy of the blob's bytes


def parse_blob(blob: bytes, raw_bytes: int, out_channels: int, block_channels: int,
               where: str) -> list[Block]:
    """Read and check a compressed blob's block index (not the streams themselves).

    Raises:
        FormatError: the index does not fit, a block is larger than its raw size, or the blocks
            do not end exactly at the end of the blob.
    """
    sizes = _raw_sizes(raw_bytes, out_channels, block_channels, where)
    head = INDEX_ENTRY_BYTES * len(sizes)
    if head > len(blob):
        raise FormatError(f"{where}: block index of {len(sizes)} entries does not fit in "
                          f"{len(blob)} bytes")
    stored = struct.unpack_from(f"<{len(sizes)}I", blob, 0)
    blocks, pos = [], head
    for k, ((c0, c1, n), s) in enumerate(zip(sizes, stored)):
        if s > n or s == 0 and n:
            raise FormatError(f"{where}: block {k} stored_bytes = {s} invalid (1..{n})")
        blocks.append(Block(pos, s, n, s < n, c0, c1))
        pos += s
    if pos != len(blob):
        raise FormatError(f"{where}: blocks end at byte {pos}, the blob is {len(blob)} bytes")
    return blocks


def decode_blob(blob: bytes, raw_bytes: int, out_channels: int, block_channels: int,
                where: str) -> bytes:
    """Expand a compressed blob back to its ``raw_bytes`` raw bytes (index and every stream
    checked).

    Raises:
        FormatError: see :func:`parse_blob` and :func:`inflate_exact` (block number named).
    """
    out = []
    for k, b in enumerate(parse_blob(blob, raw_bytes, out_channels, block_channels, where)):
        data = blob[b.offset:b.offset + b.stored_bytes]
        out.append(inflate_exact(data, b.raw_bytes, f"{where}: block {k}") if b.compressed
                   else data)
    return b"".join(out)
