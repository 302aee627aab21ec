"""The golden model's numpy-epilogue route (a raw int32 output, e.g. a classifier whose
logits the host dequantizes) makes its folded bias once per route, not on every run
(``quant/golden._conv_route``), and gives the bytes :func:`eval_int_node` gives."""

from __future__ import annotations

import numpy as np

from tcc_compiler.ir.ops import Op
from tcc_compiler.ir.text import load_ir
from tcc_compiler.quant import golden, golden_gemm


def test_a_raw_int32_fc_folds_its_bias_once(gap_folder, monkeypatch):
    graph = load_ir(gap_folder / "quantized.tir")
    fc = next(n for n in graph.nodes if n.op is Op.FC)
    assert golden.prepare_conv(fc)[1].out_int32   # the route under test: no compiled tail
    model = golden.GoldenModel(graph, repeat=True)
    r = np.random.default_rng(8)
    xs = [r.uniform(0, 1, (1, 1, 32, 32)).astype(np.float32) for _ in range(4)]
    model.run(xs[0])   # routes made on the first run
    calls = []
    real = golden_gemm.folded_bias

    def counted(*a, **k):
        calls.append(1)
        return real(*a, **k)
    monkeypatch.setattr(golden_gemm, "folded_bias", counted)
    outs = [model.run(x, keep=True) for x in xs[1:]]
    assert calls == []   # before: one fold per run of the fc
    for out in outs:   # and the bytes of the per-node definition
        x = out["int:" + fc.inputs[0].name]
        want = golden.eval_int_node(fc, [x, None, None], golden.prepare_conv(fc))
        got = out["int:" + fc.output.name]
        assert got.dtype == want.dtype and np.array_equal(got, want)
