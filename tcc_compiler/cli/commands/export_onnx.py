"""Export a compiled output folder as a standard QDQ ONNX model (Netron, ONNX Runtime), or
with ``--ort`` as a model whose NPU segments run the compiled program inside ONNX Runtime."""

from __future__ import annotations

from tcc_compiler.emit.jsonfmt import json_text

NAME = "export-onnx"
HELP = "export a compiled folder as a QDQ ONNX model"
ORDER = 60


def add_arguments(p) -> None:
    """Arguments of ``tccc export-onnx``."""
    p.add_argument("dir", help="compiled output folder")
    p.add_argument("-o", "--output", required=True, help="output .onnx file (model_qdq.onnx)")
    p.add_argument("--ort", action="store_true",
                   help="NPU segments as custom nodes that run the compiled program (on the "
                        "reference executor) inside ONNX Runtime: load the model with "
                        "tcc_compiler.runtime.ort_ops.session_options() (pip install "
                        "'tccc[ort]'); the nodes reference DIR by its absolute path")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def run(args) -> int:
    """tccc export-onnx DIR -o model_qdq.onnx [--ort] [--json]"""
    import onnx

    from tcc_compiler.api.folders import export_onnx

    path = export_onnx(args.dir, args.output, ort_nodes=args.ort)
    m = onnx.load(str(path), load_external_data=False)
    counts: dict[str, int] = {}
    for n in m.graph.node:
        counts[n.op_type] = counts.get(n.op_type, 0) + 1
    if args.json:
        print(json_text({"output": str(path), "opset": _default_opset(m),
                          "nodes": counts}))
    else:
        print(f"wrote {path}: {len(m.graph.node)} nodes (" + ", ".join(
            f"{v} {k}" for k, v in sorted(counts.items())) + ")")
    return 0


def _default_opset(m) -> int:
    """The default-domain opset (the ``--ort`` export also imports the custom domain)."""
    return next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx"))
