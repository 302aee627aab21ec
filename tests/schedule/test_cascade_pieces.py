"""Chains that do not fit or pay whole are cascaded in pieces (schedule/cascade.py
``split_chain``): a residual-free network (MobileOne-S1 after re-parameterisation) is one chain
the length of the network, whose weights never fit in the SRAM at once. The partition is the
cheapest one (checked against every partition, by brute force), the pieces run bit-exactly
against the golden integer model in stream order and in random legal queue interleavings
(hazard-free), and they move fewer DRAM bytes and take fewer cycles than no cascading."""

from __future__ import annotations

import itertools

import numpy as np
import onnx
import pytest
from conftest import quantize_on_noise, run_program_impl
from onnx import TensorProto, helper, numpy_helper

from tcc_compiler.frontend import import_onnx
from tcc_compiler.quant import run_golden
from tcc_compiler.schedule import lower
from tcc_compiler.schedule.cascade import MAX_PIECE_OPS, find_chains, split_chain
from tcc_compiler.schedule.cost import replay
from tcc_compiler.schedule.geom import conv_geom
from tcc_compiler.schedule.lowering import Lowering
from tcc_compiler.schedule.memory import plan_memory, readers
from tcc_compiler.schedule.report import dram_bytes
from tcc_compiler.schedule.search import splits_chains
from tcc_compiler.target import load_target

#: SRAM of the tests: the plain net's whole chain (all its weights plus its band buffers)
#: does not fit, its pieces do.
BUDGET = 16 * 1024


