"""The hazard checker on strided accesses: exactly the bytes a strided DMA or tile operand
touches, however many runs it has (issue 17: YOLOv8n's C2f add read a Split half, a channel
slice of a concat in DRAM, in 25,600 runs; its accesses used to be one hull above 4096 runs,
which "read" the concat channels beside it that the add itself writes later, and the checker
refused the program: "reads ACT byte ... that nothing wrote before").

The net below is that C2f in small (one core, 72x72, 5184 runs per slice): compiled, it is
hazard-free, bit-exact against the golden model and ONNX Runtime, and the same bytes in random
interleavings. Hand-built streams check that a hazard or an unwritten read inside a strided
pattern is still reported, naming a byte of the pattern, and a gap byte never.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from helpers.two_cores import executor_sizes
from onnx import TensorProto, helper, numpy_helper

from tcc_compiler.errors import ExecutionError
from tcc_compiler.isa import commands as C
from tcc_compiler.isa.spec import Region, dram_address
from tcc_compiler.sim.hazards import check_stream

HW = 72
SHAPE = (1, 8, HW, HW)


def c2f_add_net(seed: int = 0) -> onnx.ModelProto:
    """YOLOv8's C2f with its shortcut add: x [1,8,72,72] -> Conv1x1 32 + Relu -> Split 16/16
    (s0, s1) -> Conv3x3 16 + Relu on s1 (b) -> Add(s1, b) (c) -> Concat(s0, s1, c) (48
    channels) -> Conv1x1 16 (y [1,16,72,72]). Float32, opset 17."""
    r = np.random.default_rng(seed)
    w = {"w1": r.normal(0, 0.3, (32, 8, 1, 1)), "b1": r.normal(0, 0.1, 32),
         "w2": r.normal(0, 0.1, (16, 16, 3, 3)), "b2": r.normal(0, 0.1, 16),
         "w3": r.normal(0, 0.1, (16, 48, 1, 1)), "b3": r.normal(0, 0.1, 16)}
    inits = [numpy_helper.from_array(v.astype(np.float32), n) for n, v in w.items()]
    inits.append(numpy_helper.from_array(np.array([16, 16], np.int64), "split"))
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["a"], kernel_shape=[1, 1]),
             helper.make_node("Relu", ["a"], ["ar"]),
             helper.make_node("Split", ["ar", "split"], ["s0", "s1"], axis=1),
             helper.make_node("Conv", ["s1", "w2", "b2"], ["b"], kernel_shape=[3, 3],
                              pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["b"], ["br"]),
             helper.make_node("Add", ["s1", "br"], ["c"]),
             helper.make_node("Concat", ["s0", "s1", "c"], ["cat"], axis=1),
             helper.make_node("Conv", ["cat", "w3", "b3"], ["y"], kernel_shape=[1, 1])]
    g = helper.make_graph(
        nodes, "c2f_add", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(SHAPE))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, HW, HW])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


@pytest.fixture(scope="module")
def c2f(tmp_path_factory):
    """(model path, loaded compiled program) of :func:`c2f_add_net`, one core."""
    from tcc_compiler import api
    from tcc_compiler.runtime import load_program

    d = tmp_path_factory.mktemp("c2f_add")
    onnx.save(c2f_add_net(), d / "m.onnx")
    rng = np.random.default_rng(1)
    calib = [rng.uniform(-2, 2, SHAPE).astype(np.float32) for _ in range(2)]
    api.compile(d / "m.onnx", f"{HW}x{HW}x8", calibration=calib).save(d / "out")
    return d / "m.onnx", load_program(d / "out")


def test_program_reads_a_slice_whose_neighbours_are_written_later(c2f):
    """The situation of issue 17 is in the program: a strided DMA_LOAD reads DRAM bytes
    whose hull holds bytes a later command writes, none of them its own."""
    _, prog = c2f
    cmds, regs, accs = list(prog.cmd.commands), C.Registers(), []
    for cmd in cmds:
        accs.append(cmd.accesses(regs))
        regs.update(cmd)
    found = []
    for j, cmd in enumerate(cmds):
        if not isinstance(cmd, C.DmaLoad):
            continue
        [d] = [a for a in accs[j] if a.space is C.Space.ACT] or [None]
        if d is None or not d.run:
            continue
        hull = d._replace(run=0, n1=1, s1=0, n2=1, s2=0)
        later = [i for i in range(j + 1, len(cmds)) for a in accs[i]
                 if a.is_write and a.overlaps(hull) and not a.overlaps(d)]
        found += [(j, i) for i in later]
    assert found


def test_strided_program_hazard_free_and_bit_exact(c2f):
    from tcc_compiler.runtime.check import Checker

    path, prog = c2f
    ex = prog.executor
    assert check_stream(list(ex.cmd.commands), executor_sizes(ex)) == []
    rng = np.random.default_rng(4)
    x = rng.uniform(-2, 2, SHAPE).astype(np.float32)
    assert Checker(prog, path).check(x, prog.run(x))["bit_exact"]
    q = prog.quantize(x)
    ref = ex.run(q)
    assert ex.run(q, check=True) == ref
    for seed in range(2):
        assert ex.run(q, schedule="random", seed=seed) == ref, seed


# -- hand-built streams --------------------------------------------------------------------------

SIZES = {C.Space.SRAM: 1024, C.Space.ACT: 512, C.Space.INPUT: 512, C.Space.OUTPUT: 64,
         C.Space.WEIGHTS: 16}


def _dma(cls, region, off, sram, run, n1, d1, s1=None, **w):
    """A one-level strided DMA: n1 runs of ``run`` bytes, ``d1`` apart in DRAM, packed (or
    ``s1`` apart) in SRAM."""
    return cls(dram_address(region, off), sram, run, n1, 1, d1, 0, s1 or run, 0, **w)


def test_a_strided_read_of_written_runs_is_clean_and_an_unwritten_run_is_named():
    """Runs 0, 2, 4 of a 16-byte-run tensor stored, then read back: clean, while the odd
    runs in between are never written. Reading one run further names that run's first
    byte, not a gap byte."""
    load_in = _dma(C.DmaLoad, Region.INPUT, 0, 0, 48, 1, 0)
    store = _dma(C.DmaStore, Region.ACT, 0, 0, 16, 3, 32, wait_load=0)
    read = _dma(C.DmaLoad, Region.ACT, 0, 256, 16, 3, 32, wait_store=0)
    assert check_stream([load_in, store, read, C.End()], SIZES) == []
    over = _dma(C.DmaLoad, Region.ACT, 0, 256, 16, 4, 32, wait_store=0)
    with pytest.raises(ExecutionError, match=r"command 2 \(DMA_LOAD\): field dram: reads ACT "
                                             r"byte 0x60 that nothing wrote before "
                                             r"\(range \[0x0, 0x70\)\)"):
        check_stream([load_in, store, over, C.End()], SIZES)


def test_unordered_strided_accesses_race_only_on_common_bytes():
    """A store of the even 16-byte runs of an (initialised) tensor and a load not ordered
    with it: reading the odd runs is no race; reading an 8-byte-run pattern that meets three
    even runs is, the hazard's range spanning exactly the common bytes."""
    head = [_dma(C.DmaLoad, Region.INPUT, 0, 0, 256, 1, 0),
            _dma(C.DmaStore, Region.ACT, 0, 0, 256, 1, 0, wait_load=0),   # initialises ACT
            _dma(C.DmaStore, Region.ACT, 0, 0, 16, 4, 32)]                # the even runs
    odd = _dma(C.DmaLoad, Region.ACT, 16, 512, 16, 4, 32, wait_store=1)  # after the first only
    assert check_stream(head + [odd, C.End()], SIZES) == []
    # runs at 40, 72, 104, 136 meet the even runs at 32, 64, 96 (bytes 40..47, 72..79, 104..111)
    clash = _dma(C.DmaLoad, Region.ACT, 40, 512, 8, 4, 32, wait_store=1)
    [h] = check_stream(head + [clash, C.End()], SIZES)
    assert (h.kind, h.first, h.second, h.space) == ("RAW", 2, 3, C.Space.ACT)
    assert (h.start, h.end) == (40, 112)
