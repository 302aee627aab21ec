"""Compile an ONNX model into npu_cmd.bin + quantized_network.bin (+ manifest, report, IR)."""

from __future__ import annotations

import json

NAME = "compile"
HELP = "compile an ONNX model to NPU binaries"
ORDER = 20


def add_arguments(p) -> None:
    """Arguments of ``tccc compile``."""
    p.add_argument("model", help="the .onnx model")
    p.add_argument("--input", default=None,
                   help="input size W x H x C, e.g. 640x320x3 (width 640, height 320)")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--calib", nargs="+", default=None,
                   help="calibration images, folders or .npy arrays (default: bundled photos)")
    p.add_argument("--calib-method", default="mse",
                   help="mse (default: range minimising quantization MSE) | minmax | percentile")
    p.add_argument("--target", default=None, help="target name or .toml file (default tcc750x)")
    p.add_argument("--verify", action="store_true", help="verify the IR after every pass")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def run(args) -> int:
    """tccc compile MODEL --input WxHxC -o DIR [--calib ...] [--calib-method M] [--target T]"""
    from tcc_compiler import api

    m = api.compile(args.model, args.input, calibration=args.calib, method=args.calib_method,
                    target=args.target, verify=args.verify)
    m.save(args.output)
    r = m.report
    if args.json:
        print(json.dumps({k: r[k] for k in ("command_bytes", "weight_bytes", "macs",
                                            "estimated_cycles", "estimated_latency_ms",
                                            "sram_bytes", "npu_ops")}))
    else:
        ops = ", ".join(f"{v} {k}" for k, v in sorted(r["npu_ops"].items()))
        print(f"wrote {args.output}/: npu_cmd.bin {r['command_bytes']:,} B, "
              f"quantized_network.bin {r['weight_bytes']:,} B; NPU ops: {ops}; "
              f"{r['macs'] / 1e9:.2f} GMAC, estimated {r['estimated_latency_ms']:.2f} ms "
              f"on {r['target']}")
    return 0
