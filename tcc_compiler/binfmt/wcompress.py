"""Compatibility names: the per-block DEFLATE codec moved to :mod:`tcc_compiler.isa.wcodec`
(it is part of DMA_LOAD_Z's semantics, which the scheduler needs before any file is written)."""

from tcc_compiler.isa.wcodec import (  # noqa: F401
    DEFLATE_LEVEL,
    DEFLATE_MEMLEVEL,
    DEFLATE_WBITS,
    INDEX_ENTRY_BYTES,
    Block,
    BlockCompressor,
    channel_blocks,
    decode_blob,
    deflate,
    encode_blob,
    inflate_exact,
    parse_blob,
)
