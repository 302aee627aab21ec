"""Per-layer INT8 accuracy of a compiled model: each layer's output against the float model,
accumulated (quantized network from the input) and isolated (the layer fed float inputs),
worst layers first, with their source ONNX node names (see tcc_compiler.quant.analyze)."""

from __future__ import annotations

from pathlib import Path

from tcc_compiler.emit.jsonfmt import json_text

NAME = "analyze"
HELP = "per-layer quantization error of a compiled model against the float ONNX model"
ORDER = 35
ANALYSIS_FILE = "analysis.json"


def add_arguments(p) -> None:
    """Arguments of ``tccc analyze``."""
    p.add_argument("dir", help="compiled output folder (holds quantized.tir and manifest.json)")
    p.add_argument("model", help="the float .onnx model the folder was compiled from")
    p.add_argument("inputs", nargs="+", help="images, .npy arrays or folders of them")
    from tcc_compiler.cli.main import positive_int

    p.add_argument("--top", type=positive_int, default=None, metavar="N",
                   help="print only the N worst layers (N >= 1; default: all). The JSON "
                        "(--out, --json) always holds every layer")
    p.add_argument("--out", default=None,
                   help=f"JSON file to write (default DIR/{ANALYSIS_FILE})")
    p.add_argument("--json", action="store_true", help="print the JSON instead of a table")


def run(args) -> int:
    """tccc analyze DIR MODEL.onnx INPUT... [--top N] [--out FILE] [--json]"""
    from tcc_compiler.api import folders
    from tcc_compiler.cli.main import progress
    from tcc_compiler.fsutil import check_output_file, write_output_file
    from tcc_compiler.quant.analyze import format_table

    folder = Path(args.dir)
    folders.check_analysis_inputs(folder, args.model)
    out = check_output_file(args.out or folder / ANALYSIS_FILE, "--out", reads=folder,
                            own=(ANALYSIS_FILE,), inputs=(args.model,))  # before the work
    rows, n_inputs = folders.analyze_folder(folder, args.model, args.inputs,
                                            progress(args.quiet, "analyze"))
    doc = {"model": str(args.model), "folder": str(folder), "inputs": n_inputs,
           "sorted_by": "isolated sqnr_db, ascending",
           "layers": [r.to_dict() for r in rows]}
    write_output_file(out, json_text(doc, indent=2) + "\n", "--out")
    if args.json:
        print(json_text(doc))
    else:
        print(format_table(rows, args.top))
        print(f"({len(rows)} layers, {n_inputs} inputs; written to {out})")
    return 0
