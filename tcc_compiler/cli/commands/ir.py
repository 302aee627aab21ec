"""Read, check and print the textual IR.

    tccc ir verify FILE.tir [FILE.tir ...] [--json]  parse + run the IR verifier; exit 2 on a
                                                     problem
    tccc ir print MODEL.onnx|FILE.tir [--input WxHxC] [--after PASS | --before PASS] [--json]

``print`` writes the IR (the text ``specs/ir.lark`` parses) to stdout: after import by default,
or before/after a named stage (import, the float passes, quantize). With ``--json`` both print
one JSON object instead (``verify``: ``{"files": [{"file", "ok", "nodes", "stage"}]}``;
``print``: ``{"model", "stage", "when", "ir"}`` with ``ir`` the same text).
"""

from __future__ import annotations

import io
import json
import logging
import sys

NAME = "ir"
HELP = "verify or print the textual IR (.tir)"
ORDER = 50

log = logging.getLogger(__name__)


def add_arguments(p) -> None:
    """Arguments of ``tccc ir verify`` and ``tccc ir print``."""
    sub = p.add_subparsers(dest="ir_command", required=True)
    v = sub.add_parser("verify", help="parse .tir files and run the IR verifier")
    v.add_argument("files", nargs="+", help=".tir files (their .npz sidecars are read too)")
    v.add_argument("--json", action="store_true", help="print one JSON object")
    pr = sub.add_parser("print", help="print the IR of a model after a pass")
    pr.add_argument("model", help=".onnx model or .tir file")
    pr.add_argument("--input", default=None, help="input size W x H x C (ONNX models)")
    when = pr.add_mutually_exclusive_group()
    when.add_argument("--after", metavar="PASS", default=None,
                      help="print after this stage (import, a pass name, quantize; default: "
                           "after import, or the file as loaded)")
    when.add_argument("--before", metavar="PASS", default=None, help="print before this stage")
    pr.add_argument("--calib", nargs="+", default=None,
                    help="calibration inputs for --after quantize (default: bundled photos)")
    pr.add_argument("--inline-limit", type=int, default=16,
                    help="constants with more elements print as @references (default 16)")
    pr.add_argument("--json", action="store_true",
                    help='print {"model", "stage", "when", "ir": text} as one JSON object')


def run(args) -> int:
    """Dispatch ``tccc ir verify`` / ``tccc ir print``."""
    if args.ir_command == "verify":
        return _verify(args)
    if not args.json:
        return _print(args, sys.stdout)
    buf = io.StringIO()
    rc = _print(args, buf)
    stage = args.after or args.before
    print(json.dumps({"model": str(args.model), "stage": stage,
                      "when": "before" if args.before else "after", "ir": buf.getvalue()}))
    return rc


def _verify(args) -> int:
    from tcc_compiler.errors import InputError
    from tcc_compiler.ir.text import load_ir
    from tcc_compiler.ir.verify import VerifyError, verify
    from tcc_compiler.passes.instruments import AFTER_PASS_META

    results = []
    for path in args.files:
        g = load_ir(path)
        quantized = bool(g.meta.get("quantized", False))
        try:
            verify(g, quantized=quantized)
        except VerifyError as exc:
            raise InputError(f"{path}: {exc}") from None
        stage = g.meta.get(AFTER_PASS_META, "quantized" if quantized else "float")
        results.append({"file": str(path), "ok": True, "nodes": len(g.nodes), "stage": stage})
        if not args.json:
            print(f"{path}: ok ({len(g.nodes)} nodes, {stage})")
    if args.json:  # a failing file raised above: exit 2 with its one-line error on stderr
        print(json.dumps({"files": results}))
    return 0


def _print(args, out) -> int:
    from tcc_compiler import driver
    from tcc_compiler.errors import InputError
    from tcc_compiler.ir.printer import ConstTable, print_graph
    from tcc_compiler.ir.text import load_ir
    from tcc_compiler.options import CompileOptions
    from tcc_compiler.passes.instruments import (IMPORT_STAGE, QUANTIZE_STAGE, PrintIR,
                                                 check_pass_names, stage_names)

    names = stage_names()
    check_pass_names(args.after, names, "--after")
    check_pass_names(args.before, names, "--before")
    if args.after == "all" or args.before == "all":
        raise InputError("tccc ir print: name one stage (use tccc compile --print-ir-after all "
                         "for every stage)")
    is_ir = driver.is_ir_file(args.model)
    if is_ir and args.after is None and args.before is None:  # as loaded, after_pass kept
        graph = load_ir(args.model)
        out.write(print_graph(graph, ConstTable(), inline_limit=args.inline_limit))
        return 0
    graph, passes = driver.import_model(args.model, args.input)
    target = args.after or args.before or IMPORT_STAGE
    when = "after" if args.before is None else "before"
    if target == IMPORT_STAGE:
        if when == "before" or is_ir:
            raise InputError(f"{args.model}: there is no IR {when} stage import here")
        out.write(print_graph(graph, ConstTable(), inline_limit=args.inline_limit))
        return 0
    reachable = [p.name for p in passes] + ([] if graph.meta.get("quantized")
                                            else [QUANTIZE_STAGE])
    if target not in reachable:
        raise InputError(f"{args.model}: stage {target} is not ahead of this IR (remaining: "
                         f"{', '.join(reachable) or 'none'})")
    printer = PrintIR(before=target if when == "before" else None,
                      after=target if when == "after" else None, stream=out,
                      inline_limit=args.inline_limit)
    stop = [p.name for p in passes].index(target) + 1 if target != QUANTIZE_STAGE else None
    graph = driver.run_float_passes(graph, passes[:stop], instruments=[printer]).graph
    if target == QUANTIZE_STAGE:  # the driver's calibrate + quantize stages, default options
        opts = CompileOptions(calibration=args.calib)
        calib = driver.calibrate(graph, opts, driver.preprocess_for(graph, opts))
        driver.quantize(graph, graph, calib, opts, [printer], len(passes))
    return 0
