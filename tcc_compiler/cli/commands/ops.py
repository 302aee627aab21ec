"""List the ONNX ops tccc converts, or place each node of a model on the NPU or the host.

Without MODEL: the op types of the frontend's converter table (the same table the importer and
SUPPORTED_OPS.md use). With MODEL: :func:`tcc_compiler.placement.partition` per node, with the
reason.
"""

from __future__ import annotations

import json

NAME = "ops"
HELP = "supported ONNX ops, or the NPU/host placement of each node of a model"
ORDER = 70


def add_arguments(p) -> None:
    """Arguments of ``tccc ops``."""
    p.add_argument("model", nargs="?", help="an .onnx model to partition (optional)")
    p.add_argument("--input", default=None, help="input size W x H x C for MODEL")
    p.add_argument("--json", action="store_true", help="print JSON")


def run(args) -> int:
    """tccc ops [MODEL [--input WxHxC]] [--json]"""
    from tcc_compiler.api.models import partition, supported_ops

    if args.model is None:
        rows = supported_ops()
        if args.json:
            print(json.dumps(rows))
        else:
            for r in rows:
                print(f"{r['op_type']:<20} {r['notes']}".rstrip())
        return 0
    places = partition(args.model, args.input)
    if args.json:
        print(json.dumps([p.to_dict() for p in places]))
        return 0
    for p in places:
        print(f"{p.device:<5} {p.op_type:<20} {p.node}: {p.reason}")
    n_host = sum(p.device == "host" for p in places)
    n_folded = sum(p.device != "host" and p.folded for p in places)
    print(f"{len(places) - n_host} node(s) on the NPU ({n_folded} of them folded away or views "
          f"at compile time, no NPU op of their own), {n_host} on the host")
    return 0
