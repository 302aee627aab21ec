#!/usr/bin/env python3
"""Benchmark tccc against ONNX Runtime, side by side in one process.

For each model (default: every row of :data:`VENDOR` whose model ``tcc_compiler.zoo`` builds:
ResNet-50 at 224x224, 640x320, 960x520, ResNet-50-v2 at 224x224, ResNet-18 at 640x320,
960x520, MobileNetV2 and EfficientNet-Lite0 at 224x224, EfficientNetV2-S at the vendor's three
sizes, SSDLite-MobileNetV2 at 300x300, YOLOv5n and YOLOv8n at 640x640, RegNetX-400MF and
MobileOne-S1 at 640x320 and 960x520, ConvMixer-768/32 at 224x224, LeNet-5 at 32x32x1 (its
calibration photos turn greyscale); a name the zoo does not
have is skipped with a note on stderr, a model tccc refuses gets a "not compiled" line)
prints: compile time (s, calibration on
``--calib`` bundled photos included), peak resident memory (MiB), command and weight binary
sizes next to the vendor's published figures, estimated NPU latency (ms, from the documented
cycle model of specs/target.md, NOT a measurement of the chip) with its ratio to the roofline
bound and to the SRAM-capacity bound (weights beyond the SRAM cannot be prefetched, nor held
beside the activations live across a layer boundary; see specs/target.md), and DRAM traffic over
the minimal traffic. Then the latency ratios between resolutions next to the vendor's. With
``--run`` it also times the reference executor and ONNX Runtime (float) per image. With
``--cores 2`` each model compiles for both NPU cores (specs/target.md "Two cores") and its line
adds the one-core and two-core estimated latency, the stream throughput (the replay of the
emitted stream program npu_cmd_stream.bin, or of the latency program when that is faster), the
speed-ups and the two-core bound (roofline compute halved, minimal DRAM traffic over the shared
link).

``--speed`` instead runs ``tools/bench_speed.py`` (compile time next to ONNX Runtime's
``quantize_static``, compile without calibration, executor / ``run --check`` / ONNX Runtime
FP32 per image, each in a process of its own; arguments after ``--speed`` go to it).

Usage: python tools/bench.py [--models resnet50:224x224x3 resnet18:640x320x3 ...] [--run]
       [--images N] [--calib N] [--json FILE] [--cores 1|2]
       python tools/bench.py --speed [--models resnet50:224x224x3 FILE.onnx:224x224x3 ...]
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

from tcc_compiler.errors import TccError

#: The vendor's published TCC750x model zoo (tcc750x_model_zoo.csv, release 2025 Q2, measured on
#: silicon): (model, WxHxC) -> (command KB, weight MB, latency ms).
VENDOR = {
    ("resnet50", "224x224x3"): (30, 25.1, 9.09),
    ("resnet50", "640x320x3"): (87, 25.1, 29.95),
    ("resnet50", "960x520x3"): (273, 25.1, 77.52),
    ("resnet18", "640x320x3"): (23, 11.25, 15.34),
    ("resnet18", "960x520x3"): (64, 11.25, 36.01),
    ("resnet50-v2", "224x224x3"): (32, 25.3, 9.84),
    ("mobilenet-v2", "224x224x3"): (41, 3.47, 1.24),        # MobileNet-v2 1.0, MXNet
    ("efficientnet-lite0", "224x224x3"): (22, 4.67, 1.26),  # EfficientNet Lite0, PyTorch
    ("efficientnet-v2-s", "224x224x3"): (364, 21.54, 11.15),
    ("efficientnet-v2-s", "640x320x3"): (445, 21.04, 39.25),
    ("efficientnet-v2-s", "960x520x3"): (753, 21.04, 74.96),
    ("ssdlite-mobilenet-v2", "300x300x3"): (54, 4.04, 2.0),  # SSDlite mb2, ONNX, VOC
    ("yolov5n", "640x640x3"): (78, 1.86, 8.97),
    ("yolov8n", "640x640x3"): (70, 3.15, 8.09),
    ("regnetx-400mf", "640x320x3"): (32, 23.37, 7.17),     # RegNetX 400mf, PyTorch
    ("regnetx-400mf", "960x520x3"): (47, 23.37, 15.95),
    ("mobileone-s1", "640x320x3"): (134, 4.61, 4.7),       # MobileOne s1, PyTorch
    ("mobileone-s1", "960x520x3"): (134, 4.61, 13.04),
    ("convmixer-768-32", "224x224x3"): (966, 21, 133.05),  # ConvMixer 768-32, PyTorch
    ("lenet5", "32x32x1"): (2, 0.05, 0.05),                # LeNet5, PyTorch, MNIST
}


def available(items: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The (zoo name, WxHxC) items whose model ``tcc_compiler.zoo`` builds; a note on stderr
    for each one it does not (e.g. before the zoo gains that builder)."""
    from tcc_compiler import zoo

    out = []
    for name, whc in items:
        if name in zoo.NAMES:
            out.append((name, whc))
        else:
            print(f"note: skipping {name} {whc}: tcc_compiler.zoo has no model {name!r}",
                  file=sys.stderr)
    return out


