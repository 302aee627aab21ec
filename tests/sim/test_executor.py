"""Reference executor: hand-built programs checked bit-exactly against the numerics kernels."""

from __future__ import annotations

import numpy as np
import pytest

from tcc_compiler.binfmt import LayerKind, WeightFileBuilder, read_cmd_file, read_weight_file
from tcc_compiler.binfmt import write_cmd_file
from tcc_compiler.errors import ExecutionError, InputError
from tcc_compiler.isa import commands as C
from tcc_compiler.isa import spec
from tcc_compiler.isa.spec import Region, dram_address, pack_conv_params
from tcc_compiler.numerics import (
    add_int8,
    avgpool_int8,
    conv_accumulate,
    conv_epilogue,
    maxpool_int8,
    quantize_multiplier,
    quantize_multipliers_shared,
)
from tcc_compiler.numerics.kernels import conv_epilogue_int32
from tcc_compiler.sim import Executor
from tcc_compiler.target import load_target

SRAM = 1 << 16
TARGET = load_target().with_sram(SRAM)
FILL = 0xA5            # SRAM/ACT/OUTPUT start as 0xA5 so reads of unwritten bytes show up
H, W, CIN, OC = 5, 6, 8, 16


def _run(cmds, inp: bytes, output_bytes: int, weights: bytes | None = None, act: int = 0,
         with_stats: bool = False):
    """Round-trip the program through both containers, then execute it."""
    cmd = read_cmd_file(write_cmd_file(cmds + [C.End()], sram_peak_bytes=SRAM,
                                       act_arena_bytes=act, input_bytes=len(inp),
                                       output_bytes=output_bytes,
                                       tool_version="test"))
    wf = read_weight_file(weights if weights is not None else WeightFileBuilder().build("t"))
    ex = Executor(cmd, wf, TARGET, fill=FILL)
    out, stats = ex.run_with_stats(inp)
    return (out, stats) if with_stats else out


def _load(region, off, sram, nbytes, **waits):
    return C.DmaLoad(dram_address(region, off), sram, nbytes, 1, 1, 0, 0, 0, 0, **waits)


def _store(region, off, sram, nbytes, **waits):
    return C.DmaStore(dram_address(region, off), sram, nbytes, 1, 1, 0, 0, 0, 0, **waits)


def _rows_load(off, h0, h1, sram, c=CIN, w=W, **waits):
    """DMA_LOAD of rows [h0, h1) of an NHWC [*, w, c] tensor in INPUT, one run per pixel."""
    return C.DmaLoad(dram_address(Region.INPUT, off + h0 * w * c), sram, c, w, h1 - h0,
                     c, w * c, c, w * c, **waits)


def _conv_case(rng, cin_g=CIN, oc=OC, k=3):
    x = rng.integers(-128, 128, (H, W, CIN), dtype=np.int8)
    wt = rng.integers(-128, 128, (oc, k, k, cin_g), dtype=np.int8)
    bias = rng.integers(-2000, 2000, oc).astype(np.int32)
    # per channel: accumulator scale and shortcut scale share one shift (one rounding)
    pairs = [quantize_multipliers_shared([a, b])
             for a, b in zip(rng.uniform(0.002, 0.02, oc), rng.uniform(0.3, 0.9, oc))]
    mult = np.array([m[0] for m, _ in pairs])
    sc_mult = np.array([m[1] for m, _ in pairs])
    shift = np.array([s for _, s in pairs])
    return x, wt, bias, mult, shift, sc_mult


def _weights(wt, bias, mult, shift, sc_mult):
    b = WeightFileBuilder()
    blobs = b.add_layer("conv", LayerKind.CONV, wt.tobytes(),
                        pack_conv_params(bias, mult, shift, sc_mult))
    return b.build("t"), blobs.weights_offset, blobs.params_offset


def _cfg(k=3, s=1, d=1, cin_g=CIN, out_mode=0, flags=0, zp_in=3, zp_out=-5, zp_sc=7,
         lo=-128, hi=127, group=1):
    return C.ConvCfg(k, k, s, s, d, d, out_mode, flags, group, cin_g, zp_in, zp_out, zp_sc,
                     lo, hi)


