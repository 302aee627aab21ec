"""Resumed DEFLATE (isa/wcodec.deflate_resumable, BlockCompressor's kept states): a block that
starts with the bytes of a block compressed before continues that block's zlib state instead of
compressing them again, and its stream is byte for byte :func:`deflate`'s; a kept state is
only continued by a block that really starts with its bytes."""

from __future__ import annotations

import numpy as np
import pytest

from tcc_compiler.errors import InternalError
from tcc_compiler.isa import spec, wcodec
from tcc_compiler.isa.wcodec import (KEEP_MIN_BYTES, BlockCompressor, deflate,
                                     deflate_resumable, encode_blob)
from tcc_compiler.isa.wlayout import merge_blocks


def _weights(seed: int, n: int) -> bytes:
    """int8 weights that compress (about 6 bits/byte), as OHWI bytes."""
    r = np.random.default_rng(seed)
    return np.clip(np.round(r.standard_normal(n) * 12), -127, 127).astype(np.int8).tobytes()


def _params(seed: int, o: int) -> bytes:
    r = np.random.default_rng(seed)
    return spec.pack_conv_params(r.integers(-1000, 1000, o), r.integers(1, 2**30, o),
                                 np.full(o, 20))


@pytest.mark.parametrize("cut", [1, 300, 40_000, 70_000])
def test_a_resumed_stream_is_deflates(cut):
    raw = _weights(1, 90_000) + _params(1, 64)
    split = 80_000
    z, kept = deflate_resumable(raw[:cut] + _weights(2, split - cut) + b"\0" * 64, split)
    assert z == deflate(raw[:cut] + _weights(2, split - cut) + b"\0" * 64, split)
    # a block starting with the first ``cut`` bytes continues from them
    _, head = deflate_resumable(raw[:cut] + raw[cut:cut + 1] * 5000, cut)
    got, again = deflate_resumable(raw, split, head)
    assert got == deflate(raw, split)
    assert again[0] == split and bytes(again[1]) == got[:len(again[1])]
    assert deflate_resumable(raw, split, again)[0] == got   # a kept state is not used up


def test_a_resumed_stream_refuses_a_longer_state_or_no_split():
    raw = _weights(3, 5000)
    _, kept = deflate_resumable(raw, 4000)
    with pytest.raises(InternalError, match="split 3000 of 5000 bytes, kept 4000"):
        deflate_resumable(raw, 3000, kept)
    with pytest.raises(InternalError, match="split 0"):
        deflate_resumable(raw, 0)


def _spy(monkeypatch) -> list:
    """Record whether each deflate_resumable call continued a kept state (its count)."""
    calls: list = []
    real = wcodec.deflate_resumable

    def spy(raw, split, start=None):
        calls.append((len(raw), split, start[0] if start is not None else 0))
        return real(raw, split, start)

    monkeypatch.setattr(wcodec, "deflate_resumable", spy)
    return calls


def test_coarse_blocks_continue_their_first_fine_block(monkeypatch):
    o, per = 64, KEEP_MIN_BYTES // 16   # a fine block of 16 channels: KEEP_MIN_BYTES of weights
    w, p = _weights(4, o * per), _params(4, o)
    calls = _spy(monkeypatch)
    comp = BlockCompressor()
    fine = encode_blob(merge_blocks(w, p, o, 16), o, 16, comp, per)
    assert [c[2] for c in calls] == [0, 0, 0, 0]
    calls.clear()
    coarse = encode_blob(merge_blocks(w, p, o, 32), o, 32, comp, per)
    # each coarse block starts with an even fine block's weights: continued from them
    assert [c[1:] for c in calls] == [(32 * per, 16 * per)] * 2
    assert fine == encode_blob(merge_blocks(w, p, o, 16), o, 16, None, per)
    assert coarse == encode_blob(merge_blocks(w, p, o, 32), o, 32, None, per)
    comp.close()   # the kept states go; the streams stay
    calls.clear()
    assert encode_blob(merge_blocks(w, p, o, 8), o, 8, comp, per) == \
        encode_blob(merge_blocks(w, p, o, 8), o, 8, None, per)
    assert calls == []   # (8 channels: below KEEP_MIN_BYTES of weights)


def test_a_kept_state_of_other_bytes_with_the_same_start_is_not_continued(monkeypatch):
    n = KEEP_MIN_BYTES
    a = _weights(5, n)
    b = a[:n // 2] + _weights(6, n - n // 2)   # same first half (and key bytes), then other
    tail = _weights(7, n)
    calls = _spy(monkeypatch)
    comp = BlockCompressor()
    comp.deflate_many([a + b"\1" * 16], [n])   # keeps a's state (an even block)
    got = comp.deflate_many([b + tail + b"\2" * 32], [2 * n])
    assert got == [deflate(b + tail + b"\2" * 32, 2 * n)]
    assert calls[-1][2] == 0   # b does not start with a: compressed from its start
    got = comp.deflate_many([a + tail + b"\2" * 32], [2 * n])
    assert got == [deflate(a + tail + b"\2" * 32, 2 * n)] and calls[-1][2] == n


def test_odd_blocks_keep_no_state(monkeypatch):
    n = KEEP_MIN_BYTES
    a, b, tail = _weights(8, n), _weights(9, n), _weights(10, n)
    calls = _spy(monkeypatch)
    comp = BlockCompressor()
    comp.deflate_many([a + b"\1" * 16, b + b"\1" * 16], [n, n])
    comp.deflate_many([b + tail + b"\2" * 32], [2 * n])
    assert calls[-1][2] == 0   # b was its blob's second block: no state kept
    assert comp.deflate_many([a + tail + b"\2" * 32], [2 * n]) == \
        [deflate(a + tail + b"\2" * 32, 2 * n)] and calls[-1][2] == n   # a's was
