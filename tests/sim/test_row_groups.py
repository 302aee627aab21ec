"""sim/row_groups.py + the replay: consecutive 1x1 tiles cutting one layer's input into bands of
rows that follow one another in the SRAM share one integer GEMM over the joined input on repeat
in-order runs, with the bytes of a fresh executor; a tile whose output overwrites the next
tile's input keeps them apart (the next reads what the first wrote)."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tcc_compiler.binfmt import read_cmd_file, read_weight_file, write_cmd_file
from tcc_compiler.isa import commands as C
from tcc_compiler.numerics import accumulator as A
from tcc_compiler.numerics import int8_gemm, jit
from tcc_compiler.runtime import load_program
from tcc_compiler.sim import Executor

pytestmark = pytest.mark.skipif(not jit.available() or int8_gemm.int8_session() is None,
                                reason="the joined GEMM needs the compiled kernels and the "
                                       "exact int8 GEMM")


def _pointwise_net(hw: int = 8) -> onnx.ModelProto:
    """3x3 conv 3 -> 16, ReLU, 1x1 conv 16 -> 24, ReLU, 1x1 conv 24 -> 16 added to the first
    conv's output (a shortcut), global average pool."""
    r = np.random.default_rng(0)
    w1 = numpy_helper.from_array(r.standard_normal((16, 3, 3, 3)).astype(np.float32) * .3, "w1")
    w2 = numpy_helper.from_array(r.standard_normal((24, 16, 1, 1)).astype(np.float32) * .2, "w2")
    w3 = numpy_helper.from_array(r.standard_normal((16, 24, 1, 1)).astype(np.float32) * .2, "w3")
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["ar"]),
             helper.make_node("Conv", ["ar", "w2"], ["b"]),
             helper.make_node("Relu", ["b"], ["br"]),
             helper.make_node("Conv", ["br", "w3"], ["c"]),
             helper.make_node("Add", ["c", "ar"], ["d"]),
             helper.make_node("GlobalAveragePool", ["d"], ["y"])]
    g = helper.make_graph(
        nodes, "pointwise", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, hw, hw])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 1, 1])], [w1, w2, w3])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


@pytest.fixture(scope="module")
def pointwise_folder(tmp_path_factory):
    import tcc_compiler as tc

    d = tmp_path_factory.mktemp("pointwise")
    onnx.save(_pointwise_net(), d / "m.onnx")
    r = np.random.default_rng(1)
    calib = [r.uniform(-1, 1, (1, 3, 8, 8)).astype(np.float32) for _ in range(2)]
    return tc.compile(str(d / "m.onnx"), "8x8x3", calibration=calib).save(d / "out")


def _split_pointwise(cmds: list, overlap: bool = False) -> tuple[list, list[int]]:
    """``cmds`` with every packed 1x1 stride-1 unpadded tile of two rows or more cut into two
    tiles of rows (the second reading and writing the bytes after the first's, its shortcut
    too); ``overlap``: the first tile's output moved onto the second's input instead. Returns
    the commands and the index of each first tile."""
    out, firsts = [], []
    regs = C.Registers()
    for c in cmds:
        regs.update(c)
        g = regs.conv
        if not (isinstance(c, C.ConvTile) and (g.kh, g.kw, g.sh, g.sw) == (1, 1, 1, 1)
                and c.pads == (0, 0, 0, 0) and c.in_h >= 2 and g.out_mode == 0
                and not (c.in_px_stride or c.in_row_stride or c.out_px_stride
                         or c.out_row_stride or c.sc_px_stride or c.sc_row_stride)):
            out.append(c)
            continue
        h1 = c.in_h // 2
        px = c.in_w * h1
        first = dataclasses.replace(c, in_h=h1, out_h=h1)
        second = dataclasses.replace(
            c, in_h=c.in_h - h1, out_h=c.in_h - h1, in_sram=c.in_sram + px * c.in_c * g.in_bytes,
            out_sram=c.out_sram + px * c.oc * g.out_bytes,
            sc_sram=c.sc_sram + px * c.oc * g.sc_bytes if g.has_shortcut else c.sc_sram)
        if overlap:
            first = dataclasses.replace(first, out_sram=second.in_sram)
        firsts.append(len(out))
        out += [first, second]
    return out, firsts


def _program(folder, overlap: bool):
    prog = load_program(folder)
    cf = prog.executor.cmd
    cmds, firsts = _split_pointwise(list(cf.commands), overlap)
    mod = read_cmd_file(write_cmd_file(cmds, sram_peak_bytes=cf.sram_peak_bytes,
                                       act_arena_bytes=cf.act_arena_bytes,
                                       input_bytes=cf.input_bytes,
                                       output_bytes=cf.output_bytes, tool_version="t"))
    wf = read_weight_file((folder / "quantized_network.bin").read_bytes())
    return mod, wf, prog.executor.target, firsts


def _inputs(n_bytes: int, n: int = 3) -> list[bytes]:
    rng = np.random.default_rng(4)
    return [rng.integers(0, 256, n_bytes, dtype=np.uint8).tobytes() for _ in range(n)]


def _counted(real, calls: list):
    def counted(self, x):
        calls.append(self.shape)
        return real(self, x)
    return counted


def test_row_bands_of_a_pointwise_layer_share_one_gemm_with_fresh_bytes(pointwise_folder,
                                                                         monkeypatch):
    mod, wf, target, firsts = _program(pointwise_folder, overlap=False)
    assert len(firsts) >= 2   # both 1x1 layers, the second with its shortcut
    ex = Executor(mod, wf, target)
    inputs = _inputs(mod.input_bytes)
    got = [ex.run(x) for x in inputs]
    assert sorted(ex._replay.rows) == [[k, k + 1] for k in firsts]
    calls: list = []
    for cls in (A.GemmRoutine, A.PackedGemmRoutine):   # packed by now: no call counted twice
        monkeypatch.setattr(cls, "__call__", _counted(cls.__call__, calls))
    got += [ex.run(x) for x in inputs]
    monkeypatch.undo()
    joined = [s for s in calls if s[0] == 1]   # the groups' routines: [1, rows, O]
    assert len(joined) == len(firsts) * len(inputs)
    assert not [s for s in calls if s[:2] == (4, 8)]   # no member's own GEMM (4 rows of 8)
    want = [Executor(mod, wf, target).run(x, check=True) for x in inputs]
    assert got == want + want


def test_a_first_tile_writing_the_next_ones_input_keeps_them_apart(pointwise_folder):
    mod, wf, target, firsts = _program(pointwise_folder, overlap=True)
    ex = Executor(mod, wf, target)
    inputs = _inputs(mod.input_bytes)
    got = [ex.run(x) for x in inputs] + [ex.run(x) for x in inputs]
    assert not any(g[0] in firsts for g in ex._replay.rows)
    want = [Executor(mod, wf, target).run(x) for x in inputs]
    assert got == want + want
