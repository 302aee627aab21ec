#!/usr/bin/env python3
"""Pre-quantized (QDQ) models: tccc's compile of ONNX Runtime's ``quantize_static`` output vs
ONNX Runtime's own execution of that QDQ model (issue 15's targets).

For each model (``resnet50``: the zoo's seeded ResNet-50, ImageNet mean/std; ``lite0``: the
real EfficientNet-Lite0 in ``../shared/data/imagenet-lite0`` with its README's preprocessing,
short side 256 bicubic, centre crop 224, ``(p - 127) / 128``):

1. ``quantize_static`` (QDQ, per-channel int8 weights, int8 activations, MinMax) calibrated on
   ``--calib`` images (every 100th of the sorted image list);
2. ``tccc compile`` of the QDQ model, which must take every parameter from it (manifest
   calibration method ``fixed``, no calibration run);
3. end to end on ``--images`` images: tccc's output (the golden integer model, which the
   reference executor matches bit for bit; ``--executor`` runs the executor) vs ONNX Runtime
   (default session options) on the QDQ model: top-1 equal, SQNR of tccc's logits against
   ONNX Runtime's (dB; per image, the minimum is reported), images bit-identical; and, as
   the baseline, the same figures for ONNX Runtime without graph optimizations (the QDQ
   model's float reference semantics) against ONNX Runtime, and tccc against that
   unoptimized run;
4. per layer, isolated, on ``--layer-images`` images: a copy of the QDQ model in which every
   QuantizeLinear output is a graph output and every DequantizeLinear reads a graph input is
   fed tccc's int8 tensors, so each quantized op of ONNX Runtime sees exactly tccc's inputs;
   its int8 outputs are compared with tccc's (elements differing, by how much).

Usage: PYTHONPATH=$PWD python3 tools/bench_qdq.py [--models resnet50 lite0] [--images 1000]
       [--calib 10] [--layer-images 3] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenet-lite0"


def sqnr_db(ref: np.ndarray, got: np.ndarray) -> float:
    """10 log10(sum ref^2 / sum (ref - got)^2), float64; inf when equal."""
    ref = np.asarray(ref, np.float64).reshape(-1)
    err = ref - np.asarray(got, np.float64).reshape(-1)
    e = float(np.sum(err ** 2))
    return float("inf") if e == 0 else float(10 * np.log10(np.sum(ref ** 2) / e))


def lite0_input(path: Path) -> np.ndarray:
    """EfficientNet-Lite0 preprocessing (the data README): RGB, short side 256 bicubic,
    centre crop 224, (p - 127) / 128; float32 NCHW [1, 3, 224, 224]."""
    from PIL import Image

    im = Image.open(path).convert("RGB")
    w, h = im.size
    k = 256 / min(w, h)
    im = im.resize((max(256, round(w * k)), max(256, round(h * k))), Image.BICUBIC)
    w, h = im.size
    left, top = (w - 224) // 2, (h - 224) // 2
    a = np.asarray(im.crop((left, top, left + 224, top + 224)), np.float32)
    return ((a - 127.0) / 128.0).transpose(2, 0, 1)[None].copy()


def imagenet_input(path: Path) -> np.ndarray:
    """tccc's default preprocessing at 224x224 (resize, ImageNet mean/std)."""
    from tcc_compiler.datasets.images import Preprocess, load_inputs

    return load_inputs([str(path)], Preprocess(224, 224), (1, 3, 224, 224))[0]


def float_model(name: str, work: Path) -> tuple[Path, callable]:
    """(float .onnx path, preprocessing function) of a bench model."""
    if name == "lite0":
        return SHARED / "efficientnet_lite0.onnx", lite0_input
    from tcc_compiler import zoo

    path = work / f"{name}.onnx"
    zoo.save(name, path, 224, 224)
    return path, imagenet_input


def quantize_qdq(src: Path, dst: Path, calib: list[np.ndarray]) -> None:
    """ONNX Runtime's quantize_static: QDQ, per-channel, int8/int8, MinMax."""
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)

    name = onnx.load(str(src), load_external_data=False).graph.input[0].name

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{name: x} for x in calib])

        def get_next(self):
            return next(self.it, None)

    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QInt8,
                    weight_type=QuantType.QInt8)