def plain_net(hw: tuple[int, int] = (40, 48), c: int = 16, blocks: int = 3,
              seed: int = 0) -> onnx.ModelProto:
    """A MobileOne-like residual-free net: x[1, 3, H, W] -> Conv 3x3/s2 (3 -> c) -> Relu,
    then ``blocks`` x (depthwise Conv 3x3 (stride 2 in the second block) -> Relu -> Conv 1x1
    (c -> 2c, then 2c -> 2c) -> Relu). Float32, opset 13."""
    r = np.random.default_rng(seed)
    inits, nodes, cur, ch = [], [], "x", 3

    def conv(name, cin, cout, k, stride, group):
        nonlocal cur
        w = r.normal(0, 1.0 / np.sqrt(k * k * cin / group), (cout, cin // group, k, k))
        inits.extend([numpy_helper.from_array(w.astype(np.float32), name + "_w"),
                      numpy_helper.from_array((r.normal(0, 0.1, cout)).astype(np.float32),
                                              name + "_b")])
        nodes.append(helper.make_node("Conv", [cur, name + "_w", name + "_b"], [name],
                                      kernel_shape=[k, k], strides=[stride, stride],
                                      pads=[k // 2] * 4, group=group, name=name))
        nodes.append(helper.make_node("Relu", [name], [name + "_r"], name=name + "_relu"))
        cur = name + "_r"

    conv("stem", ch, c, 3, 2, 1)
    ch = c
    for b in range(blocks):
        conv(f"dw{b}", ch, ch, 3, 2 if b == 1 else 1, ch)
        conv(f"pw{b}", ch, 2 * c, 1, 1, 1)
        ch = 2 * c
    h, w = hw
    oh, ow = ((h - 1) // 2) // 2 + 1, ((w - 1) // 2) // 2 + 1   # two stride-2 3x3, pad 1
    graph = helper.make_graph(
        nodes, "plain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, h, w])],
        [helper.make_tensor_value_info(cur, TensorProto.FLOAT, [1, ch, oh, ow])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


@pytest.fixture(scope="module")
def plain_q(run_pipeline):
    """The plain net, quantized, and an input not used for calibration."""
    g = run_pipeline(import_onnx(plain_net()))
    return g, quantize_on_noise(g)


def _candidate(g, t):
    """The plain net's one structural chain candidate (all its ops)."""
    nodes = [n for n in g.nodes if n.op.value == "conv"]
    (ch,) = find_chains(nodes, readers, lambda n: conv_geom(n, t), set())
    return ch


def test_split_is_the_cheapest_partition(plain_q):
    """Random piece costs and feasibilities: the pieces ``split_chain`` returns cost exactly
    the minimum over every partition of the chain into runs (single ops alone, runs of 2 to
    MAX_PIECE_OPS ops cascaded when feasible), found by brute force."""
    g, _ = plain_q
    t = load_target()
    ch = _candidate(g, t)
    k = len(ch.nodes)
    assert k == 7
    idx = {id(n): i for i, n in enumerate(ch.nodes)}
    for seed in range(20):
        r = np.random.default_rng(seed)
        alone = r.integers(50, 150, k)
        piece = {(i, j): (int(r.integers(40, 300 * (j - i))), bool(r.random() < 0.6))
                 for i in range(k) for j in range(i + 2, k + 1)}

        def plan(p):
            i = idx[id(p.nodes[0])]
            p.est_cycles, ok = piece[(i, i + len(p.nodes))]
            return ok

        got = split_chain(ch, t, plan, lambda i: int(alone[i]))
        covered = set()
        total = 0
        for p in got:
            i = idx[id(p.nodes[0])]
            assert 2 <= len(p.nodes) <= MAX_PIECE_OPS and piece[(i, i + len(p.nodes))][1]
            covered |= set(range(i, i + len(p.nodes)))
            total += piece[(i, i + len(p.nodes))][0]
        total += sum(int(alone[i]) for i in range(k) if i not in covered)
        best = None
        for cuts in itertools.product((False, True), repeat=k - 1):   # a cut after op i
            bounds = [0] + [i + 1 for i, c in enumerate(cuts) if c] + [k]
            cost = 0
            for a, b in zip(bounds, bounds[1:]):
                if b - a == 1:
                    cost += int(alone[a])
                elif b - a > MAX_PIECE_OPS or not piece[(a, b)][1]:
                    cost = None
                    break
                else:
                    cost += piece[(a, b)][0]
            if cost is not None and (best is None or cost < best):
                best = cost
        assert total == best, seed


def _golden(prog, g, x, **kw):
    got, hazards = run_program_impl(prog, BUDGET, g, x, **kw)
    assert hazards == []
    gold = run_golden(g, x)
    for name, arr in got.items():
        np.testing.assert_array_equal(arr, gold["int:" + name].reshape(-1), err_msg=name)


def test_pieces_bit_exact_fewer_bytes_and_cycles(plain_q):
    """In 16 KiB of SRAM the whole chain does not fit; cut in pieces it is cascaded (the stem
    with what follows it among them), every piece of >= 2 and fewer than all ops. The program
    is bit-exact against the golden model, in order and in random interleavings, and moves
    fewer DRAM bytes in fewer cycles than the same plan without pieces (nothing cascaded)."""
    g, x = plain_q
    t = load_target().with_sram(BUDGET)
    assert splits_chains(g, t)
    whole = plan_memory(g, t, 0, True)
    assert not whole.chains   # the chain does not fit whole
    mem = plan_memory(g, t, 0, True, split=True)
    pieces = list(mem.chains.values())
    assert pieces and all(2 <= len(c.nodes) < 7 for c in pieces)
    assert any(c.nodes[0].name == "stem" for c in pieces)
    prog = Lowering(g, t, 0, cascade=True, mem=mem).run()
    plain = Lowering(g, t, 0, cascade=True, mem=whole).run()
    assert sum(dram_bytes(prog.commands)) < sum(dram_bytes(plain.commands))
    assert (max(e for _, e in replay(prog.commands, t))
            < max(e for _, e in replay(plain.commands, t)))
    assert all(li.sram_peak_bytes <= BUDGET for li in prog.layers)
    _golden(prog, g, x)
    for seed in (1, 2):
        _golden(prog, g, x, schedule="random", seed=seed)


def test_search_cascades_pieces_and_resnet_plans_stay_whole(plain_q, resnet_q_small):
    """lower() (the schedule search) cascades the plain net's pieces; a network without
    grouped or depthwise convs (the ResNets, golden binaries) is planned without pieces."""
    g, x = plain_q
    t = load_target().with_sram(BUDGET)
    prog = lower(g, t, zone_fractions=(0.0,))
    assert any(li.plan.startswith("cascade") for li in prog.layers)
    _golden(prog, g, x)
    assert not splits_chains(resnet_q_small, t)


@pytest.fixture(scope="module")
def resnet_q_small(residual_net, run_pipeline):
    """The residual test net (plain convs only), imported and passed."""
    return run_pipeline(import_onnx(residual_net(seed=2, hw=32, c=16)))
