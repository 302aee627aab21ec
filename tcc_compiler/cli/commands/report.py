"""Write a self-contained HTML report of a compiled output folder (tables and charts)."""

from __future__ import annotations

import json

NAME = "report"
HELP = "write an HTML report (per-layer table, latency/DRAM/SRAM charts)"
ORDER = 65


def add_arguments(p) -> None:
    """Arguments of ``tccc report``."""
    p.add_argument("dir", help="compiled output folder")
    p.add_argument("-o", "--output", required=True, help="output .html file")
    p.add_argument("--histograms", nargs="*", metavar="IMAGE", default=None,
                   help="add activation histograms with the clipping ranges, from the golden "
                        "integer model on these images/.npy (none given: 4 bundled photos)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def run(args) -> int:
    """tccc report DIR -o report.html [--histograms [IMAGE ...]] [--json]"""
    from tcc_compiler.fsutil import check_output_file
    from tcc_compiler.report import write_html

    check_output_file(args.output, "-o")  # before the histograms are computed
    hist = None
    if args.histograms is not None:
        from tcc_compiler.cli.main import progress
        from tcc_compiler.datasets.images import (IMAGE_CHANNELS, Preprocess, bundled_photos,
                                                  load_inputs)
        from tcc_compiler.errors import InputError
        from tcc_compiler.report.html import activation_histograms
        from tcc_compiler.runtime import load_program

        prog = load_program(args.dir)
        c = int(prog.input_shape[1])
        if not args.histograms and c not in IMAGE_CHANNELS:
            raise InputError(f"{args.dir}: the model takes {c} channels; the bundled photos "
                             "(used when --histograms names no inputs) load as 1 or 3 channels "
                             "- pass .npy arrays: --histograms a.npy ...")
        paths = args.histograms or bundled_photos("calib")[:4]
        xs = load_inputs(paths, Preprocess.from_dict(prog.manifest["preprocess"]),
                         prog.input_shape)
        wrap = progress(args.quiet, "histograms") or (lambda it: it)
        hist = activation_histograms(args.dir, list(wrap(xs)))
    path = write_html(args.dir, args.output, hist)
    size = path.stat().st_size
    if args.json:
        print(json.dumps({"output": str(path), "bytes": size}))
    else:
        print(f"wrote {path} ({size:,} B)")
    return 0
