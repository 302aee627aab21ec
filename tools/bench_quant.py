#!/usr/bin/env python3
"""INT8 accuracy of tccc next to ONNX Runtime's ``quantize_static``, same run, same inputs.

Zoo models (default ResNet-18/50/50-v2 at 224x224x3): SQNR (dB) of the INT8 logits against
the FP32 logits (ONNX Runtime, CPU) over the evaluation images, for tccc's methods (minmax,
percentile, entropy, mse) and ONNX Runtime's (MinMax, Percentile, Entropy; per-channel, QDQ,
int8 activations and weights). SQNR = 10 log10(sum ref^2 / sum (ref - int8)^2) over all logits
of all evaluation images. tccc's INT8 output is the golden integer model's, which the reference
executor matches bit for bit (tests/sim/test_executor.py).

Photos: the package ships 8 calibration and 12 evaluation photos; this bench makes 16
calibration inputs (each calib photo whole and its centre 75 % crop) and 32 evaluation inputs
(each eval photo whole, its centre 75 % crop, and for the first 8 its top-left 75 % crop),
cropped at run time with Pillow into a temporary folder. The two sets never share a photo.

ResNet-8 (``--resnet8 DIR``, the real CIFAR-10 model): calibrate on the first 50 images, score
all 200: FP32 top-1, INT8 top-1 and flips (predictions differing from FP32) per method. ONNX
Runtime refuses opset 11, so its copy is upgraded to opset 13 first.

EfficientNet-Lite0 (``--lite0 DIR``, Google's ImageNet weights, 1000 labelled images; see its
README): preset ``tf-efficientnet`` (short side 256 bicubic, center crop 224, (pixel-127)/128),
calibrate on every 10th image by sorted name (100), score the other 900: FP32 (ONNX Runtime)
top-1 / top-5, and per tccc method INT8 top-1, top-5 and flips. ``--score-step K`` scores every
K-th of the 900 only (quicker, for exploration).

Every tccc range goes through :func:`tcc_compiler.quant.ranges.choose_ranges` as in
``tccc compile`` (the collapse guard; ``--no-guard`` to measure without it); the guard's
rejections are counted per method.

Usage: python tools/bench_quant.py [--models resnet18 resnet50 resnet50-v2] [--resnet8 DIR]
       [--lite0 DIR] [--eval N] [--json FILE]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

from tcc_compiler.options import DEFAULTS

TCCC_METHODS = ("minmax", "percentile", "entropy", "mse")
ORT_METHODS = ("minmax", "percentile", "entropy")
PERCENTILE = DEFAULTS.percentile


def sqnr_db(ref: np.ndarray, got: np.ndarray) -> float:
    """10 log10(sum ref^2 / sum (ref - got)^2) over all elements (float64)."""
    ref = np.asarray(ref, np.float64).reshape(-1)
    err = ref - np.asarray(got, np.float64).reshape(-1)
    return float(10 * np.log10(np.sum(ref ** 2) / max(np.sum(err ** 2), 1e-30)))


def make_photo_sets(folder: Path) -> tuple[list[Path], list[Path]]:
    """16 calibration and 32 evaluation crops of the bundled photos (see the module doc)."""
    from PIL import Image

    from tcc_compiler.datasets.images import bundled_photos

    def crops(paths, kinds):
        out = []
        for kind in kinds:
            for k, p in enumerate(paths):
                if kind == "topleft" and k >= 8:
                    continue
                with Image.open(p) as im:
                    im = im.convert("RGB")
                    w, h = im.size
                    cw, ch = int(w * 0.75), int(h * 0.75)
                    if kind == "centre":
                        box = ((w - cw) // 2, (h - ch) // 2, (w - cw) // 2 + cw,
                               (h - ch) // 2 + ch)
                        im = im.crop(box)
                    elif kind == "topleft":
                        im = im.crop((0, 0, cw, ch))
                    dst = folder / f"{p.stem}_{kind}.png"
                    im.save(dst)
                out.append(dst)
        return out

    calib = crops(bundled_photos("calib"), ("full", "centre"))
    ev = crops(bundled_photos("eval"), ("full", "centre", "topleft"))
    return calib, ev


GUARD = {"on": True, "rejected": {}}
#: method -> the ``--precision auto`` choice (PrecisionChoice.to_dict) of its "+auto" variant.
AUTO: dict = {}
#: The ``--precision-goal`` of the "+auto" variants (None: tccc's default).
GOAL = {"db": None}


#: variant -> the two-fold bias-correction check of its "+bcauto" variant (BiasCorrection.to_dict).
BCAUTO: dict = {}


#: Variant names to compute (None: all; ``--variants``).
ONLY: dict = {"variants": None}


def _wanted(tag: str) -> bool:
    return ONLY["variants"] is None or tag in ONLY["variants"]


def tccc_outputs(model, whc, calib, evals, methods, percentile=PERCENTILE,
                 bias_correction=(), gptq=(), auto=(), pre=None, budget=(), mirror=()) -> dict:
    """{variant: [first graph output per eval input]} from tccc's golden integer model: for
    each method ``method`` (nearest weight rounding); for each in ``bias_correction`` also
    ``method + "+bc"`` (empirical bias correction on the calibration inputs), for each in
    ``gptq`` ``method + "+gptq"`` (GPTQ weight rounding on every conv/fc) and, if in both,
    ``method + "+gptq+bc"``, and the same with ``+bcauto`` (bias correction only when the
    two-fold check on the calibration inputs gains, ``--bias-correction auto``; its decision in
    ``BCAUTO``); for each in ``auto`` ``method + "+auto"`` (``--precision auto``:
    int16 layers chosen on the calibration inputs, their names in ``AUTO[method]``), with
    ``gptq`` also ``method + "+gptq+auto"`` (the same int16 layers, GPTQ weights), and
    ``method + "+all16"`` (every layer that can be int16); for each in ``budget``
    ``method + "+budget"`` (``--precision budget``), with ``gptq`` also
    ``method + "+gptq+budget"``; for each in ``mirror`` ``method + "+gptq+mirror"`` (GPTQ with
    ``H`` summed over the calibration inputs and their left-right mirror images, NCHW W axis
    reversed: twice the rows per weight; an experiment, not a tccc option). Only the variants
    ``ONLY`` names
    are computed. Ranges are chosen as ``tccc compile`` does (guarded unless ``GUARD["on"]``
    is False; rejections counted in ``GUARD["rejected"]``; with the preprocessing ``pre`` the
    input's range on its pixel grid, :func:`tcc_compiler.quant.ranges.snap_input_range`)."""
    from tcc_compiler.driver import import_model, run_float_passes
    from tcc_compiler.quant import quantize_graph, run_golden
    from tcc_compiler.quant.bias_correction import correct_biases, gated_bias_correction
    from tcc_compiler.quant.calibrate import observe
    from tcc_compiler.quant.ranges import choose_ranges, snap_input_range
    from tcc_compiler.quant.weight_rounding import gptq_round_weights

    fg = run_float_passes(*import_model(model, whc)).graph
    obs = observe(fg, calib, methods, percentile)
    out = {}

    def run(tag, g):
        name = g.outputs[0].name
        out[tag] = [run_golden(g, x)[name] for x in evals]
        print(f"  {tag} done ({time.strftime('%H:%M:%S')})", file=sys.stderr, flush=True)

    for m in methods:
        ranges, rejected = choose_ranges(obs[m], m, guard=GUARD["on"])
        GUARD["rejected"][m] = len(rejected)
        if pre is not None:
            snap_input_range(ranges, {k: getattr(o, "mm", o).range() for k, o in obs[m].items()},
                             fg.inputs[0].name, pre)
        for rounding in ("nearest",) + (("gptq",) if m in gptq else ()):
            tag = m + ("+gptq" if rounding == "gptq" else "")
            bc = m in bias_correction and _wanted(tag + "+bc")
            bca = m in bias_correction and _wanted(tag + "+bcauto")
            if not (_wanted(tag) or bc or bca):
                continue
            g = quantize_graph(fg.clone(), ranges)
            if rounding == "gptq":
                gptq_round_weights(fg, g, calib, bounded=False)
            if _wanted(tag):
                run(tag, g)
            if bca:
                ga = g.clone()
                t0 = time.perf_counter()
                gate = gated_bias_correction(fg, ga, calib)
                BCAUTO[tag + "+bcauto"] = {**gate.to_dict(),
                                           "seconds": round(time.perf_counter() - t0, 1)}
                print(f"  {tag}+bcauto: {gate.reason}", file=sys.stderr, flush=True)
                run(tag + "+bcauto", ga)
            if bc:
                correct_biases(fg, g, calib)
                run(tag + "+bc", g)
        if m in auto:
            _auto_variants(fg, m, ranges, obs[m], calib, m in gptq, run)
        if m in mirror and _wanted(m + "+gptq+mirror"):
            run(m + "+gptq+mirror", _mirror_variant(fg, ranges, calib))
        if m in budget and (_wanted(m + "+budget") or _wanted(m + "+gptq+budget")):
            _budget_variants(fg, m, ranges, obs[m], calib, m in gptq, run)
    return out


def _mirror_variant(fg, ranges, calib):
    """The quantized graph of the ``+gptq+mirror`` variant: GPTQ whose H sums the calibration
    inputs (float32 NCHW) and their left-right mirror images (W axis reversed)."""
    from tcc_compiler.quant import quantize_graph
    from tcc_compiler.quant.weight_rounding import gptq_round_weights

    g = quantize_graph(fg.clone(), ranges)
    xs = [calib[i] for i in range(len(calib))]
    gptq_round_weights(fg, g, xs + [np.ascontiguousarray(x[..., ::-1]) for x in xs],
                       bounded=False)
    return g


def _budget_variants(fg, m, ranges, observers, calib, with_gptq, run) -> None:
    """The ``+budget`` (and ``+gptq+budget``) variants of method ``m``: ``--precision
    budget``'s int16 layers (in ``AUTO[m + "+budget"]``), nearest or GPTQ int8 weights."""
    from tcc_compiler.quant import quantize_graph
    from tcc_compiler.quant.auto_precision import budget_precision
    from tcc_compiler.quant.weight_rounding import gptq_round_weights

    mm = {k: getattr(o, "mm", o).range() for k, o in observers.items()}
    choice = budget_precision(fg, ranges, mm, calib)
    AUTO[m + "+budget"] = choice.to_dict()
    wts = set(choice.plan.weight_layers)
    for tag in (m + "+budget",) + ((m + "+gptq+budget",) if with_gptq else ()):
        if _wanted(tag):
            g = quantize_graph(fg.clone(), ranges, choice.int16_ranges, wts)
            if "gptq" in tag:
                gptq_round_weights(fg, g, calib, bounded=False)   # the int8 weights left
            run(tag, g)


def _auto_variants(fg, m, ranges, observers, calib, with_gptq, run) -> None:
    """The ``+auto`` (and ``+gptq+auto``) and ``+all16`` variants of method ``m``."""
    from tcc_compiler.quant import quantize_graph
    from tcc_compiler.quant.auto_precision import (DEFAULT_GOAL_DB, auto_precision,
                                                   choose_precision)
    from tcc_compiler.quant.weight_rounding import gptq_round_weights

    mm = {k: getattr(o, "mm", o).range() for k, o in observers.items()}
    goal = DEFAULT_GOAL_DB if GOAL["db"] is None else GOAL["db"]
    choice = auto_precision(fg, ranges, mm, calib, goal)
    AUTO[m] = choice.to_dict()
    wts = set(choice.plan.weight_layers)
    if _wanted(m + "+auto"):
        run(m + "+auto", quantize_graph(fg.clone(), ranges, choice.int16_ranges, wts))
    if with_gptq and _wanted(m + "+gptq+auto"):
        g = quantize_graph(fg.clone(), ranges, choice.int16_ranges, wts)
        gptq_round_weights(fg, g, calib, bounded=False)   # the int8 weights left
        run(m + "+gptq+auto", g)
    if _wanted(m + "+all16"):
        every = choose_precision(fg, ranges, mm, [], {
            "int16": [r[0] for r in choice.ranking if r[1] in ("activations", "table outputs")],
            "int16_weights": [r[0] for r in choice.ranking if r[1] == "weights"]})
        run(m + "+all16", quantize_graph(fg.clone(), ranges, every.int16_ranges,
                                         set(every.plan.weight_layers)))


class _Reader:
    """ONNX Runtime CalibrationDataReader over a list of arrays."""

    def __init__(self, name, xs):
        self.it = iter([{name: x} for x in xs])

    def get_next(self):
        return next(self.it, None)

    def rewind(self):  # pragma: no cover - ORT API
        pass


def ort_session(path):
    """A CPU ONNX Runtime session (quiet)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def ort_outputs(model_path: Path, calib, evals, methods, workdir: Path) -> dict:
    """{"fp32" | method: [first output per eval input]} from ONNX Runtime."""
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    cm = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
          "percentile": CalibrationMethod.Percentile}
    proto = onnx.load(model_path)
    opset = max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    if opset < 13:  # per-channel QDQ needs DequantizeLinear's axis (opset 13)
        from onnx import version_converter

        model_path = workdir / f"{model_path.stem}-op13.onnx"
        onnx.save(version_converter.convert_version(proto, 13), model_path)
    sess = ort_session(model_path)
    iname = sess.get_inputs()[0].name
    out = {"fp32": [sess.run(None, {iname: x})[0] for x in evals]}
    for m in methods:
        qpath = workdir / f"{model_path.stem}-ort-{m}.onnx"
        quantize_static(str(model_path), str(qpath), _Reader(iname, calib),
                        quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        calibrate_method=cm[m],
                        extra_options={"CalibPercentile": PERCENTILE})
        qs = ort_session(qpath)
        out[m] = [qs.run(None, {iname: x})[0] for x in evals]
    return out


def bench_zoo(name: str, whc: str, calib_paths, eval_paths, workdir: Path,
              bc=(), methods=TCCC_METHODS, ort_methods=ORT_METHODS) -> dict:
    """SQNR of every method on one zoo model."""
    from tcc_compiler import zoo
    from tcc_compiler.datasets.images import Preprocess, load_inputs
    from tcc_compiler.frontend import parse_input_spec

    w, h, c = parse_input_spec(whc)
    path = workdir / f"{name}.onnx"
    zoo.save(name, path, width=w, height=h, channels=c)
    pre = Preprocess(width=w, height=h)
    calib = load_inputs(calib_paths, pre, (1, c, h, w))
    evals = load_inputs(eval_paths, pre, (1, c, h, w))
    t0 = time.perf_counter()
    ref = ort_outputs(path, calib, evals, ort_methods, workdir)
    t1 = time.perf_counter()
    ours = tccc_outputs(path, whc, calib, evals, methods, bias_correction=bc)
    t2 = time.perf_counter()
    fp = ref["fp32"]
    return {"model": name, "input": whc, "calib": len(calib), "eval": len(evals),
            "tccc_sqnr_db": {m: round(sqnr_db(fp, ours[m]), 2) for m in ours},
            "ort_sqnr_db": {m: round(sqnr_db(fp, ref[m]), 2) for m in ort_methods},
            "seconds": {"ort": round(t1 - t0, 1), "tccc": round(t2 - t1, 1)}}


def bench_symmetry(name: str, whc: str, calib_paths, eval_paths, workdir: Path,
                   methods=("mse", "minmax")) -> dict:
    """Logit SQNR with asymmetric (tccc's) vs symmetric (zero point 0, s = max|x| / 127)
    per-tensor activations, same calibration ranges (specs/quantization.md, "Activations")."""
    from tcc_compiler import zoo
    from tcc_compiler.datasets.images import Preprocess, load_inputs
    from tcc_compiler.driver import import_model, run_float_passes
    from tcc_compiler.frontend import parse_input_spec
    from tcc_compiler.ir.graph import QuantParams
    from tcc_compiler.quant import quantize as Q
    from tcc_compiler.quant import quantize_graph, run_golden
    from tcc_compiler.quant.calibrate import observe

    def symmetric(lo, hi):
        a = max(-min(float(lo), 0.0), max(float(hi), 0.0))
        return QuantParams(np.float64(a / 127.0 if a > 0 else 1.0), np.int64(0))

    w, h, c = parse_input_spec(whc)
    path = workdir / f"{name}-sym.onnx"
    zoo.save(name, path, width=w, height=h, channels=c)
    pre = Preprocess(width=w, height=h)
    calib = load_inputs(calib_paths, pre, (1, c, h, w))
    evals = load_inputs(eval_paths, pre, (1, c, h, w))
    sess = ort_session(path)
    iname = sess.get_inputs()[0].name
    fp = [sess.run(None, {iname: x})[0] for x in evals]
    fg = run_float_passes(*import_model(path, whc)).graph
    obs = observe(fg, calib, methods)
    res = {}
    asym = Q.activation_params
    try:
        for m in methods:
            for label, fn in (("asymmetric", asym), ("symmetric", symmetric)):
                Q.activation_params = fn          # quantize_graph looks it up at call time
                g = fg.clone()
                quantize_graph(g, {k: o.range() for k, o in obs[m].items()})
                q = [run_golden(g, x)[g.outputs[0].name] for x in evals]
                res[f"{m} {label}"] = round(sqnr_db(fp, q), 2)
    finally:
        Q.activation_params = asym
    return {"model": name, "input": whc, "calib": len(calib), "eval": len(evals),
            "symmetry_sqnr_db": res}


def bench_resnet8(folder: Path, workdir: Path, n_calib: int = 50, bc=(), gptq=(),
                  auto=(), budget=(), mirror=()) -> dict:
    """Top-1 and flips on the real CIFAR-10 ResNet-8 (see its README)."""
    from onnx import version_converter

    from tcc_compiler.datasets.presets import preset

    rows = list(csv.reader(open(folder / "labels.csv")))
    rows = [r for r in rows if r and r[0].endswith(".bin")]
    rows.sort(key=lambda r: r[0])
    xs, labels = [], []
    for r in rows:
        px = np.frombuffer((folder / "images" / r[0]).read_bytes(), np.uint8)
        xs.append(px.reshape(32, 32, 3).transpose(2, 0, 1)[None].astype(np.float32))
        labels.append(int(r[-1]))
    labels = np.array(labels)
    m13 = version_converter.convert_version(onnx.load(folder / "resnet8.onnx"), 13)
    p13 = workdir / "resnet8-op13.onnx"
    onnx.save(m13, p13)
    ref = ort_outputs(p13, xs[:n_calib], xs, ORT_METHODS, workdir)
    raw = preset("raw", 32, 32)       # the model takes raw pixels 0..255 (its README)
    ours = tccc_outputs(folder / "resnet8.onnx", None, xs[:n_calib], xs, TCCC_METHODS,
                        bias_correction=bc, gptq=gptq, auto=auto, pre=raw, budget=budget,
                        mirror=mirror)
    fp_pred = np.array([int(np.argmax(y)) for y in ref["fp32"]])

    def score(outs):
        pred = np.array([int(np.argmax(y)) for y in outs])
        return {"top1": round(100.0 * float(np.mean(pred == labels)), 1),
                "flips": int(np.sum(pred != fp_pred))}

    return {"images": len(xs), "calib": n_calib,
            "fp32_top1": round(100.0 * float(np.mean(fp_pred == labels)), 1),
            "tccc": {m: score(ours[m]) for m in ours},
            "ort": {m: score(ref[m]) for m in ORT_METHODS},
            "rejected": dict(GUARD["rejected"]), "auto": _auto_summary(),
            "bcauto": dict(BCAUTO)}


def _auto_summary() -> dict:
    """{method: int16 layers and output SQNRs} of the ``+auto`` variants measured."""
    return {m: {"int16_layers": a["int16_layers"],
                "int16_weight_layers": a.get("int16_weight_layers", []),
                "output_sqnr_db": a.get("output_sqnr_db"),
                "goal_db": a.get("goal_db")} for m, a in AUTO.items()}


def bench_lite0(folder: Path, score_step: int = 1, bc=(), methods=TCCC_METHODS,
                gptq=(), auto=(), budget=(), mirror=()) -> dict:
    """Top-1 / top-5 and flips on the real ImageNet EfficientNet-Lite0 (module docstring)."""
    from tcc_compiler.datasets.images import LazyInputs
    from tcc_compiler.datasets.presets import preset

    rows = [r for r in csv.reader(open(folder / "labels.csv")) if r and r[0].endswith(".jpg")]
    rows.sort(key=lambda r: r[0])
    calib_rows = rows[::10]
    score_rows = [r for k, r in enumerate(rows) if k % 10][::score_step]
    pre = preset("tf-efficientnet", 224, 224)
    calib = LazyInputs([folder / "images" / r[0] for r in calib_rows], pre, pre.shape)
    evals = LazyInputs([folder / "images" / r[0] for r in score_rows], pre, pre.shape)
    labels = np.array([int(r[-1]) for r in score_rows])
    sess = ort_session(folder / "efficientnet_lite0.onnx")
    iname = sess.get_inputs()[0].name
    fp = [sess.run(None, {iname: x})[0] for x in evals]
    ours = tccc_outputs(folder / "efficientnet_lite0.onnx", None, calib, evals, methods,
                        bias_correction=bc, gptq=gptq, auto=auto, pre=pre, budget=budget,
                        mirror=mirror)
    fp_pred = np.array([int(np.argmax(y)) for y in fp])
    return {"images": len(evals), "calib": len(calib), "fp32": topk_score(fp, labels),
            "tccc": {m: topk_score(ours[m], labels, fp_pred) for m in ours},
            "rejected": dict(GUARD["rejected"]), "auto": _auto_summary(),
            "bcauto": dict(BCAUTO)}


def topk_score(outs, labels, fp_pred=None) -> dict:
    """top-1 / top-5 (percent) of ``outs`` (one score vector per sample), and the flips
    (top-1 differing from ``fp_pred``) when given: in all and on the even / odd positions."""
    y = np.stack([np.asarray(o, np.float64).reshape(-1) for o in outs])
    top5 = np.argsort(-y, axis=1, kind="stable")[:, :5]
    out = {"top1": round(100.0 * float(np.mean(top5[:, 0] == labels)), 2),
           "top5": round(100.0 * float(np.mean((top5 == labels[:, None]).any(axis=1))), 2)}
    if fp_pred is not None:
        flip = top5[:, 0] != fp_pred
        out["flips"] = int(np.sum(flip))
        # the two halves (even / odd positions among the scored images): a change of rule
        # that helps only one half is noise, not a gain
        out["flips_even_odd"] = [int(np.sum(flip[0::2])), int(np.sum(flip[1::2]))]
    return out


def main(argv=None) -> int:
    """Run the requested benches and print one line per model."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="*", default=["resnet18", "resnet50", "resnet50-v2"])
    p.add_argument("--input", default="224x224x3")
    p.add_argument("--resnet8", default=None, help="folder of the CIFAR-10 ResNet-8")
    p.add_argument("--bias-correction", nargs="*", default=[], metavar="METHOD",
                   help="also measure these methods with empirical bias correction (+bc: on; "
                        "+bcauto: the two-fold check decides)")
    p.add_argument("--auto", nargs="*", default=[], metavar="METHOD",
                   help="also measure these methods with --precision auto (int16 layers)")
    p.add_argument("--budget", nargs="*", default=[], metavar="METHOD",
                   help="also measure these methods with --precision budget (a few cheap "
                        "int16 layers)")
    p.add_argument("--mirror-h", nargs="*", default=[], metavar="METHOD",
                   help="also measure these methods with GPTQ whose H also sums the "
                        "calibration inputs mirrored left-right (an experiment)")
    p.add_argument("--precision-goal", type=float, default=None, metavar="DB",
                   help="goal of --auto (output SQNR, dB; default tccc's)")
    p.add_argument("--gptq", nargs="*", default=[], metavar="METHOD",
                   help="also measure these methods with GPTQ weight rounding")
    p.add_argument("--methods", nargs="+", default=list(TCCC_METHODS),
                   help="tccc methods measured on the zoo models")
    p.add_argument("--ort-methods", nargs="*", default=list(ORT_METHODS),
                   help="ONNX Runtime methods measured on the zoo models (none: FP32 only)")
    p.add_argument("--eval", type=int, default=32,
                   help="evaluation crops used (at most 32; fewer for a quick run)")
    p.add_argument("--symmetry", nargs="*", default=[], metavar="MODEL",
                   help="zoo models on which to measure asymmetric vs symmetric activations "
                        "(at --input, bundled 8 calib / 12 eval photos, uncropped)")
    p.add_argument("--lite0", default=None, help="folder of the ImageNet EfficientNet-Lite0")
    p.add_argument("--score-step", type=int, default=1,
                   help="score every K-th of Lite0's 900 held-out images (default all)")
    p.add_argument("--no-guard", action="store_true",
                   help="take every method's ranges unguarded (tcc_compiler/quant/ranges.py)")
    p.add_argument("--variants", nargs="+", default=None, metavar="NAME",
                   help="compute only these tccc variants (e.g. mse mse+gptq mse+gptq+auto; "
                        "default all that the options above make)")
    p.add_argument("--json", help="also write the results to this file")
    args = p.parse_args(argv)
    ONLY["variants"] = set(args.variants) if args.variants else None
    GOAL["db"] = args.precision_goal
    GUARD["on"] = not args.no_guard
    results = []
    with tempfile.TemporaryDirectory(prefix="tccc-bq-") as tmp:
        tmp = Path(tmp)
        (tmp / "photos").mkdir()
        calib, ev = make_photo_sets(tmp / "photos")
        ev = ev[:args.eval]
        for name in args.models:
            r = bench_zoo(name, args.input, calib, ev, tmp, bc=args.bias_correction,
                          methods=args.methods, ort_methods=args.ort_methods)
            results.append(r)
            t, o = r["tccc_sqnr_db"], r["ort_sqnr_db"]
            print(f"{name} {args.input} ({r['calib']} calib / {r['eval']} eval crops) logit "
                  f"SQNR dB: tccc " + ", ".join(f"{k} {v}" for k, v in t.items())
                  + " | ORT " + ", ".join(f"{k} {v}" for k, v in o.items())
                  + f" | {r['seconds']}")
            sys.stdout.flush()
        for name in args.symmetry:
            from tcc_compiler.datasets.images import bundled_photos

            r = bench_symmetry(name, args.input, bundled_photos("calib"),
                               bundled_photos("eval"), tmp)
            results.append(r)
            print(f"{name} {args.input} activations, logit SQNR dB: "
                  + ", ".join(f"{k} {v}" for k, v in r["symmetry_sqnr_db"].items()))
            sys.stdout.flush()
        if args.resnet8:
            r = bench_resnet8(Path(args.resnet8), tmp, bc=args.bias_correction, gptq=args.gptq,
                              auto=args.auto, budget=args.budget, mirror=args.mirror_h)
            results.append({"model": "resnet8", **r})
            print(f"resnet8 ({r['calib']} calib, {r['images']} scored): FP32 top-1 "
                  f"{r['fp32_top1']} %; tccc " + ", ".join(
                      f"{k} {v['top1']} % ({v['flips']} flips)" for k, v in r["tccc"].items())
                  + " | ORT " + ", ".join(
                      f"{k} {v['top1']} % ({v['flips']} flips)" for k, v in r["ort"].items())
                  + f"; guard rejections {r['rejected']}")
        if args.lite0:
            r = bench_lite0(Path(args.lite0), args.score_step, bc=args.bias_correction,
                            methods=args.methods, gptq=args.gptq, auto=args.auto,
                            budget=args.budget, mirror=args.mirror_h)
            results.append({"model": "efficientnet-lite0", **r})
            print(f"efficientnet-lite0 ({r['calib']} calib, {r['images']} scored): FP32 top-1 "
                  f"{r['fp32']['top1']} % top-5 {r['fp32']['top5']} %; tccc " + ", ".join(
                      f"{k} {v['top1']} % / {v['top5']} % ({v['flips']} flips, even/odd "
                      f"{v['flips_even_odd'][0]}/{v['flips_even_odd'][1]})"
                      for k, v in r["tccc"].items())
                  + f"; guard rejections {r['rejected']}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