#: (numerator, denominator, vendor latency ratio) checked against the estimates.
RATIOS = [(("resnet50", "640x320x3"), ("resnet50", "224x224x3")),
          (("resnet50", "960x520x3"), ("resnet50", "224x224x3")),
          (("resnet18", "960x520x3"), ("resnet18", "640x320x3"))]


#: Issue 17's two-core targets (speed-up over one core): (model, WxHxC) -> {"latency": x,
#: "stream": x}; each is printed beside the model's two-core bound.
CORE_TARGETS = {
    ("resnet50", "224x224x3"): {"latency": 1.6, "stream": 1.8},
    ("yolov8n", "640x640x3"): {"latency": 1.6},
    ("mobilenet-v2", "224x224x3"): {"stream": 1.5},
}


def _core_rows(r: dict) -> list[dict] | None:
    """The ``cores`` objects of report ``r`` (one per NPU segment of a segmented report);
    None when any is missing or has no estimates (a one-core compile)."""
    rows = ([s["cores"] for s in r["segments"] if s["device"] == "npu"]
            if r.get("layout") == "segmented" else [r.get("cores")])
    if not rows or any(c is None or not c.get("estimates") for c in rows):
        return None
    return rows


def cores_figures(r: dict, clock_hz: int = 1_000_000_000) -> dict | None:
    """The two-core figures of a ``--cores 2`` report (summed over the NPU segments of a
    segmented one): one-core and two-core latency (ms), the two-core stream period (ms per
    image), their speed-ups over one core, which program was kept, per-core utilisation and
    the model's two-core bounds (:func:`tcc_compiler.schedule.coretime.two_core_bounds`:
    latency, and stream per image with one weight read per image and per ``batch`` images)
    as ms and as the speed-up over one core they allow; None for a one-core compile."""
    rows = _core_rows(r)
    if rows is None:
        return None
    one = sum(c["estimates"]["single_core_cycles"] for c in rows)
    two = sum(c["latency_cycles"] for c in rows)
    split = sum(c["estimates"]["spatial_latency_cycles"] or one for c in rows)
    stream = sum(c["stream_period_cycles"] for c in rows)
    bounds = [c.get("two_core_bounds") or {} for c in rows]

    def bound(key):
        cyc = sum(b.get(key, 0) for b in bounds)
        return round(cyc / clock_hz * 1e3, 3), (round(one / cyc, 3) if cyc else None)
    return {"one_core_ms": round(one / clock_hz * 1e3, 3),
            "two_core_ms": round(two / clock_hz * 1e3, 3),
            "spatial_split_ms": round(split / clock_hz * 1e3, 3),
            "stream_ms_per_image": round(stream / clock_hz * 1e3, 3),
            "latency_speedup": round(one / two, 3), "stream_speedup": round(one / stream, 3),
            "two_core_bound_ms": bound("latency_cycles")[0],
            "bound_speedup": bound("latency_cycles")[1],
            "stream_bound_ms": bound("batched_stream_cycles_per_image")[0],
            "stream_bound_speedup": bound("batched_stream_cycles_per_image")[1],
            "bound_batch": max((b.get("batch", 0) for b in bounds), default=0),
            "bound_by": [b.get("bound_by") for b in bounds],
            "kept": [c["kept"] for c in rows],
            "stream_schedule": [c["stream_schedule"] for c in rows],
            "utilisation": [[p["utilisation"] for p in c["per_core"]] for c in rows]}


