#!/usr/bin/env python3
"""How much of a model's INT8 error its int8 *weights* make: the float graph run by ONNX
Runtime with each conv/fc's weights replaced by their dequantized int8 values (activations
stay float), scored against FP32 on held-out images.

A quick loop for weight-rounding work (issue 14): one float pass over the calibration inputs
(activation ranges and GPTQ's ``H``, as ``tccc compile`` gathers them), then one ONNX Runtime
float pass per variant over the scored images -- no golden integer model, so a variant of the
900 Lite0 images takes about as long as FP32 itself. The whole INT8 network's numbers are
``tools/bench_quant.py``'s.

Variants: ``nearest`` (round-to-nearest on the min-max per-channel scales,
:func:`tcc_compiler.quant.quantize_graph`) and ``gptq`` (the default weight rounding,
:func:`tcc_compiler.quant.weight_rounding.gptq_round_weights`, every conv/fc). Per variant:
top-1 / top-5 (percent), flips (top-1 differing from FP32), logit SQNR against FP32 (dB) and
the mean KL divergence of the softmax, ``KL(FP32 || int8)`` (nats x 1e-3): a flip count of a
few images out of 900 moves with the calibration subset, SQNR and KL much less.

Data: EfficientNet-Lite0 (``--lite0 DIR``: preset ``tf-efficientnet``, calibrate on every 10th
image by sorted name, score the other 900, as ``tools/bench_quant.py --lite0``).

Usage: PYTHONPATH=$PWD python3 tools/bench_weights.py --lite0 ../shared/data/imagenet-lite0
       [--score-step K] [--json FILE]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

from bench_quant import sqnr_db, topk_score

VARIANTS = ("nearest", "gptq")


def mean_kl(ref: np.ndarray, got: np.ndarray) -> float:
    """Mean over rows of KL(softmax(ref) || softmax(got)) in nats; ``ref``, ``got``: logits
    [N, classes] (float64 log-softmax, max-shifted)."""
    def log_softmax(z):
        z = np.asarray(z, np.float64)
        z = z - z.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    a, b = log_softmax(ref), log_softmax(got)
    return float((np.exp(a) * (a - b)).sum(axis=1).mean())


def dequantized_weights(float_graph, qgraph) -> dict:
    """{node name: float32 weights} of ``qgraph``'s int8 conv/fc weights times their
    per-channel scales (OIHW / [out, in], the float graph's shapes)."""
    from tcc_compiler.ir.ops import Op

    out = {}
    for n in qgraph.nodes:
        if n.op in (Op.CONV, Op.FC) and n.inputs[1].dtype == "int8":
            wv = n.inputs[1]
            s = np.asarray(wv.quant.scale, np.float64).reshape((-1,) + (1,) * (wv.const.ndim - 1))
            out[n.name] = (wv.const.astype(np.float64) * s).astype(np.float32)
    return out


def float_logits(float_graph, evals, weights: dict | None = None) -> np.ndarray:
    """The float graph's first output [N, classes] over ``evals`` in ONNX Runtime, with the
    conv/fc weights in ``weights`` swapped in (on a clone)."""
    from tcc_compiler.interp.onnx_float import FloatSession

    g = float_graph.clone()
    for n in g.nodes:
        if weights and n.name in weights:
            n.inputs[1].const = weights[n.name]
    name = g.outputs[0].name
    sess = FloatSession(g)
    return np.concatenate([sess.run(x, [name])[0].reshape(1, -1) for x in evals])


def bench_lite0(folder: Path, score_step: int = 1) -> dict:
    """Weights-only scores of the :data:`VARIANTS` on EfficientNet-Lite0 (module docstring)."""
    from tcc_compiler.datasets.images import LazyInputs
    from tcc_compiler.datasets.presets import preset
    from tcc_compiler.driver import import_model, run_float_passes
    from tcc_compiler.quant import quantize_graph
    from tcc_compiler.quant.calibrate import observe
    from tcc_compiler.quant.ranges import choose_ranges
    from tcc_compiler.quant.weight_rounding import HessianSum, gptq_round_weights

    rows = [r for r in csv.reader(open(folder / "labels.csv")) if r and r[0].endswith(".jpg")]
    rows.sort(key=lambda r: r[0])
    pre = preset("tf-efficientnet", 224, 224)
    calib = LazyInputs([folder / "images" / r[0] for r in rows[::10]], pre, pre.shape)
    scored = [r for k, r in enumerate(rows) if k % 10][::score_step]
    evals = [x for x in LazyInputs([folder / "images" / r[0] for r in scored], pre, pre.shape)]
    labels = np.array([int(r[-1]) for r in scored])
    fg = run_float_passes(*import_model(folder / "efficientnet_lite0.onnx", None)).graph
    t0 = time.time()
    hess = HessianSum(fg, bounded=False)
    ranges, _ = choose_ranges(observe(fg, calib, ["mse"], also=hess.visit)["mse"], "mse")
    print(f"  calibration pass {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    fp = float_logits(fg, evals)
    fp_pred = fp.argmax(axis=1)
    res = {"images": len(evals), "calib": len(calib), "fp32": topk_score(list(fp), labels)}
    for v in VARIANTS:
        t0 = time.time()
        q = quantize_graph(fg.clone(), ranges)
        if v == "gptq":
            gptq_round_weights(fg, q, calib, bounded=False, hessians=hess)
        y = float_logits(fg, evals, dequantized_weights(fg, q))
        res[v] = {**topk_score(list(y), labels, fp_pred), "sqnr_db": round(sqnr_db(fp, y), 2),
                  "kl_1e3": round(1e3 * mean_kl(fp, y), 3)}
        print(f"  {v} {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    return res


def main(argv=None) -> int:
    """Run the bench and print one line per variant."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lite0", required=True, help="folder of the ImageNet EfficientNet-Lite0")
    p.add_argument("--score-step", type=int, default=1,
                   help="score every K-th of Lite0's 900 held-out images (default all)")
    p.add_argument("--json", help="also write the results to this file")
    args = p.parse_args(argv)
    r = bench_lite0(Path(args.lite0), args.score_step)
    print(f"efficientnet-lite0 weights only ({r['calib']} calib, {r['images']} scored): FP32 "
          f"top-1 {r['fp32']['top1']} %; " + "; ".join(
              f"{v} {r[v]['top1']} % ({r[v]['flips']} flips, {r[v]['sqnr_db']} dB, KL "
              f"{r[v]['kl_1e3']}e-3)" for v in VARIANTS))
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
