"""Two NPU cores: the non-conv ops split by output rows (schedule/cores.py ``_rows``).

A YOLO-like net whose add, table, multiply, max pools, nearest resize and input concat copy
are ops of their own (not fused into a conv) compiles with ``cores=2`` into a program where
each of them runs half its rows on each core (core 0 last rows first, signalling early);
it runs bit-exactly against the golden integer model, hazard-free in any legal interleaving
of both cores, and deleting any cross-core wait is reported as a race.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from helpers.two_cores import (assert_every_sem_wait_needed, drop_wait, executor_of,
                               executor_sizes, ops_net, sizes)
from onnx import TensorProto, helper, numpy_helper

from tcc_compiler import api
from tcc_compiler.isa import commands as C
from tcc_compiler.runtime import load_program
from tcc_compiler.runtime.check import Checker
from tcc_compiler.schedule.cores import lower_spatial
from tcc_compiler.sim.hazards import check_stream
from tcc_compiler.target import load_target

TARGET = load_target().with_sram(256 * 1024)
SHAPE = (1, 16, 28, 28)   # ops_net's input


@pytest.fixture(scope="module")
def ops(tmp_path_factory):
    """(model path, compiled model, loaded program) with every non-conv op split: the
    unbalanced lowering (every row-splittable op split) is forced as the latency program."""
    d = tmp_path_factory.mktemp("two_cores_ops")
    path = d / "m.onnx"
    onnx.save(ops_net(), path)
    rng = np.random.default_rng(1)
    calib = [rng.uniform(-2, 2, SHAPE).astype(np.float32) for _ in range(2)]
    m = api.compile(path, "28x28x16", calibration=calib, cores=2, target=TARGET)
    m.save(d / "out")
    return path, m, load_program(d / "out")


def _split_kinds(m) -> set[str]:
    return {li["op"] for li in m.report["layers"] if "split by rows over 2 cores at row"
            in li["tiling"]}


def test_lowering_splits_every_non_conv_op_by_rows(ops):
    """The unbalanced lowering of the quantized graph splits each non-conv op at half its
    rows (at an input row for the resize), core 0's share first."""
    _, m, _ = ops
    prog = lower_spatial(m.artifacts.graph, TARGET)
    split = {li.kind: li.plan for li in prog.layers if "at row" in li.plan}
    assert {"add", "lut", "mul", "maxpool", "resize", "concat"} <= set(split), split
    assert split["resize"].endswith("at row 14")
    assert any(isinstance(c, C.SemSignal) for c in prog.commands)


def test_split_ops_bit_exact_and_hazard_free(ops):
    path, m, prog = ops
    assert prog.cmd.cores == 2 and _split_kinds(m), m.report["cores"]["kept"]
    checker = Checker(prog, path)
    rng = np.random.default_rng(5)
    for _ in range(2):
        x = rng.uniform(-2, 2, SHAPE).astype(np.float32)
        r = checker.check(x, prog.run(x))
        assert r["bit_exact"] and r["sqnr_db"] > 20
    assert check_stream(list(prog.cmd.commands), sizes(prog), prog.cmd.core_ranges()) == []


@pytest.mark.parametrize("seeds", [pytest.param(range(2), id="2"),
                                   pytest.param(range(20), id="20", marks=pytest.mark.slow)])
def test_split_ops_random_interleavings(ops, seeds):
    _, _, prog = ops
    q = prog.quantize(np.random.default_rng(2).uniform(-2, 2, SHAPE).astype(np.float32))
    ref = prog.executor.run(q, check=True)
    for seed in seeds:
        assert prog.executor.run(q, schedule="random", seed=seed) == ref, seed


def test_deleting_a_cross_core_wait_of_a_split_op_is_a_race(ops):
    _, _, prog = ops
    cmds, ranges, sz = list(prog.cmd.commands), prog.cmd.core_ranges(), sizes(prog)
    assert_every_sem_wait_needed(cmds, ranges, sz)


def test_the_bounds_hold_for_the_emitted_programs(ops):
    """No emitted program beats the report's two-core bounds (they are lower bounds)."""
    _, m, _ = ops
    c = m.report["cores"]
    b = c["two_core_bounds"]
    assert c["two_core_bound_cycles"] == b["latency_cycles"] > 0
    assert b["latency_cycles"] <= c["latency_cycles"]
    assert b["batched_stream_cycles_per_image"] <= c["stream_period_cycles"]