def isolated_model(qdq: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, str]]:
    """The QDQ model cut at every activation QuantizeLinear (see the module doc).

    Returns:
        (model, {int8 tensor: the float tensor its QuantizeLinear quantizes}).
    """
    from onnx import helper

    m = onnx.ModelProto()
    m.CopyFrom(qdq)
    inits = {i.name for i in m.graph.initializer}
    cut = {n.output[0]: n.input[0] for n in m.graph.node
           if n.op_type == "QuantizeLinear" and n.input[0] not in inits}
    types = {}
    for n in m.graph.node:
        if n.op_type == "QuantizeLinear" and n.output[0] in cut:
            zp = next(i for i in m.graph.initializer if i.name == n.input[2])
            types[n.output[0]] = zp.data_type
        if n.op_type == "DequantizeLinear" and n.input[0] in cut:
            n.input[0] = n.input[0] + "__in"
    m.graph.input.extend(helper.make_tensor_value_info(t + "__in", types[t], None)
                         for t in cut)
    del m.graph.output[:]
    m.graph.output.extend(helper.make_tensor_value_info(t, types[t], None) for t in cut)
    return m, cut


def session(model, optimized: bool = True):
    """ONNX Runtime session, CPU: default options (graph optimizations on: QDQ groups run as
    ORT's fused integer kernels), or with ``optimized=False`` none (DequantizeLinear, float op,
    QuantizeLinear as written: the QDQ model's float reference semantics)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if not optimized:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    src = model if isinstance(model, (str, Path)) else model.SerializeToString()
    return ort.InferenceSession(str(src) if isinstance(src, Path) else src, so,
                                providers=["CPUExecutionProvider"])


def _tccc_int8(compiled, cut: dict[str, str], x: np.ndarray) -> dict[str, np.ndarray]:
    """tccc's int8 value (NCHW) of every cut tensor it materialises (golden model)."""
    from tcc_compiler.quant.golden import run_golden
    from tcc_compiler.quant.params import quantize_input

    g = compiled.quantized_graph
    gold = run_golden(g, x, keep=True)
    vals = {v.name: v for v in g.values()}
    out = {}
    for t, src in cut.items():
        v = vals.get(src)
        if v is None or v.dtype != "int8" or (v not in g.inputs and "int:" + src not in gold):
            continue
        hwc = quantize_input(x, v) if v in g.inputs else gold["int:" + src]
        nchw = hwc.transpose(2, 0, 1)[None] if hwc.ndim == 3 else hwc
        out[t] = nchw.reshape(v.shape).astype(np.int8)
    return out


def layer_diffs(compiled, iso, cut: dict[str, str], x: np.ndarray, stats: dict) -> None:
    """Feed tccc's int8 tensors to the isolated ONNX Runtime model; count differences."""
    ours = _tccc_int8(compiled, cut, x)
    feeds = {t + "__in": v for t, v in ours.items()}
    missing = [t for t in cut if t not in ours]
    if missing:  # tensors tccc does not materialise (a view folded into an FC): ORT's own
        feeds.update({t + "__in": v for t, v in zip(missing, _chained(missing, x))})
    feeds[iso.get_inputs()[0].name] = x  # the float input (its QuantizeLinear is compared)
    wanted = [o.name for o in iso.get_outputs() if o.name in ours]
    names = {i.name for i in iso.get_inputs()}
    for t, o in zip(wanted, iso.run(wanted, {k: v for k, v in feeds.items() if k in names})):
        d = np.abs(o.astype(np.int16) - ours[t].astype(np.int16))
        stats["elements"] += d.size
        stats["diff_1"] += int(np.count_nonzero(d == 1))
        stats["diff_gt1"] += int(np.count_nonzero(d > 1))
        if np.any(d):
            stats["layers_with_diffs"].add(cut[t])
    stats["not_compared"] = sorted(set(stats.get("not_compared", [])) | set(missing))


_CHAINED: dict = {}


def _chained(names, x):
    """ONNX Runtime's own int8 values of ``names`` (the uncut QDQ model, end to end)."""
    return _CHAINED["session"].run(names, {_CHAINED["session"].get_inputs()[0].name: x})


