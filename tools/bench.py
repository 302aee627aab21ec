#!/usr/bin/env python3
"""Benchmark tccc against ONNX Runtime, side by side in one process.

For each model (default: ResNet-50 at 224x224x3 from the zoo) prints: compile time (s,
including calibration on 8 bundled photos), peak resident memory after compiling (MiB),
command and weight binary sizes (bytes, with the vendor's published figures where known),
estimated NPU latency (ms, from the documented cycle model), reference-executor time per
image (ms), ONNX Runtime float time per image (ms) and their ratio.

Usage: python tools/bench.py [--models resnet50:224x224x3 resnet18:640x320x3 ...] [--images N]
       [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

VENDOR = {  # the vendor's published table: (command KB, weight MB, latency ms)
    ("resnet50", "224x224x3"): (30, 25.1, 9.09),
    ("resnet50", "640x320x3"): (87, 25.1, 29.95),
    ("resnet50", "960x520x3"): (273, 25.1, 77.52),
    ("resnet18", "640x320x3"): (23, 11.25, 15.34),
    ("resnet18", "960x520x3"): (64, 11.25, 36.01),
}


def bench_one(name: str, whc: str, n_images: int, workdir: Path) -> dict:
    """Compile and run one zoo model; return the measured figures."""
    import onnxruntime as ort

    from tcc_compiler import api, zoo
    from tcc_compiler.datasets.images import Preprocess, bundled_photos, load_inputs
    from tcc_compiler.frontend import parse_input_spec
    from tcc_compiler.runtime import load_program

    w, h, c = parse_input_spec(whc)
    model_path = workdir / f"{name}-{whc}.onnx"
    zoo.save(name, model_path, width=w, height=h, channels=c)
    calib = bundled_photos("calib")[:8]
    t0 = time.perf_counter()
    m = api.compile(model_path, whc, calibration=calib)
    compile_s = time.perf_counter() - t0
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = workdir / f"out-{name}-{whc}"
    m.save(out)
    prog = load_program(out)
    xs = load_inputs(bundled_photos("eval")[:n_images], Preprocess(width=w, height=h),
                     (1, c, h, w))
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(model_path), so, providers=["CPUExecutionProvider"])
    iname = sess.get_inputs()[0].name
    sess.run(None, {iname: xs[0]})  # warm-up
    prog.run(xs[0])
    sim_t, ort_t = [], []
    for x in xs:
        t0 = time.perf_counter()
        prog.run(x)
        sim_t.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        sess.run(None, {iname: x})
        ort_t.append(time.perf_counter() - t0)
    r = m.report
    sim_ms, ort_ms = 1e3 * float(np.median(sim_t)), 1e3 * float(np.median(ort_t))
    vendor = VENDOR.get((name, whc))
    return {
        "model": name, "input": whc, "compile_s": round(compile_s, 2),
        "peak_rss_mib": round(peak_mib, 1), "command_bytes": r["command_bytes"],
        "weight_bytes": r["weight_bytes"], "npu_ops": r["npu_ops"],
        "estimated_latency_ms": round(r["estimated_latency_ms"], 3),
        "sim_ms_per_image": round(sim_ms, 1), "ort_fp32_ms_per_image": round(ort_ms, 1),
        "sim_over_ort": round(sim_ms / ort_ms, 2),
        "vendor": None if vendor is None else {"command_kb": vendor[0], "weight_mb": vendor[1],
                                               "latency_ms": vendor[2]},
    }


def main(argv=None) -> int:
    """Run the benchmark and print one line per model (and JSON with --json)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["resnet50:224x224x3"],
                   help="NAME:WxHxC items (zoo names)")
    p.add_argument("--images", type=int, default=4, help="images timed per model")
    p.add_argument("--json", help="also write the results to this file")
    args = p.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="tccc-bench-") as tmp:
        for item in args.models:
            name, whc = item.split(":")
            r = bench_one(name, whc, args.images, Path(tmp))
            results.append(r)
            v = r["vendor"]
            vtxt = (f" (vendor {v['command_kb']} KB / {v['weight_mb']} MB / "
                    f"{v['latency_ms']} ms)" if v else "")
            print(f"{name} {whc}: compile {r['compile_s']} s (8 calib images), peak RSS "
                  f"{r['peak_rss_mib']} MiB, npu_cmd.bin {r['command_bytes']:,} B, "
                  f"quantized_network.bin {r['weight_bytes']:,} B, est. "
                  f"{r['estimated_latency_ms']} ms{vtxt}; simulator {r['sim_ms_per_image']} "
                  f"ms/img vs ONNX Runtime FP32 {r['ort_fp32_ms_per_image']} ms/img "
                  f"(ratio {r['sim_over_ort']})")
            sys.stdout.flush()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