# ---------------------------------------------------------------------------------------------
# Conv


def test_conv_3x3_pad1_single_tile():
    rng = np.random.default_rng(0)
    x, wt, bias, mult, shift, sc_mult = _conv_case(rng)
    wbin, w_off, p_off = _weights(wt, bias, mult, shift, sc_mult)
    cmds = [
        _rows_load(0, 0, H, 0),                                      # input -> 0x0000
        _load(Region.WEIGHTS, w_off, 0x1000, wt.nbytes),             # weights -> 0x1000
        _load(Region.WEIGHTS, p_off, 0x2000, OC * 16),               # params -> 0x2000
        _cfg(),
        C.ConvTile(0, 0x1000, 0x2000, 0x3000, 0, H, W, CIN, OC, H, W, 1, 1, 1, 1,
                   wait_load=0),
        _store(Region.OUTPUT, 0, 0x3000, H * W * OC, wait_compute=0),
    ]
    out, stats = _run(cmds, x.tobytes(), H * W * OC, wbin, with_stats=True)
    acc = conv_accumulate(x, 3, wt, (1, 1), (1, 1, 1, 1))
    ref = conv_epilogue(acc, bias, mult, shift, -5)
    assert len(np.unique(ref)) > 50
    assert out == ref.tobytes()
    assert stats.commands["CONV_TILE"] == 1 and stats.commands["END"] == 1
    assert stats.bytes_per_queue["LOAD"] == x.nbytes + wt.nbytes + OC * 16
    assert stats.bytes_per_queue["STORE"] == H * W * OC
    assert stats.macs == H * W * OC * 9 * CIN


def _tiled_program(w_off, p_off, row_tiles, oc_tiles, cin_g=CIN):
    """Conv 3x3 pad 1 split into row tiles (with halo) x output-channel tiles."""
    cmds, sram = [_cfg(cin_g=cin_g)], 0
    for o0, o1 in oc_tiles:
        n = o1 - o0
        w_bytes = n * 9 * cin_g
        cmds += [_load(Region.WEIGHTS, w_off + o0 * 9 * cin_g, 0x8000, w_bytes,
                       wait_compute=0),
                 _load(Region.WEIGHTS, p_off + o0 * 16, 0x9000, n * 16)]
        for r0, r1 in row_tiles:                                     # output rows [r0, r1)
            i0, i1 = max(r0 - 1, 0), min(r1 + 1, H)                  # input rows with halo
            pad_t, pad_b = int(r0 == 0), int(r1 == H)
            in_buf, out_buf = sram, sram + 0x400
            sram = (sram + 0x800) % 0x8000
            cmds += [
                _rows_load(0, i0, i1, in_buf, wait_compute=1),
                C.ConvTile(in_buf, 0x8000, 0x9000, out_buf, 0, i1 - i0, W, CIN, n, r1 - r0, W,
                           pad_t, 1, pad_b, 1, wait_load=0),
                # out tile [r1-r0, W, n] into OUTPUT [H, W, OC] at (r0, 0, o0): run per pixel
                C.DmaStore(dram_address(Region.OUTPUT, (r0 * W) * OC + o0), out_buf, n,
                           (r1 - r0) * W, 1, OC, 0, n, 0, wait_compute=0),
            ]
    return cmds


@pytest.mark.parametrize("row_tiles,oc_tiles", [
    ([(0, 3), (3, 5)], [(0, OC)]),
    ([(0, 2), (2, 4), (4, 5)], [(0, 8), (8, 16)]),
    ([(0, 5)], [(0, 4), (4, 12), (12, 16)]),
])
def test_conv_tiled_equals_single_tile(row_tiles, oc_tiles):
    rng = np.random.default_rng(1)
    x, wt, bias, mult, shift, sc_mult = _conv_case(rng)
    wbin, w_off, p_off = _weights(wt, bias, mult, shift, sc_mult)
    whole = _run(_tiled_program(w_off, p_off, [(0, H)], [(0, OC)]), x.tobytes(), H * W * OC,
                 wbin)
    tiled = _run(_tiled_program(w_off, p_off, row_tiles, oc_tiles), x.tobytes(), H * W * OC,
                 wbin)
    assert tiled == whole
    ref = conv_epilogue(conv_accumulate(x, 3, wt, (1, 1), (1, 1, 1, 1)), bias, mult, shift, -5)
    assert whole == ref.tobytes()