def test_compute_floor_is_below_every_lowering_and_above_the_roofline(ops):
    """compute_floor_cycles bounds the compute commands of the split programs (balanced or
    not) and of the one-core program from below, and is at least the roofline's term."""
    from tcc_compiler.schedule.coretime import compute_floor_cycles, core_ranges
    from tcc_compiler.schedule.cost import command_cycles
    from tcc_compiler.schedule.search import search

    _, m, _ = ops
    graph = m.artifacts.graph
    progs = [lower_spatial(graph, TARGET, balance=b) for b in (False, True)]
    progs.append(search(graph, TARGET))
    for p in progs:
        busy = 0
        for a, b in core_ranges(p.commands):
            regs = C.Registers()
            for c in p.commands[a:b]:
                busy += command_cycles(c, regs, TARGET) if c.queue.name == "COMPUTE" else 0
                regs.update(c)
        floor = compute_floor_cycles(graph, p.layers, TARGET)
        assert m.report["roofline"]["compute_cycles"] <= floor + 1 and floor <= busy


def dfl_net(seed: int = 0, hw: int = 24) -> onnx.ModelProto:
    """x [1,16,hw,hw] -> Conv3x3 64 (4 x 16 logits) -> Reshape [1,4,16,hw*hw] -> Softmax
    (axis 2) -> Reshape [1,64,hw,hw] (one ``group_softmax`` of groups of 16 channels, as
    YOLOv8's DFL) -> grouped Conv1x1 (4 groups, weights 0..15, the expectation)."""
    r = np.random.default_rng(seed)
    inits = {"w1": r.normal(0, 0.3, (64, 16, 3, 3)), "b1": r.normal(0, 0.5, 64),
             "s4": np.array([1, 4, 16, hw * hw]), "sb": np.array([1, 64, hw, hw]),
             "wd": np.tile(np.arange(16).reshape(1, 16, 1, 1), (4, 1, 1, 1))}
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c"], kernel_shape=[3, 3],
                              pads=[1, 1, 1, 1]),
             helper.make_node("Reshape", ["c", "s4"], ["l4"]),
             helper.make_node("Softmax", ["l4"], ["p4"], axis=2),
             helper.make_node("Reshape", ["p4", "sb"], ["p"]),
             helper.make_node("Conv", ["p", "wd"], ["y"], group=4, kernel_shape=[1, 1])]
    g = helper.make_graph(
        nodes, "two_cores_dfl",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, hw, hw])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, hw, hw])],
        [numpy_helper.from_array(v.astype(np.int64 if n[0] == "s" else np.float32), n)
         for n, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


@pytest.fixture(scope="module")
def dfl(tmp_path_factory):
    """(loaded one-core-or-split program checked against the golden model, the unbalanced
    two-core lowering's executor, its decoded commands): the group softmax split by rows."""
    d = tmp_path_factory.mktemp("two_cores_dfl")
    onnx.save(dfl_net(), d / "m.onnx")
    rng = np.random.default_rng(3)
    calib = [rng.uniform(-2, 2, (1, 16, 24, 24)).astype(np.float32) for _ in range(2)]
    m = api.compile(d / "m.onnx", "24x24x16", calibration=calib, cores=2, target=TARGET)
    m.save(d / "out")
    prog = lower_spatial(m.artifacts.graph, TARGET)
    split = [li.plan for li in prog.layers if li.kind == "group_softmax"]
    assert split and "split by rows over 2 cores at row 12" in split[0], split
    ex = executor_of(prog, TARGET)
    return d / "m.onnx", load_program(d / "out"), ex


def test_group_softmax_split_by_rows_bit_exact_and_hazard_free(dfl):
    """Both cores' shares of the group softmax give the golden model's bytes (the loaded
    program is checked against it), in order, with the hazard checker, and in random
    interleavings of both cores' queues."""
    path, ref_prog, ex = dfl
    x = np.random.default_rng(4).uniform(-2, 2, (1, 16, 24, 24)).astype(np.float32)
    q = ref_prog.quantize(x)
    ref = ref_prog.executor.run(q, check=True)
    assert Checker(ref_prog, path).check(x, ref_prog.run(x))["bit_exact"]
    assert ex.run(q, check=True) == ref
    for seed in range(2):
        assert ex.run(q, schedule="random", seed=seed) == ref, seed


def test_deleting_a_cross_core_wait_around_the_group_softmax_is_a_race(dfl):
    _, _, ex = dfl
    cmds, ranges = list(ex.cmd.commands), ex.cmd.core_ranges()
    sz = executor_sizes(ex)
    assert check_stream(cmds, sz, ranges) == []
    sem_waits = [j for j, c in enumerate(cmds) if isinstance(c, C.SemWait)]
    assert sem_waits
    for j in sem_waits:
        mod, mranges = drop_wait(cmds, ranges, j)
        assert len(check_stream(mod, sz, mranges)) == 1, j
