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
import logging
import sys

from tcc_compiler.emit.jsonfmt import json_text

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
    from tcc_compiler.cli.main import non_negative_int

    pr.add_argument("--inline-limit", type=non_negative_int, default=16,
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
    print(json_text({"model": str(args.model), "stage": stage,
                      "when": "before" if args.before else "after", "ir": buf.getvalue()}))
    return rc


def _verify(args) -> int:
    from tcc_compiler.api.models import verify_ir_file

    results = []
    for path in args.files:
        r = verify_ir_file(path)
        results.append(r)
        if not args.json:
            print(f"{path}: ok ({r['nodes']} nodes, {r['stage']})")
    if args.json:  # a failing file raised above: exit 2 with its one-line error on stderr
        print(json_text({"files": results}))
    return 0


def _print(args, out) -> int:
    from tcc_compiler.api.models import print_ir

    print_ir(args.model, out, input_whc=args.input, after=args.after, before=args.before,
             calibration=args.calib, inline_limit=args.inline_limit)
    return 0
