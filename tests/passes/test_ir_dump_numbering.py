"""Dump file numbers are the stage's position in the pipeline, also when resuming.

A user who resumes from ``05-fuse-residual-add.tir`` with ``--dump-ir`` gets ``06-...`` onwards,
so the two folders line up stage by stage (before, the resumed run restarted at ``00``).
"""

from __future__ import annotations

import onnx

from tcc_compiler.frontend import import_onnx
from tcc_compiler.driver import load_resume_point
from tcc_compiler.ir.text import graphs_equal, load_ir
from tcc_compiler.passes import PASS_NAMES, PassManager, default_pipeline
from tcc_compiler.passes.instruments import DumpIR


def test_resumed_dump_keeps_stage_numbers(tmp_path, residual_net):
    path = tmp_path / "m.onnx"
    onnx.save(residual_net(seed=1, hw=8, c=4), path)
    first = DumpIR(tmp_path / "a")
    PassManager(default_pipeline(), instruments=[first]).run(import_onnx(path))
    names = [p.name for p in first.written]
    # hand-written: stage k of [the passes] is numbered k + 1 (00 is the import, dumped by the
    # driver, not by the pass manager)
    assert names == [f"{k + 1:02d}-{n}.tir" for k, n in enumerate(PASS_NAMES)]
    start = first.written[5]  # 06-fuse-residual-add.tir
    assert start.name == "06-fuse-residual-add.tir"
    graph, passes = load_resume_point(start)
    second = DumpIR(tmp_path / "b")
    PassManager(passes, instruments=[second]).run(graph)
    assert [p.name for p in second.written] == names[6:]
    for a, b in zip(first.written[6:], second.written):  # and the same graphs
        assert graphs_equal(load_ir(a), load_ir(b)) is None