@pytest.mark.parametrize("k,s,d,pads,cin_g,oc,flags,out_mode,lo", [
    (3, 2, 1, (1, 1, 1, 1), CIN, OC, 0, 0, 0),           # stride 2, ReLU folded in clamp
    (3, 1, 2, (2, 2, 2, 2), CIN, OC, 0, 0, -128),        # dilation 2
    (1, 1, 1, (0, 0, 0, 0), CIN, OC, 1, 0, 0),           # 1x1 with fused shortcut
    (3, 1, 1, (1, 1, 1, 1), 1, CIN, 0, 0, -128),         # depthwise
    (3, 1, 1, (0, 1, 1, 0), 4, OC, 0, 0, -128),          # 2 groups, asymmetric pads
    (3, 1, 1, (1, 1, 1, 1), CIN, OC, 0, 1, -128),        # int32 raw output
])
def test_conv_variants(k, s, d, pads, cin_g, oc, flags, out_mode, lo):
    rng = np.random.default_rng(2)
    x, wt, bias, mult, shift, sc_mult = _conv_case(rng, cin_g=cin_g, oc=oc, k=k)
    groups = CIN // cin_g
    acc = conv_accumulate(x, 3, wt, (s, s), pads, (d, d), groups)
    oh, ow = acc.shape[:2]
    sc = rng.integers(-128, 128, (oh, ow, oc), dtype=np.int8)
    if out_mode:
        ref = conv_epilogue_int32(acc, bias).astype("<i4")
    else:
        ref = conv_epilogue(acc, bias, mult, shift, -5, lo, 127, sc if flags else None, 7,
                            sc_mult)
    assert len(np.unique(ref)) > 20                 # not saturated: the check has teeth
    wbin, w_off, p_off = _weights(wt, bias, mult, shift, sc_mult)
    inp = x.tobytes() + sc.tobytes()
    cmds = [
        _load(Region.INPUT, 0, 0, x.nbytes),
        _load(Region.INPUT, x.nbytes, 0x4000, sc.nbytes),
        _load(Region.WEIGHTS, w_off, 0x1000, wt.nbytes),
        _load(Region.WEIGHTS, p_off, 0x2000, oc * 16),
        _cfg(k=k, s=s, d=d, cin_g=cin_g, out_mode=out_mode, flags=flags, lo=lo, group=groups),
        C.ConvTile(0, 0x1000, 0x2000, 0x6000, 0x4000, H, W, CIN, oc, oh, ow, *pads),
        _store(Region.OUTPUT, 0, 0x6000, ref.nbytes),
    ]
    assert _run(cmds, inp, ref.nbytes, wbin) == ref.tobytes()


# ---------------------------------------------------------------------------------------------
# Pool and add


@pytest.mark.parametrize("kind", [spec.POOL_KIND_MAX, spec.POOL_KIND_AVG])
def test_pool(kind):
    rng = np.random.default_rng(3)
    x = rng.integers(-128, 128, (H, W, CIN), dtype=np.int8)
    mult, shift = quantize_multiplier(1 / 9)
    pads = (1, 1, 1, 1)
    if kind == spec.POOL_KIND_MAX:
        ref = maxpool_int8(x, (3, 3), (2, 2), pads)
    else:
        ref = avgpool_int8(x, 2, (3, 3), (2, 2), pads, mult, shift, -1)
    cmds = [_load(Region.INPUT, 0, 0, x.nbytes),
            C.PoolCfg(kind, 3, 3, 2, 2, 2, -1, shift, mult),
            C.PoolTile(0, 0x1000, H, W, CIN, *ref.shape[:2], *pads),
            _store(Region.OUTPUT, 0, 0x1000, ref.nbytes)]
    assert _run(cmds, x.tobytes(), ref.nbytes) == ref.tobytes()


