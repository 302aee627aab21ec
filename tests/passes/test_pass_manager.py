"""Pass manager: fixed points, per-pass stats and timings, declined-match reasons at DEBUG,
the fusion summary (counts checked by hand on the tiny ResNet) and provenance in the report,
and the ``--time-passes`` / ``--pass-stats`` CLI flags."""

from __future__ import annotations

import json
import logging

import numpy as np
import onnx
import pytest
from onnx import helper

from tcc_compiler.cli.main import main
from tcc_compiler.errors import InternalError
from tcc_compiler.frontend import import_onnx
from tcc_compiler.ir.verify import VerifyError
from tcc_compiler.passes import PASS_NAMES, PassManager, default_pipeline
from tcc_compiler.passes.summary import format_pass_report, fusion_summary, source_table

N = helper.make_node


class _CountDown:
    """Fires ``n`` times (one rewrite per run), then reports no change."""

    name = "count-down"

    def __init__(self, n: int):
        self.n = n
        self.last_fired = 0

    def run(self, graph):
        self.last_fired = 1 if self.n > 0 else 0
        self.n -= 1
        return graph, self.last_fired > 0


class _Breaker:
    """Corrupts the IR (a shape that disagrees with the op) to check ``verify_each``."""

    name = "breaker"

    def run(self, graph):
        graph.nodes[0].output.shape = (1, 99, 1, 1)
        return graph, False


def test_fixed_point_and_fired_counts(residual_net):
    pm = PassManager([_CountDown(3)])
    pm.run(import_onnx(residual_net()))
    assert pm.stats.fired == {"count-down": 3} and pm.stats.seconds["count-down"] >= 0


def test_no_fixed_point_raises(residual_net):
    with pytest.raises(InternalError, match="count-down"):
        PassManager([_CountDown(1000)]).run(import_onnx(residual_net()))


def test_verify_each_catches_broken_ir(residual_net):
    g = import_onnx(residual_net())
    PassManager([_Breaker()]).run(g.clone())                 # unverified: not noticed
    with pytest.raises(VerifyError):
        PassManager([_Breaker()], verify_each=True).run(g)


def test_declined_match_logs_reason(make_model, rng, caplog):
    m = make_model([N("Conv", ["x", "w"], ["c"], pads=[1] * 4, name="conv"),
                    N("Relu", ["c"], ["y"], name="relu")], [1, 2, 4, 4],
                   {"w": rng.standard_normal((2, 2, 3, 3))}, outputs=("c", "y"))
    with caplog.at_level(logging.DEBUG, logger="tcc_compiler.passes"):
        PassManager(default_pipeline()).run(import_onnx(m))
    assert any("fuse-activation: not fired at relu: producer output has other readers"
               in r.getMessage() for r in caplog.records)


def test_fusion_summary_counts_by_hand(residual_net):
    # residual_net: 6 conv + 6 BN + 5 Relu + MaxPool + 2 Add + GAP + Gemm = 22 compute nodes
    # (Flatten is a view). After fusion: 6 conv + maxpool + gap + fc = 9 NPU ops.
    g = import_onnx(residual_net())
    table = source_table(g)
    g = PassManager(default_pipeline(), verify_each=True).run(g)
    s = fusion_summary(table, g)
    assert s["compute_nodes"] == 22 and s["npu_ops"] == 9
    assert s["npu_ops_by_kind"] == {"conv": 6, "fc": 1, "gap": 1, "maxpool": 1}
    assert s["fused_away"] == {"add": 2, "batchnorm": 6, "relu": 5}
    assert s["dram_round_trips_avoided"] == 13 and s["unattributed_npu_ops"] == 0


def test_fusion_summary_bytes(make_model, rng):
    # conv -> relu on a [1,4,6,6] map: the relu's 144-element tensor is neither written nor
    # read back: 288 bytes of int8 traffic avoided.
    m = make_model([N("Conv", ["x", "w"], ["c"], pads=[1] * 4), N("Relu", ["c"], ["y"])],
                   [1, 4, 6, 6], {"w": rng.standard_normal((4, 4, 3, 3))})
    g = import_onnx(m)
    table = source_table(g)
    s = fusion_summary(table, PassManager(default_pipeline()).run(g))
    assert s["fused_away"] == {"relu": 1} and s["dram_bytes_avoided"] == 288


def test_format_pass_report():
    r = {"passes": {"seconds": {"a": 0.0015, "bb": 0.002}, "fired": {"a": 3, "bb": 0}},
         "fusion": {"npu_ops": 2, "compute_nodes": 5, "fused_away": {"relu": 3},
                    "dram_round_trips_avoided": 3, "dram_bytes_avoided": 1000}}
    lines = format_pass_report(r).splitlines()
    assert lines[1].split() == ["a", "1.50", "3"] and lines[2].split() == ["bb", "2.00", "0"]
    assert lines[3].split() == ["total", "3.50"]
    assert "3 relu" in lines[4] and "1,000 B" in lines[4]
    assert "fired" not in format_pass_report(r, stats=False)


def test_cli_time_passes_and_pass_stats(residual_net, tmp_path, capsys):
    model = residual_net()
    path = tmp_path / "tiny.onnx"
    onnx.save(model, path)
    calib = tmp_path / "calib.npy"
    np.save(calib, np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32))
    out = tmp_path / "out"
    code = main(["compile", str(path), "-o", str(out), "--calib", str(calib),
                 "--time-passes", "--pass-stats"])
    err = capsys.readouterr().err
    assert code == 0
    for name in PASS_NAMES:
        assert any(line.split()[0] == name for line in err.splitlines() if line.strip())
    assert "fusion: 9 NPU ops from 22 compute nodes" in err
    report = json.loads((out / "report.json").read_text())
    assert sorted(report["passes"]["seconds"]) == sorted(PASS_NAMES)   # JSON keys sorted
    assert report["passes"]["fired"]["fuse-residual-add"] == 2
    assert report["fusion"]["dram_round_trips_avoided"] == 13
    # provenance: every ONNX compute node is named by some NPU layer (Flatten is a view)
    named = {s for layer in report["layers"] for s in layer["source"]}
    onnx_nodes = {n.name for n in model.graph.node if n.op_type != "Flatten"}
    assert onnx_nodes <= named, sorted(onnx_nodes - named)
