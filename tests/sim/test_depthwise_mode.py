"""Depthwise mode (CONV_CFG flags bit2): the executor computes it with the golden arithmetic
(numerics.conv_accumulate / conv_epilogue, checked here against a plain numpy loop), refuses
malformed tiles, and sim/limits refuses a tile beyond the target's depthwise limits; the
target's depthwise fields round-trip through the manifest form; the cost model prices it."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from tcc_compiler.binfmt import read_cmd_file, write_cmd_file
from tcc_compiler.errors import ExecutionError
from tcc_compiler.isa import commands as C
from tcc_compiler.isa import spec
from tcc_compiler.schedule import cost
from tcc_compiler.sim import Executor
from tcc_compiler.sim.limits import check_program
from tcc_compiler.target import Target, load_target

TGT = load_target().with_sram(1 << 14)
DW = spec.CONV_FLAG_DEPTHWISE


def _program(cmds):
    return read_cmd_file(write_cmd_file(cmds + [C.End()], sram_peak_bytes=1 << 14,
                                        act_arena_bytes=0, input_bytes=64, output_bytes=64,
                                        tool_version="t"), "prog/npu_cmd.bin")


def _dw(k=3, s=1, d=1, cin_g=1, flags=DW, c=8, oc=None):
    """CONV_CFG + CONV_TILE of a k x k depthwise conv over a 6 x 6 x c tile, pad 1."""
    out = (6 + 2 - ((k - 1) * d + 1)) // s + 1
    cfg = C.ConvCfg(k, k, s, s, d, d, 0, flags, c, cin_g, 0, 0, 0, -128, 127)
    tile = C.ConvTile(0, 0x400, 0x1000, 0x1400, 0, 6, 6, c, c if oc is None else oc, out, out,
                      1, 1, 1, 1)
    return [cfg, tile]


@pytest.mark.parametrize("k, s, d, what", [
    (7, 1, 1, r"depthwise kernel 7x7, target tcc750x has depthwise_max_kernel = 5"),
    (3, 3, 1, r"depthwise stride 3x3, target tcc750x has depthwise_max_stride = 2"),
    (3, 1, 2, r"depthwise dilation 2x2"),
])
def test_limits_refuse_depthwise_beyond_the_target(k, s, d, what):
    with pytest.raises(ExecutionError, match=r"command 1 \(CONV_TILE\): " + what):
        check_program(_program(_dw(k, s, d)), TGT)


def test_limits_accept_kernel_5_stride_2_and_refuse_a_target_without_the_unit():
    check_program(_program(_dw(5, 2)), TGT)
    with pytest.raises(ExecutionError, match=r"compute\.depthwise_mode = false"):
        check_program(_program(_dw()), dataclasses.replace(TGT, depthwise_mode=False))


@pytest.mark.parametrize("kw", [{"cin_g": 2, "c": 8, "oc": 4}, {"oc": 4},
                                {"flags": DW | spec.CONV_FLAG_IMAGE}])
def test_executor_refuses_a_malformed_depthwise_tile(kw):
    with pytest.raises(ExecutionError, match="depthwise mode needs cin_g 1, oc == in_c"):
        Executor(_program(_dw(**kw)), None, TGT).run(bytes(64))


def _reference(x, zp, w, s, pads):
    """Plain-loop depthwise conv (int64): x [H, W, C] int8, w [C, k, k, 1] int8."""
    c, k = w.shape[0], w.shape[1]
    xp = np.pad(x.astype(np.int64) - zp, ((pads[0], pads[2]), (pads[1], pads[3]), (0, 0)))
    oh = (xp.shape[0] - k) // s + 1
    ow = (xp.shape[1] - k) // s + 1
    out = np.zeros((oh, ow, c), np.int64)
    for y in range(oh):
        for xx in range(ow):
            win = xp[y * s:y * s + k, xx * s:xx * s + k, :]
            out[y, xx] = (win * w[:, :, :, 0].transpose(1, 2, 0)).sum((0, 1))
    return out


@pytest.mark.parametrize("k, s, pads", [(3, 1, (1, 1, 1, 1)), (5, 2, (2, 1, 2, 2)),
                                        (3, 2, (0, 0, 1, 1))])
def test_depthwise_accumulation_matches_a_plain_loop(k, s, pads):
    """The arithmetic depthwise mode runs (the golden model's conv_accumulate with groups =
    in_c) against an independent loop."""
    from tcc_compiler.numerics import conv_accumulate

    rng = np.random.default_rng(k * 10 + s)
    c = 13
    x = rng.integers(-128, 128, (9, 11, c), dtype=np.int8)
    w = rng.integers(-127, 128, (c, k, k, 1), dtype=np.int8)
    acc = conv_accumulate(x, 5, w, (s, s), pads, (1, 1), c)
    assert np.array_equal(np.asarray(acc, np.int64), _reference(x, 5, w, s, pads))


def test_cost_prices_depthwise_on_its_own_unit():
    t = load_target()
    regs = C.Registers()
    cfg, tile = _dw(3, 1, c=96)
    regs.update(cfg)
    # 6 x 6 pixels x ceil(96 / 64) channel passes x ceil(9 / 9) tap passes
    assert cost.command_cycles(tile, regs, t) == t.compute_setup_cycles + 36 * 2 * 1
    cfg5, tile5 = _dw(5, 1, c=64)
    regs.update(cfg5)
    assert cost.command_cycles(tile5, regs, t) == t.compute_setup_cycles + 16 * 1 * 3
    assert cost.compute_cycles(2048 + 576, 576, t) == pytest.approx(2.0)


def test_target_depthwise_fields_round_trip_and_old_targets_hash_as_before():
    t = load_target()
    assert t.depthwise_mode and t.depthwise_macs_per_cycle == 64 * 9
    d = t.to_dict()
    assert d["depthwise_taps_per_cycle"] == 9
    assert Target.from_dict(d) == dataclasses.replace(t, source="")
    off = dataclasses.replace(t, depthwise_mode=False)
    d_off = off.to_dict()
    assert not any(k.startswith("depthwise_") for k in d_off)   # as before the unit existed
    assert Target.from_dict(d_off) == dataclasses.replace(off, source="")


def _acc_program(k=3, c=8, modes=(1, 3, 2), flags=DW, io=0):
    """One 6 x 6 x c tile (pad 1) convolved ``len(modes)`` times with the same k x k kernel,
    the out_modes ``modes`` chaining an int32 partial at 0x2000 (CONV_CFG out_mode bit1), the
    last part's int8 output at 0x1400; with ``io`` > 0 the input, weights and params are
    loaded from INPUT offsets 0, 0x400, 0x1000 (``io`` bytes) and the output stored to OUTPUT."""
    from tcc_compiler.isa.spec import Region, dram_address

    cmds = []
    if io:
        cmds += [C.DmaLoad(dram_address(Region.INPUT, a), a, n, 1, 1, 0, 0, 0, 0)
                 for a, n in ((0, 36 * c), (0x400, c * k * k), (0x1000, 16 * c))]
    for j, mode in enumerate(modes):
        out = 0x2000 if mode & spec.OUT_MODE_INT32 else 0x1400
        cmds += [C.ConvCfg(k, k, 1, 1, 1, 1, mode, flags, c, 1, 0, 0, 0, -128, 127),
                 C.ConvTile(0, 0x400, 0x1000, out, 0 if j == 0 else 0x2000, 6, 6, c, c, 6, 6,
                            1, 1, 1, 1, wait_load=0 if io and j == 0 else 7)]
    if io:
        cmds.append(C.DmaStore(dram_address(Region.OUTPUT, 0), 0x1400, 36 * c, 1, 1, 0, 0, 0,
                               0, wait_compute=0))
    return read_cmd_file(write_cmd_file(cmds + [C.End()], sram_peak_bytes=1 << 14,
                                        act_arena_bytes=0, input_bytes=max(io, 64),
                                        output_bytes=max(36 * c, 64), tool_version="t"),
                         "prog/npu_cmd.bin")


def test_accumulate_mode_sums_parts_into_the_partial_and_replaces_the_bias():
    """Three parts of the same kernel in out_modes 1, 3, 2 give the epilogue of 3 x acc +
    bias (the bias added once, by the first part; acc from a plain numpy loop)."""
    from tcc_compiler.numerics.epilogue import conv_epilogue_int64

    c = 8
    rng = np.random.default_rng(3)
    x = rng.integers(-128, 128, (6, 6, c), dtype=np.int8)
    w = rng.integers(-127, 128, (c, 3, 3, 1), dtype=np.int8)
    bias = rng.integers(-5000, 5000, c).astype(np.int32)
    mult = np.full(c, 1 << 29, np.int64)
    shift = np.full(c, 36, np.int64)
    inp = bytearray(0x1000 + 16 * c)
    inp[0:x.size] = x.tobytes()
    inp[0x400:0x400 + w.size] = w.tobytes()
    inp[0x1000:] = spec.pack_conv_params(bias, mult, shift)
    out = Executor(_acc_program(c=c, io=len(inp)), None, TGT).run(bytes(inp))
    acc = 3 * _reference(x, 0, w, 1, (1, 1, 1, 1)).astype(np.int64)
    want = conv_epilogue_int64(acc, bias, mult, shift, 0, -128, 127, None, 0, None, np.int8)
    got = np.frombuffer(out, np.int8)[:36 * c].reshape(6, 6, c)
    assert np.array_equal(got, want)
    # the single-part program gives acc once: the partial sums really carried two more
    once = Executor(_acc_program(c=c, modes=(0,), io=len(inp)), None, TGT).run(bytes(inp))
    assert not np.array_equal(np.frombuffer(once, np.int8)[:36 * c].reshape(6, 6, c), want)


@pytest.mark.parametrize("modes, flags, what", [
    ((1, 3, 2), 0, "accumulate\\) needs depthwise mode"),
    ((2,), DW | spec.CONV_FLAG_SHORTCUT, "accumulate\\) needs depthwise mode and no "),
    ((1, 16), DW, "out_mode 16 unknown"),   # (6 = accumulate + two-slope: defined)
    ((1, 8), DW, "int16 table output\\) needs flags bits 3 and 5"),   # 8: LUT + bit5 only
])
def test_executor_refuses_accumulate_outside_depthwise_mode(modes, flags, what):
    with pytest.raises(ExecutionError, match=what):
        Executor(_acc_program(modes=modes, flags=flags), None, TGT).run(bytes(64))


def test_large_kernel_parts_cover_it_once_within_the_datapath():
    t = load_target()
    assert cost.depthwise_parts(5, 5, t) == ((0, 0, 5, 5),)
    for kh, kw in ((7, 7), (9, 9), (6, 11), (13, 7)):
        parts = cost.depthwise_parts(kh, kw, t)
        cover = np.zeros((kh, kw), int)
        for r0, c0, h, w in parts:
            assert max(h, w) <= t.depthwise_max_kernel
            cover[r0:r0 + h, c0:c0 + w] += 1
        assert (cover == 1).all()
        # the cycle model: every part's tap passes, an accumulate pass for all but the first
        per = sum(-(-h * w // 9) for _, _, h, w in parts) + len(parts) - 1
        assert cost.depthwise_pixel_cycles(kh, kw, 64, t) == per
    # 7x7: four parts (each side needs a cut), 7 tap passes + 3 accumulate passes (the whole
    # 49 taps in one window would take 6)
    assert len(cost.depthwise_parts(7, 7, t)) == 4
    assert cost.depthwise_pixel_cycles(7, 7, 96, t) == 2 * 10


def test_cost_prices_an_accumulating_part_with_its_partial_load():
    t = load_target()
    regs = C.Registers()
    prog = _acc_program(k=3, c=96)
    cmds = list(prog.commands)
    got = []
    for cmd in cmds[:-1]:
        if isinstance(cmd, C.ConvTile):
            got.append(cost.command_cycles(cmd, regs, t))
        regs.update(cmd)
    # 36 pixels x 2 channel passes x (1 tap pass [+ 1 accumulate pass])
    assert got == [t.compute_setup_cycles + 36 * 2 * p for p in (1, 2, 2)]
