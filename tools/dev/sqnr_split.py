#!/usr/bin/env python3
"""Where a model's INT8 SQNR goes (issue #13): the golden integer model's error split into
what the int8 *weights* cost and what the int8 *activations* add, layer by layer, on tccc's own
quantized graph (BatchNorm folded, GPTQ-rounded weights: what the NPU runs).

For the model, or the first NPU segment of a segmented one (``tccc analyze`` takes one NPU
program and its own ``.onnx``; a segment's is never written), the driver's stages are run in
process (import, float passes, calibration on the 8 bundled calibration photos, quantization;
no scheduling), then on ``--images`` bundled eval photos:

* ``int8``: the golden integer model (which the executor matches bit for bit) against ONNX
  Runtime, per graph output (min / median dB over the photos: ``tccc run --check``'s figures
  for a model the NPU runs whole);
* ``weights only``: the float graph with tccc's int8 weights and int32 biases dequantized,
  float activations (the share no activation precision can recover);
* ``exact input`` (``--exact-input``): ONNX Runtime fed the int8 input grid's values, so the
  input quantization's share drops out;
* ``--layers``: every layer's accumulated SQNR (dB, first ``--layer-images`` photos, graph
  order) int8 and weights-only side by side: a gap that opens at one layer points at it, a
  constant gap from the first layers on is int8 noise the network amplifies.

Measured with it (loaded 2-core machine, 10 photos unless said, dB):

* SSDLite-MobileNetV2 300x300 (first NPU segment: the twelve tensors it hands the host):
  int8 9.9-14.3 min / 13.5-18.7 median, weights only 20.6-29.6 / 23.4-31.6, exact input
  +0.1..+1.4 on the minimum. int8 sits 12-13 dB under weights only from the stem on
  (``base_net.0`` 45.0 vs 61.0, ``base_net.14`` projection 21.2 vs 33.8, ``extras.3`` 14.7
  vs 22.9) while every layer alone is 31-47 dB (``tccc analyze``'s isolated column): no
  layer, head or concat is lossy; the seeded backbone amplifies every layer's rounding
  noise by about 27 dB, as the zoo MobileNetV2 does (``features.18`` 21.4 int8 vs 33.2
  weights only), whose logits recover to 34.7-36.3 dB only through the global average pool.
* FlowNetS 512x384: int8 19.1 / 26.9 (min / median), weights only 26.7 / 31.6; layer by
  layer int8 is 5-6 dB under weights only from ``conv1`` on (38.2 vs 43.5; every Concat
  5.3-5.6 dB under, as the LeakyRelu before it): no layer widens the gap. Giving the
  encoder's LeakyRelu outputs their own step where a Concat shares one three times wider
  (a requantizing copy into the concat) changes no photo by more than 0.1 dB; clipping the
  upsampled flow into the features' range (every concat's scale 0.031-0.034 instead of
  0.044-0.093) gains 0.1 dB on the minimum and loses 3.4 dB on the median: the concats'
  shared scales are not where it loses.
* light_shufflenet (onnx wheel): every weight, BatchNorm statistic and bias is the constant
  0.02, so the 1000 logits are one number and each stage's average-pool branch (up to 18)
  is concatenated with conv-branch channels of 0.02: per-tensor int8 rounds the small
  channels to zero (those convs 0 dB alone) and the logits' one value is 4.3 dB off (first
  2 photos, ``tccc analyze``'s fc row); ONNX Runtime's ``quantize_static`` (QDQ,
  per-channel, MinMax) loses the same, 4.2-6.1 dB on 4 photos (the softmax output is 0.001
  everywhere either way).

Usage::

    PYTHONPATH=$PWD python3 tools/dev/sqnr_split.py ssdlite-mobilenet-v2 [--images 10]
        [--layers] [--exact-input] [--input WxH]
    PYTHONPATH=$PWD python3 tools/dev/sqnr_split.py MODEL.onnx [--mean M M M --std S S S]

Needs only onnx, onnxruntime and numpy (no torch). Minutes per model on a loaded machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from qdq_yardstick import photo_inputs  # noqa: E402

from tcc_compiler import driver, zoo  # noqa: E402
from tcc_compiler.interp import run_float  # noqa: E402
from tcc_compiler.ir.graph import Graph  # noqa: E402
from tcc_compiler.ir.ops import Op  # noqa: E402
from tcc_compiler.options import make_options  # noqa: E402
from tcc_compiler.quant.golden import GoldenModel  # noqa: E402
from tcc_compiler.quant.params import dequantize_output, quantize_input  # noqa: E402
from tcc_compiler.runtime.check import sqnr_db  # noqa: E402


def npu_model(model: onnx.ModelProto, whc: str) -> tuple[onnx.ModelProto, str]:
    """``model`` itself when the NPU runs it whole, else its first NPU segment (an ONNX model
    whose outputs are the tensors that segment hands on), with a label saying which."""
    from tcc_compiler.frontend.segments import extract_model
    from tcc_compiler.segmenting.plan import plan_model

    plan = plan_model(model, whc)
    if len(plan.segments) == 1:
        return model, "whole model"
    seg = plan.npu_segments[0]
    if seg.inputs[0] != plan.prepared.in_name:
        raise SystemExit("the first NPU segment does not read the model input")
    return extract_model(plan.prepared.proto, seg, "npu_0"), "first NPU segment"


def quantized(model: onnx.ModelProto, whc: str, calib: list[np.ndarray]) \
        -> tuple[Graph, Graph]:
    """(quantized graph, float graph): the driver's stages up to quantization, default
    options, calibrated on ``calib`` (float32 NCHW arrays, preprocessed)."""
    opts = make_options(None, input_whc=whc, calibration=calib)
    graph, passes = driver.import_model(model, opts.input_whc)
    fg = driver.run_float_passes(graph, passes)
    graph, float_graph = fg.graph, fg.graph.clone()
    cal = driver.calibrate(graph, opts, driver.preprocess_for(graph, opts), model=model)
    driver.quantize(graph, float_graph, cal, opts)
    return graph, float_graph


def weights_only(qgraph: Graph, float_graph: Graph) -> Graph:
    """A copy of ``float_graph`` whose conv/fc weights and biases are ``qgraph``'s integers
    times their per-channel scales (float activations)."""
    wg = float_graph.clone()
    qnodes = {n.name: n for n in qgraph.nodes}
    for n in wg.nodes:
        q = qnodes.get(n.name)
        if n.op not in (Op.CONV, Op.FC) or q is None:
            continue
        for i in (1, 2):
            if n.input(i) is None or q.input(i) is None:
                continue
            c = q.inputs[i].const.astype(np.float64)
            s = np.asarray(q.inputs[i].quant.scale, np.float64).reshape((-1,) + (1,) * (c.ndim - 1))
            n.inputs[i].const = (c * s).astype(np.float32)
    return wg


def exact_input(x: np.ndarray, qgraph: Graph) -> np.ndarray:
    """``x`` rounded to the int8 input grid and dequantized (float32 NCHW)."""
    v = qgraph.inputs[0]
    q = quantize_input(x, v).astype(np.float64)
    y = (q - float(np.asarray(v.quant.zero_point))) * float(np.asarray(v.quant.scale))
    return y.transpose(2, 0, 1)[None].astype(np.float32)


def output_table(model: onnx.ModelProto, qgraph: Graph, wgraph: Graph, xs: list[np.ndarray],
                 exact: bool) -> dict[str, dict[str, list[float]]]:
    """{graph output: {"int8" | "weights only" | "exact input": SQNR dB per input}}."""
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    iname = sess.get_inputs()[0].name
    names = [o.name for o in sess.get_outputs()]
    gold = GoldenModel(qgraph)
    res: dict[str, dict[str, list[float]]] = {n: {} for n in names}
    for x in xs:
        ref = dict(zip(names, sess.run(None, {iname: x}), strict=True))
        got, wo = gold.run(x), run_float(wgraph, x)
        ref_q = (dict(zip(names, sess.run(None, {iname: exact_input(x, qgraph)}), strict=True))
                 if exact else {})
        for n in names:
            res[n].setdefault("int8", []).append(sqnr_db(ref[n], got[n]))
            if n in wo:
                res[n].setdefault("weights only", []).append(
                    sqnr_db(ref[n], wo[n].reshape(ref[n].shape)))
            if exact:
                res[n].setdefault("exact input", []).append(sqnr_db(ref_q[n], got[n]))
    return res


def layer_table(qgraph: Graph, float_graph: Graph, wgraph: Graph, xs: list[np.ndarray]) \
        -> list[tuple[str, str, float, float]]:
    """[(layer, op, int8 dB, weights-only dB)] in graph order, accumulated over ``xs``
    (SQNR of the summed error and signal powers)."""
    gold = GoldenModel(qgraph)
    sums: dict[str, list[float]] = {}
    for x in xs:
        fl, wl = run_float(float_graph, x, keep=True), run_float(wgraph, x, keep=True)
        got = gold.run(x, keep=True)
        for n in qgraph.nodes:
            name = n.output.name
            if "int:" + name not in got or name not in fl:
                continue
            f = fl[name].astype(np.float64)
            q = dequantize_output(got["int:" + name], n.output).reshape(f.shape)
            acc = sums.setdefault(n.name, [0.0, 0.0, 0.0])
            acc[0] += float((f * f).sum())
            acc[1] += float(((f - q) ** 2).sum())
            acc[2] += float(((f - wl[name].reshape(f.shape)) ** 2).sum())

    def db(sig: float, err: float) -> float:
        return float("inf") if err == 0 else 10 * np.log10(sig / err) if sig else -float("inf")
    return [(n.name, n.op.value, db(s[0], s[1]), db(s[0], s[2]))
            for n in qgraph.nodes if (s := sums.get(n.name))]


def _model(arg: str, size: str | None) -> tuple[onnx.ModelProto, str]:
    if arg in zoo.NAMES:
        w, h = (int(v) for v in size.split("x")[:2]) if size else (None, None)
        return zoo.build(arg, w, h), arg
    return onnx.load(arg), Path(arg).stem


def main(argv: list[str] | None = None) -> int:
    """Print the output table (and the layer table with ``--layers``)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="a tccc zoo name or an .onnx file")
    ap.add_argument("--input", default=None, help="WxH (zoo models; default the vendor's)")
    ap.add_argument("--images", type=int, default=10, help="eval photos (1..12)")
    ap.add_argument("--layers", action="store_true", help="per-layer int8 vs weights only")
    ap.add_argument("--layer-images", type=int, default=2)
    ap.add_argument("--exact-input", action="store_true")
    args = ap.parse_args(argv)
    model, name = _model(args.model, args.input)
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    whc = f"{dims[3]}x{dims[2]}x{dims[1]}"
    calib = photo_inputs(name, model, "calib", 8)
    xs = photo_inputs(name, model, "eval", args.images)
    sub, label = npu_model(model, whc)
    qgraph, float_graph = quantized(sub, whc, calib)
    wgraph = weights_only(qgraph, float_graph)
    print(f"{name} {whc} ({label}), SQNR dB against ONNX Runtime, min / median over "
          f"{len(xs)} photos")
    for out, cols in output_table(sub, qgraph, wgraph, xs, args.exact_input).items():
        cells = "  ".join(f"{k} {min(v):6.2f} / {statistics.median(v):6.2f}"
                          for k, v in cols.items())
        print(f"  {out[-64:]:64s} {cells}")
    if args.layers:
        print(f"layers (accumulated, first {args.layer_images} photos): int8 / weights only")
        for layer, op, q, w in layer_table(qgraph, float_graph, wgraph,
                                           xs[:args.layer_images]):
            print(f"  {layer[-60:]:60s} {op:10s} {q:7.2f} {w:7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
