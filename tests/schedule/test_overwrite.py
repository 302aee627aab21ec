"""Residual outputs written over their shortcut (``plan_memory(..., overwrite=True)``,
schedule/overwrite.py): where a conv with a fused residual add is its shortcut's last reader
and both are resident, the output takes the shortcut's SRAM bytes, the resident zone's top
drops, and the program stays bit-exact (also in a random legal interleaving of the queues)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from conftest import quantize_on_noise, run_program_impl

from tcc_compiler.frontend import import_onnx
from tcc_compiler.ir.ops import Op
from tcc_compiler.quant import run_golden
from tcc_compiler.schedule.arena import Buffer, plan_arena
from tcc_compiler.schedule.lowering import Lowering
from tcc_compiler.schedule.memory import plan_memory
from tcc_compiler.schedule.overwrite import chains_of, merge, overwrite_pairs
from tcc_compiler.target import load_target

SRAM = 256 * 1024
ZONE = SRAM // 2


def blocks_net(c: int = 32, hw: int = 16, blocks: int = 3) -> onnx.ModelProto:
    """x[1, 8, hw, hw] -> Conv1x1 8 -> ``c`` + Relu, then ``blocks`` identity blocks (Conv3x3
    + Relu, Conv3x3, Add of the block input, Relu): every block output but the last is the
    next block's input and shortcut (opset 13, seeded weights)."""
    r = np.random.default_rng(0)
    inits, nodes = [], []

    def conv(name, x, cin, k):
        inits.append(numpy_helper.from_array(
            (r.standard_normal((c, cin, k, k)) / np.sqrt(k * k * cin)).astype(np.float32),
            name + "_w"))
        inits.append(numpy_helper.from_array((r.standard_normal(c) * 0.1).astype(np.float32),
                                             name + "_b"))
        nodes.append(helper.make_node("Conv", [x, name + "_w", name + "_b"], [name],
                                      kernel_shape=[k, k], pads=[k // 2] * 4, name=name))
        return name

    def relu(x):
        nodes.append(helper.make_node("Relu", [x], [x + "_r"], name=x + "_relu"))
        return x + "_r"
    cur = relu(conv("entry", "x", 8, 1))
    for i in range(blocks):
        y = conv(f"b{i}c2", relu(conv(f"b{i}c1", cur, c, 3)), c, 3)
        nodes.append(helper.make_node("Add", [y, cur], [f"b{i}add"], name=f"b{i}add"))
        cur = relu(f"b{i}add")
    graph = helper.make_graph(
        nodes, "blocks", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, hw, hw])],
        [helper.make_tensor_value_info(cur, TensorProto.FLOAT, [1, c, hw, hw])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


@pytest.fixture(scope="module")
def resnet_q(run_pipeline):
    """:func:`blocks_net`, quantized; plus an input not used for calibration."""
    g = run_pipeline(import_onnx(blocks_net()))
    return g, quantize_on_noise(g, seed=7)


def _residual_convs(g):
    return [n for n in g.nodes if n.op is Op.CONV and n.input(3) is not None]


def test_residual_output_takes_its_shortcuts_bytes(resnet_q):
    g, _ = resnet_q
    t = load_target().with_sram(SRAM)
    plain = plan_memory(g, t, ZONE, False)
    over = plan_memory(g, t, ZONE, False, overwrite=True)
    convs = _residual_convs(g)
    assert len(convs) == 3
    for n in convs[:2]:   # the last block writes the network output: in DRAM
        sc, out = n.input(3), n.output
        assert id(sc) in over.res and id(out) in over.res
        assert over.res[id(out)].sram == over.res[id(sc)].sram
        assert plain.res[id(out)].sram != plain.res[id(sc)].sram
    assert over.zone_used < plain.zone_used
    assert sum(over.base(n) for n in g.nodes) < sum(plain.base(n) for n in g.nodes)


def test_a_shortcut_read_later_is_not_overwritten(resnet_q):
    """overwrite_pairs: only the shortcut's last reader may write over it; a reader at a
    later step (here: moved there by hand) keeps the pair out."""
    g, _ = resnet_q
    convs = _residual_convs(g)
    nodes = [n for n in g.nodes]
    step = {id(n): i for i, n in enumerate(nodes)}
    bufs = {}
    for n in nodes:
        rs = [step[id(m)] for m, _ in n.output.uses]
        bufs[id(n.output)] = Buffer(n.name, 8192, step[id(n)], max(rs, default=step[id(n)]))

    def readers(v):
        return [m for m, _ in v.uses]

    def pairs(step):
        return overwrite_pairs(nodes, step, bufs, readers, lambda n: n.output, set())
    assert [(a.name, b.name) for a, b in pairs(step)] == [
        (n.input(3).name, n.output.name) for n in convs]
    first_c1 = next(m for m, _ in convs[0].input(3).uses if m is not convs[0])
    late = dict(step)
    late[id(first_c1)] = step[id(convs[0])] + 1
    assert [a.name for a, _ in pairs(late)] == [n.input(3).name for n in convs[1:]]
    assert pairs(step)[0][0] is convs[0].input(3)
    assert overwrite_pairs(nodes, step, bufs, readers, lambda n: n.output,
                           {id(convs[0])})[0][0] is convs[1].input(3)


@pytest.mark.parametrize("schedule, seed", [("inorder", 0), ("random", 1)])
def test_overwritten_shortcuts_stay_bit_exact(resnet_q, schedule, seed):
    g, x = resnet_q
    t = load_target().with_sram(SRAM)
    mem = plan_memory(g, t, ZONE, False, overwrite=True)
    assert any(mem.res[id(n.output)].sram == mem.res[id(n.input(3))].sram
               for n in _residual_convs(g))
    prog = Lowering(g, t, ZONE, cascade=False, mem=mem).run()
    got, hazards = run_program_impl(prog, SRAM, g, x, schedule, seed)
    assert hazards == []
    gold = run_golden(g, x)
    for o in prog.outputs:
        np.testing.assert_array_equal(got[o.name], gold["int:" + o.name].reshape(-1))


def test_merge_joins_chains_of_pairs():
    """merge: values joined by pairs, transitively, share one buffer spanning their
    lifetimes; the others keep theirs; plan_arena by_life puts the long-lived one low."""
    class V:   # only identity matters
        pass
    a, b, c, d = V(), V(), V(), V()
    bufs = [(a, Buffer("a", 100, 0, 2)), (b, Buffer("b", 100, 2, 4)),
            (c, Buffer("c", 100, 4, 6)), (d, Buffer("d", 100, 1, 1))]
    groups = merge(bufs, [(a, b), (b, c)])
    assert [len(vs) for vs, _ in groups] == [3, 1]
    (abc, buf), (only_d, dbuf) = groups
    assert abc == [a, b, c] and (buf.first, buf.last, buf.size_bytes) == (0, 6, 100)
    assert only_d == [d] and dbuf is bufs[3][1]
    assert chains_of([(a, b), (c, d), (b, c)]) == [[(a, b), (c, d), (b, c)]]
    short, long_ = Buffer("s", 100, 0, 1), Buffer("l", 100, 1, 9)
    plan_arena([short, long_], 64, by_life=True)
    assert long_.offset == 0 and short.offset > 0
