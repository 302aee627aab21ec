"""Build a reference model (seeded, untrained ResNet-18/50, 50-bn, 50-v2) as an ONNX file."""

from __future__ import annotations

from tcc_compiler.emit.jsonfmt import json_text

NAME = "zoo"
HELP = "build a reference model (resnet18, resnet50, resnet50-bn, resnet50-v2)"
ORDER = 10


def add_arguments(p) -> None:
    """Arguments of ``tccc zoo``."""
    p.add_argument("name", help="resnet18 | resnet50 | resnet50-bn | resnet50-v2")
    p.add_argument("--input", default="224x224x3", help="W x H x C (default 224x224x3)")
    p.add_argument("--seed", type=int, default=0,
                   help="random seed of the (untrained) weights; the same seed gives a "
                        "byte-identical model (default 0)")
    p.add_argument("-o", "--output", required=True, help="output .onnx file")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args) -> int:
    """tccc zoo NAME [--input WxHxC] [--seed N] -o FILE.onnx"""
    from tcc_compiler.api.models import build_zoo_model

    path, (w, h, c) = build_zoo_model(args.name, args.output, args.input, args.seed)
    if getattr(args, "json", False):

        print(json_text({"output": str(path), "model": args.name, "input": [w, h, c]}))
    else:
        print(path)
    return 0