def test_global_avgpool():
    rng = np.random.default_rng(4)
    x = rng.integers(-128, 128, (H, W, CIN), dtype=np.int8)
    mult, shift = quantize_multiplier(1 / (H * W))
    ref = avgpool_int8(x, 0, (H, W), (1, 1), (0, 0, 0, 0), mult, shift, 0)
    cmds = [_load(Region.INPUT, 0, 0, x.nbytes), C.PoolCfg(1, H, W, 1, 1, 0, 0, shift, mult),
            C.PoolTile(0, 0x1000, H, W, CIN, 1, 1, 0, 0, 0, 0),
            _store(Region.OUTPUT, 0, 0x1000, CIN)]
    assert _run(cmds, x.tobytes(), CIN) == ref.tobytes()


def test_add_through_act_arena():
    rng = np.random.default_rng(5)
    a = rng.integers(-128, 128, 300, dtype=np.int8)
    b = rng.integers(-128, 128, 300, dtype=np.int8)
    ref = add_int8(a, 4, 1 << 29, b, -3, 3 << 28, 30, 2, 0, 127)
    cmds = [_load(Region.INPUT, 0, 0, 600),
            _store(Region.ACT, 64, 0, 600),                          # round trip via ACT
            _load(Region.ACT, 64, 0x1000, 600, wait_store=0),
            C.AddCfg(4, -3, 2, 0, 127, 30, 1 << 29, 3 << 28),
            C.AddTile(0x1000, 0x1000 + 300, 0x2000, 300),
            _store(Region.OUTPUT, 0, 0x2000, 300)]
    assert _run(cmds, a.tobytes() + b.tobytes(), 300, act=1024) == ref.tobytes()


def test_dma_strided_gather_and_overlapping_destination():
    data = bytes(range(64))
    # gather every other 4-byte run of the first 32 bytes, twice with a zero outer stride
    cmds = [C.DmaLoad(dram_address(Region.INPUT, 0), 0, 4, 4, 2, 8, 0, 4, 16),
            _store(Region.OUTPUT, 0, 0, 32)]
    exp = b"".join(data[i:i + 4] for i in range(0, 32, 8)) * 2
    assert _run(cmds, data, 32) == exp
    # destination runs overlap (stride 2 < run 4): later runs win
    cmds = [C.DmaLoad(dram_address(Region.INPUT, 0), 0, 4, 3, 1, 4, 0, 2, 0),
            _store(Region.OUTPUT, 0, 0, 8)]
    assert _run(cmds, data, 8) == bytes([0, 1, 4, 5, 8, 9, 10, 11])


# ---------------------------------------------------------------------------------------------
# Errors


def test_dma_out_of_bounds():
    with pytest.raises(ExecutionError,
                       match=r"command 1 \(DMA_LOAD\): dram range 0x8-0x48 outside region "
                             r"ACT \(size 64\)"):
        _run([_load(Region.INPUT, 0, 0, 8), _load(Region.ACT, 8, 0, 64)], bytes(8), 8, act=64)
    with pytest.raises(ExecutionError, match=r"command 0 \(DMA_LOAD\): sram range .* outside"):
        _run([_load(Region.INPUT, 0, SRAM - 4, 8)], bytes(8), 8)
    with pytest.raises(ExecutionError, match=r"command 0 \(DMA_STORE\): .*region OUTPUT"):
        _run([C.DmaStore(dram_address(Region.OUTPUT, 0), 0, 4, 3, 1, 4, 0, 4, 0)], bytes(8), 8)
    with pytest.raises(ExecutionError, match=r"crosses the end of region INPUT"):
        _run([C.DmaLoad(dram_address(Region.INPUT, 0x3FFFFFFC), 0, 8, 1, 1, 0, 0, 0, 0)],
             bytes(8), 8)
    with pytest.raises(ExecutionError, match=r"read-only region WEIGHTS"):
        _run([_store(Region.WEIGHTS, 0, 0, 4)], bytes(8), 8,
             weights=_weights(np.zeros((1, 1, 1, 1), np.int8), [0], [1], [1], [0])[0])
    with pytest.raises(ExecutionError, match="empty transfer"):
        _run([_load(Region.INPUT, 0, 0, 0)], bytes(8), 8)