def target_lines(r: dict) -> list[str]:
    """Issue 17's targets of model ``r`` (:data:`CORE_TARGETS`), each beside the reached
    speed-up and the model's bound; a target above the bound says so with the numbers."""
    c, goals = r.get("cores"), CORE_TARGETS.get((r["model"], r["input"]), {})
    if not c:
        return []
    out = []
    for kind, goal in goals.items():
        got = c["latency_speedup"] if kind == "latency" else c["stream_speedup"]
        if kind == "latency":
            bx, bms, how = c["bound_speedup"], c["two_core_bound_ms"], (
                f"bound {c['two_core_bound_ms']:.2f} ms, limited by {', '.join(c['bound_by'])}")
        else:   # a stream may share a weight read between images
            bx, bms, how = c["stream_bound_speedup"], c["stream_bound_ms"], (
                f"bound {c['stream_bound_ms']:.2f} ms/image with one weight read per "
                f"{c['bound_batch']} images; x{c['bound_speedup'] or 0:.2f} "
                f"({c['two_core_bound_ms']:.2f} ms) reading them once per image")
        verdict = ("met" if got >= goal else "not met") + (
            f"; the target is ABOVE the model's bound x{bx:.2f} ({bms:.2f} ms vs "
            f"{c['one_core_ms'] / goal:.2f} ms needed): no schedule on the modelled chip "
            f"reaches it" if bx is not None and bx < goal else "")
        out.append(f"  target {r['model']} {r['input']} {kind} x{goal}: reached "
                   f"x{got:.2f}, bound x{bx or 0:.2f} ({how}): {verdict}")
    return out


def bench_one(name: str, whc: str, n_images: int, workdir: Path, n_calib: int = 2,
              run: bool = False, compress_weights: bool | None = None,
              cores: int = 1) -> dict:
    """Compile (and with ``run`` execute) one zoo model; return the measured figures
    (``compress_weights``: see :class:`tcc_compiler.options.CompileOptions`; None = its
    default)."""
    import onnxruntime as ort

    from tcc_compiler import api, zoo
    from tcc_compiler.datasets.images import Preprocess, bundled_photos, load_inputs
    from tcc_compiler.frontend import parse_input_spec
    from tcc_compiler.runtime import load_program

    w, h, c = parse_input_spec(whc)
    model_path = workdir / f"{name}-{whc}.onnx"
    zoo.save(name, model_path, width=w, height=h, channels=c)
    calib = bundled_photos("calib")[:n_calib]
    t0 = time.perf_counter()
    opts = {} if compress_weights is None else {"compress_weights": compress_weights}
    if cores != 1:
        opts["cores"] = cores
    m = api.compile(model_path, whc, calibration=calib, **opts)
    compile_s = time.perf_counter() - t0
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = workdir / f"out-{name}-{whc}"
    m.save(out)
    r = m.report
    vendor = VENDOR.get((name, whc))
    vendor = None if vendor is None else {
        "command_kb": vendor[0], "weight_mb": vendor[1], "latency_ms": vendor[2]}
    if r.get("layout") == "segmented":   # NPU and host segments: no single roofline
        return {"model": name, "input": whc, "segmented": True, "vendor": vendor,
                "cores": cores_figures(r),
                "compile_s": round(compile_s, 2), "peak_rss_mib": round(peak_mib, 1),
                "command_bytes": r["command_bytes"], "weight_bytes": r["weight_bytes"],
                "estimated_latency_ms": round(r["estimated_latency_ms"], 3),
                "estimated_host_ms": r["estimated_host_ms"],
                "estimated_boundary_ms": r["estimated_boundary_ms"],
                "boundary_bytes": r["boundary_bytes"], "placement": r["placement"]}
    roof = r["roofline"]["cycles"]
    res = {
        "model": name, "input": whc, "compile_s": round(compile_s, 2),
        "schedule_emit_s": round(r["compile_seconds"].get("schedule_emit_s", 0.0), 2),
        "peak_rss_mib": round(peak_mib, 1), "command_bytes": r["command_bytes"],
        "weight_bytes": r["weight_bytes"], "npu_ops": r["npu_ops"],
        "weight_ratio": r.get("weight_compression", {}).get("ratio", 1.0),
        "estimated_latency_ms": round(r["estimated_latency_ms"], 3),
        "roofline_ms": round(r["roofline"]["latency_ms"], 3),
        "over_roofline": round(r["estimated_cycles"] / roof, 3) if roof else None,
        "capacity_bound_ms": round(r["capacity_bound"]["latency_ms"], 3),
        "over_capacity_bound": round(r["estimated_cycles"] / r["capacity_bound"]["cycles"], 3)
        if r["capacity_bound"]["cycles"] else None,
        # the same bound with the cycle model's compute floor per layer (specs/target.md)
        "floor_bound_ms": round(r["capacity_bound"].get("floor_latency_ms", 0.0), 3),
        "over_floor_bound": round(r["estimated_cycles"] / r["capacity_bound"]["floor_cycles"], 3)
        if r["capacity_bound"].get("floor_cycles") else None,
        "dram_over_minimal": round((r["dram_read_bytes"] + r["dram_write_bytes"])
                                   / r["minimal_dram_bytes"], 3),
        "mac_utilisation": r["mac_utilisation"],
        # ops run in cascaded chains (schedule/cascade.py): their "tiling" starts "cascade"
        "cascaded_ops": sum(li["tiling"].startswith("cascade") for li in r["layers"]),
    }
    res["vendor"] = vendor
    res["cores"] = cores_figures(r)
    if not run:
        return res
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
    sim_ms, ort_ms = 1e3 * float(np.median(sim_t)), 1e3 * float(np.median(ort_t))
    res.update({"sim_ms_per_image": round(sim_ms, 1), "ort_fp32_ms_per_image": round(ort_ms, 1),
                "sim_over_ort": round(sim_ms / ort_ms, 2)})
    return res


