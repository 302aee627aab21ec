"""Helpers of the two-core tests (tests/sim/test_two_cores*.py)."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tcc_compiler.isa import commands as C
from tcc_compiler.isa.spec import Queue


def sizes(prog) -> dict:
    """Bytes of each memory space of loaded program ``prog`` (the hazard checker's sizes)."""
    c = prog.cmd
    return {C.Space.SRAM: prog.executor.target.sram_capacity_bytes, C.Space.ACT: c.act_arena_bytes,
            C.Space.INPUT: c.input_bytes, C.Space.OUTPUT: c.output_bytes,
            C.Space.WEIGHTS: len(prog.weights.data)}


def drop_wait(cmds, ranges, j):
    """``cmds`` without command ``j`` (a SEM_WAIT on the LOAD queue), every later wait_load
    of its core adjusted so that it names the same earlier LOAD commands as before."""
    core_end = next(b for a, b in ranges if a <= j < b)
    out, after = list(cmds), 0
    for i in range(j + 1, core_end):
        c = out[i]
        if c.wait_load != 7 and after < c.wait_load:
            out[i] = dataclasses.replace(c, wait_load=c.wait_load - 1)
        if c.queue is Queue.LOAD:
            after += 1
    del out[j]
    new_ranges = [(a - (a > j), b - (b > j)) for a, b in ranges]
    return out, new_ranges


def assert_every_sem_wait_needed(cmds, ranges, sz) -> None:
    """The deleted-wait oracle of a two-core stream: ``cmds`` (core ``ranges``, memory sizes
    ``sz``) has at least one SEM_WAIT, and without any one of them the hazard checker reports
    exactly one race, between commands of different cores."""
    from tcc_compiler.sim.hazards import Ordering, check_stream

    sem_waits = [j for j, c in enumerate(cmds) if isinstance(c, C.SemWait)]
    assert sem_waits
    for j in sem_waits:
        mod, mranges = drop_wait(cmds, ranges, j)
        found = check_stream(mod, sz, mranges)
        assert len(found) == 1, j
        o = Ordering(mod, mranges)
        assert o.core_of[found[0].first] != o.core_of[found[0].second]


def conv_net(seed: int = 0) -> onnx.ModelProto:
    """1x16x28x28 -> Conv3x3 128 -> Relu -> Conv3x3 128 -> Relu -> Conv3x3 128 (+ first conv's
    output) -> Relu -> MaxPool 2x2 -> Conv1x1 64 -> GlobalAveragePool. Float32, opset 17."""
    r = np.random.default_rng(seed)
    inits = {"w1": r.normal(0, 0.2, (128, 16, 3, 3)), "w2": r.normal(0, 0.05, (128, 128, 3, 3)),
             "w3": r.normal(0, 0.05, (128, 128, 3, 3)), "w4": r.normal(0, 0.1, (64, 128, 1, 1))}
    for k, n in (("b1", 128), ("b2", 128), ("b3", 128), ("b4", 64)):
        inits[k] = r.normal(0, 0.1, n)
    conv = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], **conv),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], **conv),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("Conv", ["r2", "w3", "b3"], ["c3"], **conv),
             helper.make_node("Add", ["c3", "r1"], ["a3"]),
             helper.make_node("Relu", ["a3"], ["r3"]),
             helper.make_node("MaxPool", ["r3"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Conv", ["p", "w4", "b4"], ["c4"], kernel_shape=[1, 1]),
             helper.make_node("GlobalAveragePool", ["c4"], ["y"])]
    g = helper.make_graph(
        nodes, "two_cores",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 28, 28])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64, 1, 1])],
        [numpy_helper.from_array(v.astype(np.float32), n) for n, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def ops_net(seed: int = 0) -> onnx.ModelProto:
    """x [1,16,28,28] -> Conv3x3 64 + Relu (r) -> MaxPool 3x3 s1 (p) -> Add(p, r) (a) ->
    Sigmoid (s) -> Mul(s, p) (m) -> MaxPool 2x2 (d) -> Resize nearest x2 (u) ->
    Concat(x, u) (a copy: x is the network input) -> Conv1x1 32 -> GlobalAveragePool."""
    r = np.random.default_rng(seed)
    inits = {"w1": r.normal(0, 0.2, (64, 16, 3, 3)), "b1": r.normal(0, 0.1, 64),
             "w2": r.normal(0, 0.1, (32, 80, 1, 1)), "b2": r.normal(0, 0.1, 32),
             "scales": np.array([1, 1, 2, 2])}
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c"], kernel_shape=[3, 3],
                              pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["p", "r"], ["a"]),
             helper.make_node("Sigmoid", ["a"], ["s"]),
             helper.make_node("Mul", ["s", "p"], ["m"]),
             helper.make_node("MaxPool", ["m"], ["d"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Resize", ["d", "", "scales"], ["u"], mode="nearest"),
             helper.make_node("Concat", ["x", "u"], ["cat"], axis=1),
             helper.make_node("Conv", ["cat", "w2", "b2"], ["c2"], kernel_shape=[1, 1]),
             helper.make_node("GlobalAveragePool", ["c2"], ["y"])]
    g = helper.make_graph(
        nodes, "two_cores_ops",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 28, 28])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32, 1, 1])],
        [numpy_helper.from_array(v.astype(np.float32), n) for n, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def executor_of(program, target):
    """The reference executor of a lowered ``program`` (its binaries encoded and decoded)."""
    from tcc_compiler.binfmt import read_cmd_file
    from tcc_compiler.binfmt.weightfile import read_weight_file
    from tcc_compiler.emit.binaries import encode_binaries
    from tcc_compiler.sim.executor import Executor

    cmd_bin, w_bin = encode_binaries(program, "test")
    return Executor(read_cmd_file(cmd_bin), read_weight_file(w_bin), target)


def executor_sizes(ex) -> dict:
    """Bytes of each memory space of executor ``ex``'s program (the hazard checker's sizes)."""
    c = ex.cmd
    return {C.Space.SRAM: ex.target.sram_capacity_bytes, C.Space.ACT: c.act_arena_bytes,
            C.Space.INPUT: c.input_bytes, C.Space.OUTPUT: c.output_bytes,
            C.Space.WEIGHTS: len(ex.weights_data)}


def c2f_net(seed: int = 0) -> onnx.ModelProto:
    """YOLOv8's C2f and SPPF concats in small: x [1,16,28,28] -> Conv3x3 32 + SiLU (a) ->
    Split(a) 16/16 (s0, s1) -> Conv3x3 16 + Relu on s1 (b) -> Conv3x3 16 + SiLU (c) ->
    Concat(s0, s1, c) (48 channels) -> Conv1x1 32 + Relu (d) -> MaxPool 5x5 s1 (p1) ->
    MaxPool 5x5 s1 (p2) -> Concat(d, p1, p2) (96 channels) -> Conv1x1 32 ->
    GlobalAveragePool. Every op writing or reading a concat is a conv or a max pool, and the
    Split halves and conv outputs are views of the concats' buffers (schedule/views.py)."""
    r = np.random.default_rng(seed)
    inits = {"w1": r.normal(0, 0.2, (32, 16, 3, 3)), "b1": r.normal(0, 0.1, 32),
             "w2": r.normal(0, 0.15, (16, 16, 3, 3)), "b2": r.normal(0, 0.1, 16),
             "w3": r.normal(0, 0.15, (16, 16, 3, 3)), "b3": r.normal(0, 0.1, 16),
             "w4": r.normal(0, 0.2, (32, 48, 1, 1)), "b4": r.normal(0, 0.1, 32),
             "w5": r.normal(0, 0.15, (32, 96, 1, 1)), "b5": r.normal(0, 0.1, 32)}
    c3 = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}
    pool = {"kernel_shape": [5, 5], "pads": [2, 2, 2, 2]}
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], **c3),
             helper.make_node("Sigmoid", ["c1"], ["g1"]),
             helper.make_node("Mul", ["c1", "g1"], ["a"]),
             helper.make_node("Split", ["a", "halves"], ["s0", "s1"], axis=1),
             helper.make_node("Conv", ["s1", "w2", "b2"], ["c2"], **c3),
             helper.make_node("Relu", ["c2"], ["b"]),
             helper.make_node("Conv", ["b", "w3", "b3"], ["c3"], **c3),
             helper.make_node("Sigmoid", ["c3"], ["g3"]),
             helper.make_node("Mul", ["c3", "g3"], ["c"]),
             helper.make_node("Concat", ["s0", "s1", "c"], ["cat1"], axis=1),
             helper.make_node("Conv", ["cat1", "w4", "b4"], ["c4"], kernel_shape=[1, 1]),
             helper.make_node("Relu", ["c4"], ["d"]),
             helper.make_node("MaxPool", ["d"], ["p1"], **pool),
             helper.make_node("MaxPool", ["p1"], ["p2"], **pool),
             helper.make_node("Concat", ["d", "p1", "p2"], ["cat2"], axis=1),
             helper.make_node("Conv", ["cat2", "w5", "b5"], ["c5"], kernel_shape=[1, 1]),
             helper.make_node("GlobalAveragePool", ["c5"], ["y"])]
    g = helper.make_graph(
        nodes, "two_cores_c2f",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 28, 28])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32, 1, 1])],
        [numpy_helper.from_array(v.astype(np.float32), n) for n, v in inits.items()]
        + [numpy_helper.from_array(np.array([16, 16], np.int64), "halves")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def neck_net(seed: int = 0) -> onnx.ModelProto:
    """YOLOv8's neck concat in small: x [1,16,28,28] -> Conv3x3 32 + Relu (a) -> Conv3x3
    stride 2 32 + Relu (b, 14x14) -> Resize nearest x2 (u) -> Concat(u, a) (64 channels) ->
    Conv1x1 32 -> GlobalAveragePool. The resize output and ``a`` are views of the concat's
    buffer; ``a`` is also read by the strided conv."""
    r = np.random.default_rng(seed)
    inits = {"w1": r.normal(0, 0.2, (32, 16, 3, 3)), "b1": r.normal(0, 0.1, 32),
             "w2": r.normal(0, 0.1, (32, 32, 3, 3)), "b2": r.normal(0, 0.1, 32),
             "w3": r.normal(0, 0.15, (32, 64, 1, 1)), "b3": r.normal(0, 0.1, 32),
             "scales": np.array([1, 1, 2, 2])}
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], kernel_shape=[3, 3],
                              pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["a"]),
             helper.make_node("Conv", ["a", "w2", "b2"], ["c2"], kernel_shape=[3, 3],
                              pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Relu", ["c2"], ["b"]),
             helper.make_node("Resize", ["b", "", "scales"], ["u"], mode="nearest"),
             helper.make_node("Concat", ["u", "a"], ["cat"], axis=1),
             helper.make_node("Conv", ["cat", "w3", "b3"], ["c3"], kernel_shape=[1, 1]),
             helper.make_node("GlobalAveragePool", ["c3"], ["y"])]
    g = helper.make_graph(
        nodes, "two_cores_neck",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 28, 28])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32, 1, 1])],
        [numpy_helper.from_array(v.astype(np.float32), n) for n, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m
