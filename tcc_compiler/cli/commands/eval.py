"""Top-1 / top-5 of a compiled model on a labelled dataset, the float model side by side.

Datasets: class sub-folders, one per model class (label = sorted folder position; a warning when
their count differs), or --labels FILE with 'file,...,label' (CSV) or 'file label' lines. Images
use the compiled preprocessing; raw uint8 arrays (.bin/.raw/.rgb, --raw-size WxHxC, --raw-layout
HWC|CHW) are not resized. Pixel values: (pixel * scale - mean) / std, from the manifest unless
--pixels raw (0..255) or --scale/--mean/--std override them. Example (CIFAR-10 ResNet-8, 0..255
inputs): tccc eval OUT --images DATA/images --labels DATA/labels.csv --raw-size 32x32x3 --pixels
raw --check DATA/resnet8.onnx. Ctrl-C stops early and reports the samples done (exit code 130).
"""

from __future__ import annotations

import sys

from tcc_compiler.emit.jsonfmt import json_text

NAME = "eval"
HELP = "accuracy (top-1/top-5) of a compiled model on a labelled dataset"
ORDER = 35


def add_arguments(p) -> None:
    """Arguments of ``tccc eval``."""
    p.add_argument("dir", help="compiled output folder")
    p.add_argument("--images", required=True,
                   help="dataset folder: class sub-folders, or files listed by --labels")
    p.add_argument("--labels", default=None,
                   help="labels file: 'file,...,label' (CSV) or 'file label' per line")
    p.add_argument("--check", metavar="MODEL.onnx",
                   help="also run the float model (ONNX Runtime) and count top-1 flips")
    from tcc_compiler.cli.main import positive_int

    p.add_argument("--limit", type=positive_int, default=None,
                   help="evaluate the first N samples")
    p.add_argument("--jobs", type=positive_int, default=1,
                   help="worker processes (default 1; at most one per sample and per CPU); "
                        "with --ray, the most Ray actors")
    p.add_argument("--ray", metavar="auto|ADDRESS", default=None,
                   help="run the samples on a Ray cluster (pip install 'tccc[ray]'): 'auto' "
                        "= the running cluster or a new local one, else its address; same "
                        "results as a local run; sample paths must be readable on every node")
    from tcc_compiler.cli.raw_options import add_raw_arguments

    add_raw_arguments(p, "sample files", force=True, pixels=True)
    p.add_argument("--scale", type=float, default=None, help="override pixel scale")
    p.add_argument("--mean", type=float, nargs="+", default=None, metavar="M",
                   help="override mean (1 value or one per channel, as compile's --mean)")
    p.add_argument("--std", type=float, nargs="+", default=None, metavar="S",
                   help="override std (1 value or one per channel, as compile's --std)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def run(args) -> int:
    """tccc eval DIR --images FOLDER [--labels FILE] [--check MODEL] [--limit N] [--json]"""
    from tcc_compiler.api import folders
    from tcc_compiler.cli.raw_options import raw_options

    raw_size, raw_layout = raw_options(args)
    res = folders.evaluate_folder(
        args.dir, args.images, args.labels, check=args.check, limit=args.limit,
        jobs=args.jobs, raw_size=raw_size, raw_layout=raw_layout, raw=args.raw,
        pixels=args.pixels, scale=args.scale, mean=args.mean, std=args.std,
        progress=not (args.no_progress or args.quiet) and sys.stderr.isatty(), ray=args.ray)
    if args.json:
        print(json_text(res))
    else:
        n, q = res["samples"], res["npu"]
        part = f" (interrupted, {n} of {res['total']})" if res["interrupted"] else ""
        print(f"samples: {n}{part}")
        if n == 0:  # interrupted before the first sample: there is no accuracy to print
            print("no sample finished: no accuracy")
            return 130 if res["interrupted"] else 0
        print(f"npu (int8):   top1 {_pct(q['top1'])} ({q['top1_correct']}/{n})  "
              f"top5 {_pct(q['top5'])} ({q['top5_correct']}/{n})")
        if "float" in res:
            f = res["float"]
            print(f"float (ORT):  top1 {_pct(f['top1'])} ({f['top1_correct']}/{n})  "
                  f"top5 {_pct(f['top5'])} ({f['top5_correct']}/{n})")
            print(f"flips (top-1 differs): {res['flips']}")
    return 130 if res["interrupted"] else 0