def format_cores(c: dict | None) -> str:
    """The two-core part of a line ("" for a one-core compile)."""
    if not c:
        return ""
    return (f"; 2 cores: latency {c['two_core_ms']:.2f} ms vs {c['one_core_ms']:.2f} ms on one "
            f"(x{c['latency_speedup']:.2f}; spatial split {c['spatial_split_ms']:.2f} ms; kept "
            f"{', '.join(c['kept'])}), stream {c['stream_ms_per_image']:.2f} ms/image "
            f"(x{c['stream_speedup']:.2f} throughput; {'; '.join(c['stream_schedule'])}); "
            f"2-core bound {c['two_core_bound_ms']:.2f} ms (x{c['bound_speedup'] or 0:.2f} for "
            f"latency and one-image-per-core streams; {', '.join(c['bound_by'])}), "
            f"{c['stream_bound_ms']:.2f} ms/image (x{c['stream_bound_speedup'] or 0:.2f}) for "
            f"streams reading the weights once per {c['bound_batch']} images")


def format_result(r: dict) -> str:
    """One model's figures as a line, each next to the vendor's where published."""
    v = r["vendor"] or {}

    def vs(key):
        return f" (vendor {v[key]})" if key in v else ""
    if r.get("segmented"):
        p = r["placement"]
        return (f"{r['model']} {r['input']}: {p['npu_segments']} NPU + {p['host_segments']} "
                f"host segment(s) ({p['npu_nodes']} / {p['host_nodes']} nodes); npu_cmd.bin "
                f"{r['command_bytes'] / 1000:.1f} KB{vs('command_kb')}, quantized_network.bin "
                f"{r['weight_bytes'] / 1e6:.2f} MB{vs('weight_mb')}, est. NPU latency "
                f"{r['estimated_latency_ms']:.2f} ms{vs('latency_ms')} + host "
                f"{r['estimated_host_ms']:.2f} ms + boundaries {r['estimated_boundary_ms']:.2f}"
                f" ms ({r['boundary_bytes'] / 1e6:.1f} MB converted; host figures from the "
                f"target's [host] assumptions); compile {r['compile_s']} s"
                + format_cores(r.get("cores")))
    line = (f"{r['model']} {r['input']}: npu_cmd.bin {r['command_bytes'] / 1000:.1f} KB"
            f"{vs('command_kb')}, quantized_network.bin {r['weight_bytes'] / 1e6:.2f} MB"
            f"{vs('weight_mb')} (compression ratio {r.get('weight_ratio', 1.0):.3f}), "
            f"est. latency {r['estimated_latency_ms']:.2f} ms"
            f"{vs('latency_ms')} = {r['over_roofline']}x roofline {r['roofline_ms']:.2f} ms, "
            f"{r['over_capacity_bound']}x capacity bound {r['capacity_bound_ms']:.2f} ms "
            f"({r['over_floor_bound']}x its compute-floor form {r['floor_bound_ms']:.2f} ms), "
            f"DRAM traffic {r['dram_over_minimal']}x minimal ({r['cascaded_ops']} ops "
            f"cascaded), MAC util "
            f"{r['mac_utilisation']:.2f}; compile {r['compile_s']} s (schedule+emit "
            f"{r['schedule_emit_s']} s), peak RSS {r['peak_rss_mib']} MiB")
    line += format_cores(r.get("cores"))
    if "sim_ms_per_image" in r:
        line += (f"; simulator {r['sim_ms_per_image']} ms/img vs ONNX Runtime FP32 "
                 f"{r['ort_fp32_ms_per_image']} ms/img (ratio {r['sim_over_ort']})")
    return line