def bench(name: str, images: list[Path], n_calib: int, n_layer: int, work: Path,
          use_executor: bool) -> dict:
    """Run the whole comparison for one model; returns the JSON-ready result."""
    from tcc_compiler import api
    from tcc_compiler.quant.golden import run_golden

    src, prep = float_model(name, work)
    calib = [prep(p) for p in images[::max(1, len(images) // n_calib)][:n_calib]]
    qdq_path = work / f"{name}_qdq.onnx"
    t0 = time.perf_counter()
    quantize_qdq(src, qdq_path, calib)
    t1 = time.perf_counter()
    m = api.compile(str(qdq_path), "224x224x3")
    t2 = time.perf_counter()
    cal = m.manifest["calibration"]
    ref = session(qdq_path)
    plain = session(qdq_path, optimized=False)  # ORT against itself: the baseline
    in_name = ref.get_inputs()[0].name
    top1_equal, identical, sq = 0, 0, []
    self_top1, self_sq = 0, []
    ref_top1, ref_sq = 0, []   # tccc vs ORT without optimizations (ONNX's QDQ semantics)
    for k, p in enumerate(images):
        x = prep(p)
        r = ref.run(None, {in_name: x})[0].reshape(-1)
        u = plain.run(None, {in_name: x})[0].reshape(-1)
        self_top1 += int(np.argmax(u) == np.argmax(r))
        self_sq.append(sqnr_db(r, u))
        if use_executor:
            y = np.asarray(m.run(x)).reshape(-1)
        else:
            g = m.quantized_graph
            y = run_golden(g, x)[g.outputs[0].name].reshape(-1)
        top1_equal += int(np.argmax(y) == np.argmax(r))
        identical += int(np.array_equal(y, r))
        sq.append(sqnr_db(r, y))
        ref_top1 += int(np.argmax(y) == np.argmax(u))
        ref_sq.append(sqnr_db(u, y))
        if (k + 1) % 50 == 0:
            print(f"  {name}: {k + 1}/{len(images)} images, top-1 equal {top1_equal}, "
                  f"min SQNR {min(sq):.1f} dB", file=sys.stderr, flush=True)
    qm = onnx.load(str(qdq_path))
    iso_model, cut = isolated_model(qm)
    full = onnx.ModelProto()
    full.CopyFrom(qm)
    full.graph.output.extend(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.INT8, None)
                             for t in cut)
    _CHAINED["session"] = session(full)
    iso = session(iso_model)
    stats = {"elements": 0, "diff_1": 0, "diff_gt1": 0, "layers_with_diffs": set()}
    for p in images[:n_layer]:
        layer_diffs(m, iso, cut, prep(p), stats)
    stats["layers_with_diffs"] = sorted(stats["layers_with_diffs"])
    finite = [s for s in sq if np.isfinite(s)]
    self_finite = [s for s in self_sq if np.isfinite(s)]
    ref_finite = [s for s in ref_sq if np.isfinite(s)]
    return {"model": name, "images": len(images), "calibration": cal,
            "quantize_static_s": round(t1 - t0, 1), "compile_s": round(t2 - t1, 1),
            "top1_equal": top1_equal, "bit_identical_images": identical,
            "sqnr_db_min": min(finite) if finite else None,
            "sqnr_db_median": float(np.median(finite)) if finite else None,
            "ort_unoptimized_vs_ort": {
                "top1_equal": self_top1,
                "sqnr_db_median": float(np.median(self_finite)) if self_finite else None,
                "sqnr_db_min": min(self_finite) if self_finite else None},
            "tccc_vs_ort_unoptimized": {
                "top1_equal": ref_top1,
                "sqnr_db_median": float(np.median(ref_finite)) if ref_finite else None,
                "sqnr_db_min": min(ref_finite) if ref_finite else None},
            "per_layer": stats, "npu_ops": m.report.get("layers") and len(m.report["layers"])}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["resnet50", "lite0"],
                    choices=["resnet50", "resnet18", "lite0"])
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--calib", type=int, default=10)
    ap.add_argument("--layer-images", type=int, default=3)
    ap.add_argument("--executor", action="store_true",
                    help="run the reference executor instead of the golden model (slower)")
    ap.add_argument("--json", help="also write the results here")
    a = ap.parse_args(argv)
    if not SHARED.is_dir():
        print(f"{SHARED}: not found (the shared ImageNet images)", file=sys.stderr)
        return 2
    images = sorted((SHARED / "images").iterdir())[:a.images]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in a.models:
            r = bench(name, images, a.calib, a.layer_images, Path(tmp), a.executor)
            results.append(r)
            pl = r["per_layer"]
            print(f"{name}: calibration {r['calibration']['method']}; top-1 equal "
                  f"{r['top1_equal']}/{r['images']}, bit-identical {r['bit_identical_images']}"
                  f", SQNR min {r['sqnr_db_min']} dB median {r['sqnr_db_median']} dB; per "
                  f"layer: {pl['diff_1']} of {pl['elements']} int8 elements differ by 1, "
                  f"{pl['diff_gt1']} by more, in {len(pl['layers_with_diffs'])} tensors",
                  flush=True)
            b = r["ort_unoptimized_vs_ort"]
            print(f"  baseline, ORT without graph optimizations vs ORT: top-1 equal "
                  f"{b['top1_equal']}/{r['images']}, SQNR min {b['sqnr_db_min']} dB median "
                  f"{b['sqnr_db_median']} dB", flush=True)
            b = r["tccc_vs_ort_unoptimized"]
            print(f"  tccc vs ORT without graph optimizations: top-1 equal "
                  f"{b['top1_equal']}/{r['images']}, SQNR min {b['sqnr_db_min']} dB median "
                  f"{b['sqnr_db_median']} dB", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