def test_conv_tile_refuses_an_empty_channel_clamp():
    """A parameter record whose clamp bytes leave no int8 output value (``MIN + clamp_lo >
    MAX - clamp_hi``; a hand-edited quantized_network.bin, the CRCs fixed up) is refused by
    name: tccc never writes one (quant/params.channel_clamps rounds lo <= hi monotonely)."""
    ok = C.ConvTile(0, 0, 0x100, 0x200, 0, 4, 4, 1, 1, 4, 4, 1, 1, 1, 1)
    for lo, hi, bad in ((200, 100, True), (128, 128, True), (128, 127, False), (255, 0, False)):
        params = pack_conv_params([0], [1 << 30], [31], clamp_lo=[lo], clamp_hi=[hi])
        wb = WeightFileBuilder()
        p_off = wb.add_layer("c", 0, bytes(9), params).params_offset
        wbin = wb.build("t")
        prog = [_load(Region.WEIGHTS, p_off, 0x100, 16), _cfg(cin_g=1), ok]
        if bad:   # the bytes are quantized_network.bin's: it is named, with the byte offset
            with pytest.raises(ExecutionError, match=(
                    rf"^quantized_network.bin: byte {128 + p_off} \(layer table entry 0, its "
                    r"parameter record 0\): parameter record of channel 0: clamp_lo \+ "
                    r"clamp_hi .* no int8 output value \(read by command 2 \(CONV_TILE\) of "
                    r"npu_cmd.bin\)$")):
                _run(prog, bytes(1), 1, wbin)
        else:
            assert len(_run(prog, bytes(1), 1, wbin)) == 1


