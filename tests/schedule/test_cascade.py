"""Cascading (schedule/cascade.py): chains of ops run band by band with their intermediates in
SRAM are bit-exact against the golden integer model (in stream order and in random legal
interleavings, hazard-free), and they move fewer DRAM bytes than any schedule that stores the
intermediate, by an amount computed here by hand from the band rows."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import quantize_on_noise, run_program_impl
from onnx import TensorProto, helper, numpy_helper

from tcc_compiler.frontend import import_onnx
from tcc_compiler.quant import run_golden
from tcc_compiler.schedule import lower
from tcc_compiler.schedule.cascade import chain_bands
from tcc_compiler.schedule.lowering import Lowering
from tcc_compiler.schedule.report import dram_bytes
from tcc_compiler.target import load_target


def _run(prog, budget, g, x, schedule="inorder", seed=0):
    """Execute ``prog`` on float input ``x``; return (outputs by name, hazards found)."""
    return run_program_impl(prog, budget, g, x, schedule, seed)


def _assert_golden(prog, budget, g, x, **kw):
    got, hazards = _run(prog, budget, g, x, **kw)
    assert hazards == []
    gold = run_golden(g, x)
    for name, arr in got.items():
        np.testing.assert_array_equal(arr, gold["int:" + name].reshape(-1), err_msg=name)


@pytest.fixture(scope="module")
def resnet_q(residual_net, run_pipeline):
    """The residual test net at 48x48 (stem conv + max pool, identity block, downsample
    block), quantized; plus an input that was not used for calibration."""
    hw = 48
    g = run_pipeline(import_onnx(residual_net(seed=2, hw=hw, c=16)))
    return g, quantize_on_noise(g, seed=5)


@pytest.mark.parametrize("budget", [24 * 1024, 64 * 1024])
def test_cascaded_resnet_bit_exact(resnet_q, budget):
    """Small budgets, no resident zone: the stem conv -> max pool, the identity block (its
    shortcut read from the input band) and the downsample block (its 1x1 shortcut conv as the
    chain's side op) are cascaded, and the result equals the golden model byte for byte."""
    g, x = resnet_q
    lw = Lowering(g, load_target().with_sram(budget), 0, cascade=True)
    prog = lw.run()
    chains = list(lw.chains.values())
    kinds = {tuple(n.op.value for n in c.nodes) for c in chains}
    assert ("conv", "maxpool") in kinds
    assert any(c.sc_shared for c in chains)
    assert any(c.side is not None for c in chains)
    assert all(li.sram_peak_bytes <= budget for li in prog.layers)
    assert sum(li.plan.startswith("cascade") for li in prog.layers) == sum(
        len(c.inner()) + 1 for c in chains)
    _assert_golden(prog, budget, g, x)


def test_cascaded_resnet_random_interleavings(resnet_q):
    """Random legal interleavings of the three queues (byte-level hazard and uninitialised-
    read checking on) give the same bytes as the golden model."""
    g, x = resnet_q
    budget = 24 * 1024
    prog = Lowering(g, load_target().with_sram(budget), 0, cascade=True).run()
    for seed in (1, 2):
        _assert_golden(prog, budget, g, x, schedule="random", seed=seed)


def _two_conv_model(h: int, w: int, c: int, k: int = 3) -> onnx.ModelProto:
    """x[1, c, h, w] -> Conv kxk/p(k//2) -> Relu -> Conv kxk -> Relu."""
    r = np.random.default_rng(0)
    inits, nodes, cur = [], [], "x"
    for i in range(2):
        wt = (r.standard_normal((c, c, k, k)) / np.sqrt(k * k * c)).astype(np.float32)
        b = (r.standard_normal(c) * 0.1).astype(np.float32)
        inits += [numpy_helper.from_array(wt, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes.append(helper.make_node("Conv", [cur, f"w{i}", f"b{i}"], [f"c{i}"],
                                      kernel_shape=[k, k], pads=[k // 2] * 4,
                                      name=f"conv{i}"))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}"))
        cur = f"r{i}"
    graph = helper.make_graph(
        nodes, "two_conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, h, w])],
        [helper.make_tensor_value_info(cur, TensorProto.FLOAT, [1, c, h, w])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_two_conv_chain_traffic_by_hand(run_pipeline):
    """conv3x3 -> conv3x3 on a 40x32x16 map (20 KiB per tensor) in 32 KiB of SRAM.

    Any schedule that does not cascade stores the 20 KiB intermediate and loads it back at
    least once, so it moves at least X + 2 M + Y + weights bytes. Cascaded in bands of R output
    rows, the first conv reads the rows [y0 - 2, y1 + 2) of x (clipped to the map) per band
    and nothing else goes through DRAM except the output (written once) and the weights
    (read once): reads = weights + sum over bands of clipped rows * W * C, writes = Y.
    """
    h, w, c = 40, 32, 16
    budget = 32 * 1024
    g = run_pipeline(import_onnx(_two_conv_model(h, w, c)))
    x = quantize_on_noise(g, seed=1)
    tgt = load_target().with_sram(budget)
    lw = Lowering(g, tgt, 0, cascade=True)
    prog = lw.run()
    assert len(lw.chains) == 1
    (ch,) = lw.chains.values()
    rows = ch.rows
    assert 1 <= rows < h          # the intermediate does not fit whole: several bands
    x_bytes = m_bytes = y_bytes = h * w * c
    weights = 2 * (c * 3 * 3 * c + c * 16)     # int8 OHWI weights + 16-byte param records
    band_rows = sum(min(h, y0 + rows + 2) - max(0, y0 - 2) for y0 in range(0, h, rows))
    rd, wr = dram_bytes(prog.commands)
    assert (rd, wr) == (weights + band_rows * w * c, y_bytes)
    assert rd + wr < x_bytes + 2 * m_bytes + y_bytes + weights
    # the same rows from the planner's band table (halo = 2 rows each side, clipped)
    assert sum(b[0][3] - b[0][2] for b in chain_bands(ch.geoms, rows)) == band_rows
    # without cascading the intermediate goes through DRAM
    plain = Lowering(g, tgt, 0, cascade=False).run()
    prd, pwr = dram_bytes(plain.commands)
    assert prd + pwr >= x_bytes + 2 * m_bytes + y_bytes + weights
    _assert_golden(prog, budget, g, x)


def test_dma_bound_chain_is_kept_by_lower(run_pipeline):
    """conv1x1 -> conv1x1 with 32 channels on 40x32 (40 KiB per tensor), 32 KiB of SRAM: per
    pixel the array needs 1 cycle per conv while a non-cascaded schedule moves at least
    4 x 32 bytes (x, the intermediate twice, y) = 10 cycles at 12.8 B/cycle, so the chain is
    DMA-bound and cascading (no halo for 1x1: x read once, y written once, no recompute) is
    faster; lower() must keep it, with exactly weights + X bytes read and Y written."""
    h, w, c = 40, 32, 32
    g = run_pipeline(import_onnx(_two_conv_model(h, w, c, k=1)))
    x = quantize_on_noise(g, seed=2)
    tgt = load_target().with_sram(32 * 1024)
    best = lower(g, tgt, zone_fractions=(0.0,))
    weights = 2 * (c * c + c * 16)
    assert dram_bytes(best.commands) == (weights + h * w * c, h * w * c)
    assert all(li.plan.startswith("cascade") for li in best.layers)
    _assert_golden(best, 32 * 1024, g, x)


def test_lower_without_cascade_has_no_cascaded_layers(resnet_q):
    g, _ = resnet_q
    prog = lower(g, load_target().with_sram(24 * 1024), cascade=False)
    assert not any(li.plan.startswith("cascade") or li.cmds for li in prog.layers)


def test_cascaded_layers_account_for_every_dma(resnet_q):
    """Cascaded ops' commands interleave; each op lists its own (``LayerInfo.cmds``), so the
    per-layer DRAM bytes of the report add up to the program's, and every command belongs to
    exactly one layer (END excepted)."""
    from tcc_compiler.schedule.report import layer_dram

    g, _ = resnet_q
    prog = Lowering(g, load_target().with_sram(24 * 1024), 0, cascade=True).run()
    owned = []
    for li in prog.layers:
        owned += li.cmds if li.cmds is not None else range(li.first_cmd, li.end_cmd)
    assert sorted(owned) == list(range(len(prog.commands) - 1))
    per_layer = [layer_dram(prog, li) for li in prog.layers]
    assert (sum(d["dram_read_bytes"] for d in per_layer),
            sum(d["dram_write_bytes"] for d in per_layer)) == dram_bytes(prog.commands)


def test_report_counts_each_cascaded_op_once(resnet_q):
    """The compile report's per-layer "commands" add up to the program's (END excepted) and,
    for cascaded ops, "estimated_cycles" is the op's own compute time, so a chain's ops do not
    each claim the chain's whole span (their sum stays within the total latency)."""
    from tcc_compiler.binfmt.weightfile import write_weight_file
    from tcc_compiler.emit.report import build_report
    from tcc_compiler.passes import PassManager

    g, _ = resnet_q
    tgt = load_target().with_sram(24 * 1024)
    prog = Lowering(g, tgt, 0, cascade=True).run()
    rep = build_report(g, prog, tgt, b"", PassManager([]), {},
                       write_weight_file(prog.weights, "test"))
    assert sum(r["commands"] for r in rep["layers"]) == len(prog.commands) - 1
    casc = [r for r in rep["layers"] if r["tiling"].startswith("cascade")]
    assert casc
    assert sum(r["estimated_cycles"] for r in rep["layers"]) <= rep["estimated_cycles"]
    assert all(0 < r["mac_utilisation"] <= 1 for r in casc if r["macs"])