def ratio_lines(results: list[dict]) -> list[str]:
    """Estimated latency ratios between resolutions next to the vendor's (15% band)."""
    est = {(r["model"], r["input"]): r["estimated_latency_ms"] for r in results}
    out = []
    for num, den in RATIOS:
        if num in est and den in est:
            ours, theirs = est[num] / est[den], VENDOR[num][2] / VENDOR[den][2]
            dev = ours / theirs - 1
            out.append(f"ratio {num[0]} {num[1]} / {den[1]}: ours {ours:.2f}, vendor "
                       f"{theirs:.2f} ({dev:+.0%}, {'within' if abs(dev) <= 0.15 else 'outside'}"
                       " the 15% band)")
    return out


def main(argv=None) -> int:
    """Run the benchmark and print one line per model (and JSON with --json)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--speed":
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import bench_speed

        return bench_speed.main(argv[1:])
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+",
                   default=None,
                   help="NAME:WxHxC items (zoo names); default: every vendor row the zoo "
                        "builds")
    p.add_argument("--run", action="store_true",
                   help="also time the reference executor and ONNX Runtime per image")
    p.add_argument("--images", type=int, default=4, help="images timed per model (--run)")
    p.add_argument("--calib", type=int, default=2, help="bundled calibration photos")
    p.add_argument("--json", help="also write the results to this file")
    p.add_argument("--no-compress-weights", action="store_true",
                   help="store weights raw (to compare with the default compression)")
    p.add_argument("--cores", type=int, choices=(1, 2), default=1,
                   help="NPU cores to compile for (2: adds one- vs two-core latency and "
                        "stream throughput to each line)")
    args = p.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="tccc-bench-") as tmp:
        items = ([tuple(item.split(":")) for item in args.models] if args.models
                 else list(VENDOR))
        for name, whc in available(items):
            try:
                r = bench_one(name, whc, args.images, Path(tmp), args.calib, args.run,
                              compress_weights=not args.no_compress_weights,
                              cores=args.cores)
            except TccError as exc:   # a row tccc cannot compile yet: say so, go on
                print(f"{name} {whc}: not compiled: {exc}")
                sys.stdout.flush()
                continue
            results.append(r)
            print(format_result(r))
            for line in target_lines(r):
                print(line)
            sys.stdout.flush()
    print("Estimates come from tccc's documented model of the chip (specs/target.md); the "
          "vendor's are measured.")
    if args.run:
        print("Executor vs ONNX Runtime times are meaningful only on an idle machine; "
              "tools/bench.py --speed times each in a process of its own.")
    for line in ratio_lines(results):
        print(line)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