@pytest.mark.parametrize("stride", [16, 48])
def test_bad_parameter_record_names_the_weight_file_byte(stride):
    """A bad record among several, loaded by a strided DMA_LOAD from the WEIGHTS region: the
    message names quantized_network.bin, the file byte of the bad record (mapped back through
    the load's DRAM pattern) and its record, not npu_cmd.bin (it named only the command:
    found by a new-user attack). Records a command overwrote in SRAM are the command stream's
    fault: the command is named as before."""
    recs = bytearray(pack_conv_params([0] * 3, [1 << 30] * 3, [31] * 3))
    recs[2 * 16 + 12] = 0   # record 2's shift byte: 0 is outside 1..62
    wb = WeightFileBuilder()
    wide = bytearray(3 * stride)   # record k at k * stride of a params blob
    for k in range(3):
        wide[k * stride:k * stride + 16] = recs[k * 16:k * 16 + 16]
    p_off = wb.add_layer("c", 0, bytes(3 * stride // 16 * 9), bytes(wide)).params_offset
    wbin = wb.build("t")
    tile = C.ConvTile(0, 0, 0x100, 0x200, 0, 1, 1, 1, 3, 1, 1, 1, 1, 1, 1)
    load = C.DmaLoad(dram_address(Region.WEIGHTS, p_off), 0x100, 16, 3, 1, stride, 0, 16, 0)
    rec = 2 * stride // 16
    with pytest.raises(ExecutionError, match=(
            rf"^quantized_network.bin: byte {128 + p_off + 2 * stride} \(layer table entry 0, "
            rf"its parameter record {rec}\): parameter record of channel 2: shift 0 outside "
            r"1..62 \(read by command 2 \(CONV_TILE\) of npu_cmd.bin\)$")):
        _run([load, _cfg(cin_g=1), tile], bytes(1), 3, wbin)
    # the same records copied through the ACT region: not a weight load's bytes any more
    store = _store(Region.OUTPUT, 0, 0x100, 48)
    reload = _load(Region.OUTPUT, 0, 0x100, 48)
    with pytest.raises(ExecutionError, match=r"^command 4 \(CONV_TILE\): parameter record of "
                                             r"channel 2: shift 0"):
        _run([load, store, reload, _cfg(cin_g=1), tile], bytes(1), 48, wbin)


def test_tile_without_cfg():
    tile = C.ConvTile(0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0)
    with pytest.raises(ExecutionError, match=r"command 0 \(CONV_TILE\): no CONV_CFG"):
        _run([tile], bytes(1), 1)
    with pytest.raises(ExecutionError, match=r"command 0 \(POOL_TILE\): no POOL_CFG"):
        _run([C.PoolTile(0, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0)], bytes(1), 1)
    with pytest.raises(ExecutionError, match=r"command 1 \(ADD_TILE\): no ADD_CFG"):
        _run([_cfg(), C.AddTile(0, 0, 0, 1)], bytes(1), 1)


def test_conv_tile_checks():
    params = pack_conv_params([0], [1 << 30], [31])
    wbin = WeightFileBuilder()
    p_off = wbin.add_layer("c", 0, bytes(9), params).params_offset
    wbin = wbin.build("t")
    base = [_load(Region.WEIGHTS, p_off, 0x100, 16), _cfg(cin_g=1)]
    bad_size = C.ConvTile(0, 0, 0x100, 0x200, 0, 4, 4, 1, 1, 4, 3, 1, 1, 1, 1)
    with pytest.raises(ExecutionError, match=r"command 2 \(CONV_TILE\): out_h x out_w = 4x3, "
                                             r"the padded tile gives 4x4"):
        _run(base + [bad_size], bytes(1), 1, wbin)
    no_params = C.ConvTile(0, 0, 0x300, 0x200, 0, 4, 4, 1, 1, 4, 4, 1, 1, 1, 1)
    with pytest.raises(ExecutionError, match="reserved byte|shift"):     # 0xA5-filled SRAM
        _run(base + [no_params], bytes(1), 1, wbin)
    ok = C.ConvTile(0, 0, 0x100, 0x200, 0, 4, 4, 1, 1, 4, 4, 1, 1, 1, 1)
    assert len(_run(base + [ok], bytes(1), 1, wbin)) == 1
    with pytest.raises(ExecutionError, match="in_c 3 is not a non-zero multiple of cin_g 2"):
        _run([_cfg(cin_g=2), C.ConvTile(0, 0, 0, 0, 0, 3, 3, 3, 1, 1, 1, 0, 0, 0, 0)],
             bytes(1), 1)


def test_run_checks():
    cmd = read_cmd_file(write_cmd_file([C.End()], sram_peak_bytes=SRAM, act_arena_bytes=0,
                                       input_bytes=4, output_bytes=4, tool_version="t"))
    with pytest.raises(ExecutionError, match="sram_peak_bytes = 65536 exceeds"):
        Executor(cmd, None, TARGET.with_sram(SRAM - 1))
    ex = Executor(cmd, None, TARGET)
    with pytest.raises(InputError, match="input is 3 bytes"):
        ex.run(bytes(3))
    assert ex.run(bytes(4)) == bytes(4) and ex.stats.commands["END"] == 1


# -- hostile streams: every failure is a TccError naming the command, never a traceback --------

def _conv_program():
    rng = np.random.default_rng(0)
    x, wt, bias, mult, shift, sc_mult = _conv_case(rng)
    wbin, w_off, p_off = _weights(wt, bias, mult, shift, sc_mult)
    cmds = [
        _rows_load(0, 0, H, 0),
        _load(Region.WEIGHTS, w_off, 0x1000, wt.nbytes),
        _load(Region.WEIGHTS, p_off, 0x2000, OC * 16),
        _cfg(),
        C.ConvTile(0, 0x1000, 0x2000, 0x3000, 0, H, W, CIN, OC, H, W, 1, 1, 1, 1, wait_load=0),
        _store(Region.OUTPUT, 0, 0x3000, H * W * OC, wait_compute=0),
    ]
    return cmds, x.tobytes(), H * W * OC, wbin


def test_schedules_agree_and_check_mode():
    cmds, inp, n_out, wbin = _conv_program()
    ref = _run(cmds, inp, n_out, wbin)
    cmd = read_cmd_file(write_cmd_file(cmds + [C.End()], sram_peak_bytes=SRAM,
                                       act_arena_bytes=0, input_bytes=len(inp),
                                       output_bytes=n_out,
                                       tool_version="t"))
    ex = Executor(cmd, read_weight_file(wbin), TARGET, fill=FILL)
    assert ex.run(inp, check=True) == ref
    for seed in range(4):
        assert ex.run(inp, schedule="random", seed=seed) == ref
    with pytest.raises(InputError, match="schedule 'fifo' unknown"):
        ex.run(inp, schedule="fifo")


def test_unknown_opcode_and_truncation_named():
    import re

    from tcc_compiler.errors import FormatError
    from tcc_compiler.isa.codec import command_offsets, decode_commands, encode_commands

    cmds, *_ = _conv_program()
    cmds = cmds + [C.End()]
    raw = encode_commands(cmds)
    offs = command_offsets(cmds)
    at = offs[1]
    unknown = 0
    for b in range(256):                        # every header byte value that is no opcode
        bad = bytearray(raw)
        bad[at] = b
        try:
            decode_commands(bytes(bad))
        except FormatError as exc:
            msg = str(exc)
            if "unknown opcode" in msg:             # a changed length may desync later ones
                assert re.search(r"command \d+ at byte 0x[0-9a-f]+: unknown opcode", msg)
                unknown += f"command 1 at byte {at:#x}: unknown opcode" in msg
    assert unknown > 0
    with pytest.raises(FormatError, match=rf"command 1 at byte {at:#x} \(DMA_LOAD\): "
                                          ".*truncated"):
        decode_commands(bytes(raw[:offs[2] - 1]))


def test_never_written_read_named():
    cmds = [_load(Region.ACT, 0, 0, 8), _store(Region.OUTPUT, 0, 0, 8, wait_load=0)]
    cmd = read_cmd_file(write_cmd_file(cmds + [C.End()], sram_peak_bytes=SRAM,
                                       act_arena_bytes=64, input_bytes=4, output_bytes=8,
                                       tool_version="t"))
    ex = Executor(cmd, None, TARGET)
    assert ex.run(bytes(4)) == bytes(8)                       # unchecked: reads the fill
    with pytest.raises(ExecutionError, match=r"command 0 \(DMA_LOAD\): field dram: reads ACT "
                                             r"byte 0x0 that nothing wrote"):
        ex.run(bytes(4), check=True)


def _mutations():
    from hypothesis import strategies as st

    cmds, *_ = _conv_program()
    choices = [(i, f) for i, c in enumerate(cmds) for f in c.SPEC.fields]
    return st.sampled_from(choices).flatmap(
        lambda cf: st.tuples(st.just(cf[0]), st.just(cf[1].name),
                             st.integers(cf[1].type.min, cf[1].type.max)))


@pytest.mark.parametrize("check", [False, True])
def test_fuzzed_fields_only_raise_tcc_errors(check):
    import dataclasses
    import re

    from hypothesis import HealthCheck, given, settings

    from tcc_compiler.errors import TccError

    base, inp, n_out, wbin = _conv_program()
    wf = read_weight_file(wbin)

    @settings(max_examples=60, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow])
    @given(_mutations())
    def run_one(m):
        i, name, value = m
        cmds = list(base)
        cmds[i] = dataclasses.replace(cmds[i], **{name: value})
        cmd = read_cmd_file(write_cmd_file(cmds + [C.End()], sram_peak_bytes=SRAM,
                                           act_arena_bytes=0, input_bytes=len(inp),
                                           output_bytes=n_out, tool_version="t"))
        try:
            Executor(cmd, wf, TARGET).run(inp, check=check)
        except TccError as exc:          # any other exception fails the test
            assert re.search(r"command \d+ \([A-Z_]+\)", str(exc)), str(exc)

    run_one()


def _resize_prog(x: np.ndarray, fh: int, fw: int, mode: int, rows: int, over=None):
    """Hand-built bilinear program: bands of ``rows`` output rows, each loading the input rows
    its taps read (numerics/resize.py input_rows), one RESIZE_TILE, one store."""
    from tcc_compiler.numerics.resize import COORD_MODES, input_rows

    h, w, c = x.shape
    cmds = []
    for oy0 in range(0, h * fh, rows):
        n = min(rows, h * fh - oy0)
        iy0, iy1 = input_rows(h, fh, COORD_MODES[mode], oy0, n)
        cmds.append(_load(Region.INPUT, iy0 * w * c, 0, (iy1 - iy0) * w * c))
        f = dict(in_sram=0, out_sram=0x4000, in_h=iy1 - iy0, in_w=w, c=c, out_h=n, full_h=h,
                 in_y0=iy0, out_y0=oy0, fh=fh, fw=fw, mode=mode)
        f.update(over or {})
        cmds.append(C.ResizeTile(**f, wait_load=0))
        cmds.append(_store(Region.OUTPUT, oy0 * w * fw * c, 0x4000, n * w * fw * c,
                           wait_compute=0))
    return cmds


@pytest.mark.parametrize("mode,fh,fw,rows", [(0, 2, 2, 3), (1, 4, 4, 5), (2, 2, 4, 16)])
def test_resize_tile_bands_equal_numerics(mode, fh, fw, rows):
    from tcc_compiler.numerics.resize import COORD_MODES, bilinear_int8

    x = np.random.default_rng(mode).integers(-128, 128, (H, W, CIN), dtype=np.int8)
    out = _run(_resize_prog(x, fh, fw, mode, rows), x.tobytes(), x.size * fh * fw)
    want = bilinear_int8(x, H, fh, fw, COORD_MODES[mode])
    assert out == want.tobytes()


@pytest.mark.parametrize("over,msg", [({"mode": 3}, "mode 3"), ({"fw": 0}, "factors"),
                                      ({"in_y0": 4}, "outside"), ({"in_h": 1}, "outside the band")])
def test_resize_tile_refuses_bad_fields(over, msg):
    x = np.zeros((H, W, CIN), np.int8)
    with pytest.raises(ExecutionError, match=msg):
        _run(_resize_prog(x, 2, 2, 0, 4, over), x.tobytes(), x.size * 4)


def test_bad_compressed_parameter_record_names_its_deflate_block():
    """Records a DMA_LOAD_Z expanded have no byte of their own in the file: the message names
    quantized_network.bin, the compressed block's first byte, the layer entry and the record's
    place in the block's decompressed bytes."""
    from tcc_compiler.isa.wcodec import BlockCompressor

    recs = bytearray(pack_conv_params([0] * 64, [1 << 30] * 64, [31] * 64))
    recs[5 * 16 + 12] = 99   # record 5's shift: outside 1..62
    wb = WeightFileBuilder(BlockCompressor())
    blobs = wb.add_layer("c", 0, bytes(64 * 9), bytes(recs), block_channels=64)
    [blk] = blobs.param_blocks
    assert blk.compressed
    load = C.DmaLoadZ(dram=dram_address(Region.WEIGHTS, blk.offset), sram=0x1000,
                      src_bytes=blk.stored_bytes, dst_bytes=blk.raw_bytes)
    tile = C.ConvTile(0, 0, 0x1000, 0x2000, 0, 1, 1, 1, 64, 1, 1, 1, 1, 1, 1)
    with pytest.raises(ExecutionError, match=(
            rf"^quantized_network.bin: byte {128 + blk.offset} \(layer table entry 0, its params "
            r"blob \(compressed\)\): a DEFLATE block whose decompressed bytes 80..95 hold the "
            r"record: parameter record of channel 5: shift 99 outside 1..62 \(read by command "
            r"2 \(CONV_TILE\) of npu_cmd.bin\)$")):
        _run([load, _cfg(cin_g=1), tile], bytes(1), 64, wb.build("t"))
