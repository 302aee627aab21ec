"""Per-layer INT8 accuracy of a compiled model: each layer's output against the float model,
accumulated (quantized network from the input) and isolated (the layer fed float inputs),
worst layers first, with their source ONNX node names (see tcc_compiler.quant.analyze)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from tcc_compiler.errors import InputError

log = logging.getLogger(__name__)

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


def _warn_if_other_model(model: str, manifest: dict, folder: Path) -> None:
    """Warn when ``model`` is not the ONNX file ``folder`` was compiled from (its sha256
    differs from the manifest's); silent when the folder was compiled from an IR dump."""
    from tcc_compiler.fsutil import file_sha256

    rec = manifest.get("model", {}) if isinstance(manifest, dict) else {}
    want, source = rec.get("sha256"), str(rec.get("source", ""))
    if want and not source.endswith(".tir") and file_sha256(model) != want:
        log.warning("%s differs from the model %s was compiled from (%s, sha256); the errors "
                    "measured mix the two models", model, folder, source or "?")


def run(args) -> int:
    """tccc analyze DIR MODEL.onnx INPUT... [--top N] [--out FILE] [--json]"""
    from tcc_compiler import driver
    from tcc_compiler.cli.main import progress
    from tcc_compiler.datasets.images import Preprocess, load_inputs
    from tcc_compiler.fsutil import check_output_file, write_output_file
    from tcc_compiler.ir.text import load_ir
    from tcc_compiler.quant.analyze import analyze, format_table

    folder = Path(args.dir)
    mpath, ipath = folder / "manifest.json", folder / "quantized.tir"
    for p in (mpath, ipath):
        if not p.is_file():
            raise InputError(f"{p}: missing; is {folder} a tccc compile output folder?")
    if not Path(args.model).is_file():
        raise InputError(f"{args.model}: no such file")
    out = check_output_file(args.out or folder / ANALYSIS_FILE, "--out")  # before the work
    manifest = json.loads(mpath.read_text())
    _warn_if_other_model(args.model, manifest, folder)
    shape = tuple(manifest["input"]["shape"])
    h, w, c = manifest["input"]["npu_hwc"]
    qgraph = load_ir(ipath)
    fgraph = driver.run_float_passes(*driver.import_model(args.model, (w, h, c))).graph
    xs = load_inputs(args.inputs, Preprocess.from_dict(manifest["preprocess"]), shape)
    rows = analyze(fgraph, qgraph, xs, progress=progress(args.quiet, "analyze"))
    doc = {"model": str(args.model), "folder": str(folder), "inputs": len(xs),
           "sorted_by": "isolated sqnr_db, ascending",
           "layers": [r.to_dict() for r in rows]}
    write_output_file(out, json.dumps(doc, indent=2) + "\n", "--out")
    if args.json:
        print(json.dumps(doc))
    else:
        print(format_table(rows, args.top))
        print(f"({len(rows)} layers, {len(xs)} inputs; written to {out})")
    return 0
