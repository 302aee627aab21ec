"""Depthwise convs on the depthwise datapath (CONV_CFG flags bit2), end to end.

Random inverted-residual blocks (1x1 expand -> depthwise k x k, stride s -> 1x1 project, +
residual when the shapes allow) built with onnx.helper compile, run on the reference executor
bit-exactly against the golden integer model, close to ONNX Runtime's float output, with the
depthwise layers in depthwise mode; small SRAMs force channel blocks x spatial tiles with halos.
The zoo's MobileNetV2 (when the zoo has it) runs bit-exactly at a small size.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tcc_compiler import api, zoo
from tcc_compiler.isa import commands as C
from tcc_compiler.isa.spec import CONV_FLAG_DEPTHWISE
from tcc_compiler.runtime import load_program
from tcc_compiler.runtime.check import Checker
from tcc_compiler.target import load_target
from tests.helpers.two_cores import sizes


def inverted_residual(c: int, hw: tuple[int, int], expand: int, k: int, stride: int,
                      pad: tuple[int, int, int, int], seed: int) -> onnx.ModelProto:
    """1 x c x H x W -> Conv 1x1 (c*expand) -> Relu6 (Clip) -> depthwise Conv k x k (stride,
    pads ``pad`` t,l,b,r; group = c*expand) -> Clip -> Conv 1x1 (c) [+ input when the
    shapes match]. Float32, opset 17."""
    r = np.random.default_rng(seed)
    e = c * expand
    h, w = hw
    inits = {"w1": r.normal(0, 0.4, (e, c, 1, 1)), "b1": r.normal(0, 0.1, e),
             "wd": r.normal(0, 0.4, (e, 1, k, k)), "bd": r.normal(0, 0.1, e),
             "w2": r.normal(0, 0.3, (c, e, 1, 1)), "b2": r.normal(0, 0.1, c),
             "lo": np.array(0.0), "hi": np.array(6.0)}
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["a"], kernel_shape=[1, 1]),
             helper.make_node("Clip", ["a", "lo", "hi"], ["ar"]),
             helper.make_node("Conv", ["ar", "wd", "bd"], ["d"], kernel_shape=[k, k],
                              strides=[stride, stride], group=e,
                              pads=[pad[0], pad[1], pad[2], pad[3]]),
             helper.make_node("Clip", ["d", "lo", "hi"], ["dr"]),
             helper.make_node("Conv", ["dr", "w2", "b2"], ["p"], kernel_shape=[1, 1])]
    oh = (h + pad[0] + pad[2] - k) // stride + 1
    ow = (w + pad[1] + pad[3] - k) // stride + 1
    if (oh, ow) == (h, w):
        nodes.append(helper.make_node("Add", ["p", "x"], ["y"]))
    else:
        nodes[-1].output[0] = "y"
    g = helper.make_graph(
        nodes, "ir_block", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, h, w])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c, oh, ow])],
        [numpy_helper.from_array(v.astype(np.float32), n) for n, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _compile_run(tmp_path, model, c, h, w, target=None, n=2):
    """Compile ``model`` (input 1 x c x h x w), run ``n`` random inputs; (prog, results)."""
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    rng = np.random.default_rng(1)
    calib = [rng.uniform(-2, 2, (1, c, h, w)).astype(np.float32) for _ in range(3)]
    api.compile(path, f"{w}x{h}x{c}", calibration=calib, target=target).save(tmp_path / "out")
    prog = load_program(tmp_path / "out")
    checker = Checker(prog, path)
    xs = [rng.uniform(-2, 2, (1, c, h, w)).astype(np.float32) for _ in range(n)]
    return prog, [checker.check(x, prog.run(x)) for x in xs]


def _depthwise_cfgs(prog) -> list[C.ConvCfg]:
    return [c for c in prog.cmd.commands
            if isinstance(c, C.ConvCfg) and c.flags & CONV_FLAG_DEPTHWISE]


# (channels, H x W, expand, kernel, stride, pads t,l,b,r): kernels 3 and 5, strides 1 and 2,
# symmetric, asymmetric (TF "SAME" at stride 2) and no padding, odd sizes.
CASES = [(8, (12, 10), 2, 3, 1, (1, 1, 1, 1)),
         (6, (11, 13), 3, 3, 2, (0, 0, 1, 1)),
         (16, (9, 9), 4, 5, 1, (2, 2, 2, 2)),
         (5, (14, 9), 2, 5, 2, (1, 2, 2, 1)),
         (24, (7, 8), 6, 3, 2, (1, 1, 1, 1)),
         (4, (10, 10), 1, 3, 1, (0, 0, 0, 0))]


@pytest.mark.parametrize("case", CASES, ids=[f"c{c[0]}k{c[3]}s{c[4]}" for c in CASES])
def test_inverted_residual_bit_exact(tmp_path, case):
    c, (h, w), e, k, s, pad = case
    prog, results = _compile_run(tmp_path, inverted_residual(c, (h, w), e, k, s, pad, 3),
                                 c, h, w)
    cfgs = _depthwise_cfgs(prog)
    assert len(cfgs) == 1 and (cfgs[0].kh, cfgs[0].sh, cfgs[0].cin_g) == (k, s, 1)
    assert all(r["bit_exact"] for r in results)
    assert min(r["sqnr_db"] for r in results) >= 20.0


def test_small_sram_tiles_depthwise_in_channel_blocks_and_bands(tmp_path):
    """A 12 KiB SRAM cannot hold the 144-channel 20x20 depthwise input: it runs in channel
    blocks and row/column tiles with halos, still bit-exact."""
    c, h, w = 24, 20, 20
    tgt = load_target().with_sram(12 * 1024)
    prog, results = _compile_run(tmp_path, inverted_residual(c, (h, w), 6, 3, 1, (1,) * 4, 5),
                                 c, h, w, target=tgt)
    dw_tiles, in_dw = [], False
    for cmd in prog.cmd.commands:
        if isinstance(cmd, C.ConvCfg):
            in_dw = bool(cmd.flags & CONV_FLAG_DEPTHWISE)
        elif isinstance(cmd, C.ConvTile) and in_dw:
            dw_tiles.append(cmd)
    assert len({t.oc for t in dw_tiles}) >= 1 and any(t.oc < c * 6 for t in dw_tiles)
    assert any(t.out_h < h or t.out_w < w for t in dw_tiles)
    assert all(r["bit_exact"] for r in results)


def test_dilated_depthwise_stays_on_the_array(tmp_path):
    """Depthwise mode has dilation 1 only (the vendor's limit): a dilated depthwise conv runs
    on the MAC array, bit-exact."""
    m = inverted_residual(8, (12, 12), 2, 3, 1, (2, 2, 2, 2), 4)
    dwn = m.graph.node[2]
    dwn.attribute.append(helper.make_attribute("dilations", [2, 2]))
    prog, results = _compile_run(tmp_path, m, 8, 12, 12)
    assert _depthwise_cfgs(prog) == []
    assert all(r["bit_exact"] for r in results)


def test_depthwise_mode_is_faster_than_the_array(tmp_path):
    """The same block on a target without the depthwise datapath: same outputs' layers, more
    estimated cycles (the array uses 1 of its 32 x 64 lanes per group)."""
    import dataclasses

    m = inverted_residual(16, (28, 28), 6, 3, 1, (1,) * 4, 6)
    path = tmp_path / "m.onnx"
    onnx.save(m, path)
    calib = [np.random.default_rng(2).uniform(-2, 2, (1, 16, 28, 28)).astype(np.float32)]
    on = api.compile(path, "28x28x16", calibration=calib).report
    off_t = dataclasses.replace(load_target(), depthwise_mode=False)
    off = api.compile(path, "28x28x16", calibration=calib, target=off_t).report
    assert on["estimated_cycles"] < off["estimated_cycles"] / 2
    # the bound prices each MAC at its own unit's peak: 3x3 depthwise MACs at 64 x 9 per
    # cycle, the 1x1 convs' at 2048 (28 x 28 x 96 x 9 depthwise, 2 x 28 x 28 x 16 x 96 array)
    dw, arr = 28 * 28 * 96 * 9, 2 * 28 * 28 * 16 * 96
    assert on["macs"] == off["macs"] == dw + arr
    assert on["roofline"]["compute_cycles"] == round(arr / 2048 + dw / 576)
    assert off["roofline"]["compute_cycles"] == round((arr + dw) / 2048)


@pytest.mark.skipif("mobilenet-v2" not in zoo.NAMES,
                    reason="the zoo has no mobilenet-v2 builder yet (branch zoo)")
def test_mobilenet_v2_small_bit_exact(tmp_path):
    model = tmp_path / "mbv2.onnx"
    zoo.save("mobilenet-v2", model, width=32, height=32, channels=3)
    api.compile(model, "32x32x3").save(tmp_path / "out")
    prog = load_program(tmp_path / "out")
    assert len(_depthwise_cfgs(prog)) == 17
    checker = Checker(prog, model)
    x = np.random.default_rng(0).uniform(-2, 2, (1, 3, 32, 32)).astype(np.float32)
    assert checker.check(x, prog.run(x))["bit_exact"]


def test_depthwise_program_random_interleavings_bit_exact(tmp_path):
    """The hazard checker finds no conflict in a tiled depthwise program, and 8 random legal
    interleavings of its queues give the in-order result."""

    c, h, w = 16, 16, 16
    tgt = load_target().with_sram(16 * 1024)
    prog, results = _compile_run(tmp_path, inverted_residual(c, (h, w), 4, 3, 2, (0, 0, 1, 1),
                                                             7), c, h, w, target=tgt, n=1)
    assert results[0]["bit_exact"] and _depthwise_cfgs(prog)
    _hazard_free_in_random_orders(prog, (c, h, w), 8)


# (channels, H x W, expand, kernel, stride, pads): kernels beyond the datapath's 5, run as
# parts summed in int32 partials (CONV_CFG out_mode bit1): ConvMixer's 7x7 "same", 9x9, a
# stride-2 7x7 with TF-style asymmetric padding, an even 6x6 without padding, and a wide one
# (300 channels: 5 passes of the 64-lane datapath, the last one partial).
SPLIT_CASES = [(8, (12, 10), 2, 7, 1, (3, 3, 3, 3)),
               (6, (13, 11), 2, 9, 1, (4, 4, 4, 4)),
               (5, (15, 14), 2, 7, 2, (2, 3, 3, 2)),
               (4, (11, 12), 3, 6, 1, (0, 0, 0, 0)),
               (50, (9, 8), 6, 7, 1, (3, 3, 3, 3))]


@pytest.mark.parametrize("case", SPLIT_CASES,
                         ids=[f"c{c[0]}k{c[3]}s{c[4]}" for c in SPLIT_CASES])
def test_large_kernel_runs_as_parts_bit_exact(tmp_path, case):
    """A depthwise kernel larger than depthwise_max_kernel runs on the depthwise datapath as
    parts of at most 5x5 (the first writing acc + bias as int32, the others accumulating, the
    last requantizing), bit-exact against the golden model's whole-kernel conv."""
    c, (h, w), e, k, s, pad = case
    prog, results = _compile_run(tmp_path, inverted_residual(c, (h, w), e, k, s, pad, 3),
                                 c, h, w)
    cfgs = _depthwise_cfgs(prog)
    assert cfgs and all(max(g.kh, g.kw) <= 5 and g.sh == s for g in cfgs)
    assert {g.out_mode for g in cfgs} == {1, 3, 2}   # first, middle and last parts
    assert all(r["bit_exact"] for r in results)
    assert min(r["sqnr_db"] for r in results) >= 20.0


def test_large_kernel_parts_in_tiles_hazard_free_and_faster_than_the_array(tmp_path):
    """With a small SRAM the 7x7 depthwise conv runs in spatial tiles and channel blocks, each
    with its int32 partial buffer: no hazard, 6 random interleavings of the queues give the
    in-order result, and the estimate is well below the same block on the MAC array."""
    import dataclasses


    c, h, w = 16, 18, 18
    tgt = load_target().with_sram(24 * 1024)
    model = inverted_residual(c, (h, w), 4, 7, 1, (3,) * 4, 8)
    prog, results = _compile_run(tmp_path, model, c, h, w, target=tgt, n=1)
    assert results[0]["bit_exact"]
    tiles, in_dw = [], False
    for cmd in prog.cmd.commands:
        if isinstance(cmd, C.ConvCfg):
            in_dw = bool(cmd.flags & CONV_FLAG_DEPTHWISE) and cmd.out_mode == 2
        elif isinstance(cmd, C.ConvTile) and in_dw:
            tiles.append(cmd)
    assert len(tiles) > 1 and any(t.out_h < h or t.oc < c * 4 for t in tiles)
    _hazard_free_in_random_orders(prog, (c, h, w), 6)
    path = tmp_path / "m.onnx"
    calib = [np.random.default_rng(2).uniform(-2, 2, (1, c, h, w)).astype(np.float32)]
    on = api.compile(path, f"{w}x{h}x{c}", calibration=calib).report
    off_t = dataclasses.replace(load_target(), depthwise_mode=False)   # 7x7 on the array
    off = api.compile(path, f"{w}x{h}x{c}", calibration=calib, target=off_t).report
    assert on["estimated_cycles"] < off["estimated_cycles"] * 0.8


@pytest.mark.slow
@pytest.mark.skipif("convmixer-768-32" not in zoo.NAMES, reason="no convmixer-768-32 builder")
def test_convmixer_small_bit_exact_with_its_7x7_layers_as_parts(tmp_path):
    """The zoo's ConvMixer-768/32 at 56x56 (an 8x8 map): its 32 7x7 depthwise convs run as
    kernel parts on the depthwise datapath (in cascaded chains with their BatchNorm affines
    where the planner chains them), bit-exact against the golden model."""
    model = tmp_path / "cm.onnx"
    zoo.save("convmixer-768-32", model, width=56, height=56, channels=3)
    api.compile(model, "56x56x3").save(tmp_path / "out")
    prog = load_program(tmp_path / "out")
    finals = [c for c in _depthwise_cfgs(prog) if c.out_mode == 2]
    assert finals and all(max(c.kh, c.kw) <= 5 for c in _depthwise_cfgs(prog))
    assert len({id(c) for c in finals}) >= 32
    x = np.random.default_rng(0).uniform(-2, 2, (1, 3, 56, 56)).astype(np.float32)
    assert Checker(prog, model).check(x, prog.run(x))["bit_exact"]


def _hazard_free_in_random_orders(prog, chw, seeds: int) -> None:
    """No hazard in ``prog``'s command stream, and the same output bytes in ``seeds`` random
    legal queue interleavings as in order (one random [1, C, H, W] input)."""
    from tcc_compiler.sim.hazards import check_stream

    assert check_stream(list(prog.cmd.commands), sizes(prog)) == []
    x = np.random.default_rng(9).uniform(-2, 2, (1, *chw)).astype(np.float32)
    q = prog.quantize(x)
    ref = prog.executor.run(q)
    for seed in range(seeds):
        assert prog.executor.run(q, schedule="random", seed=seed) == ref, seed
