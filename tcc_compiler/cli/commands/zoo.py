"""Build a reference model (seeded, untrained: ResNets, YOLOs, MobileNets, EfficientNets,
SSDLite, FlowNetS, RegNetX, MobileOne, ConvMixer, LeNet-5) as an ONNX file."""

from __future__ import annotations

from tcc_compiler.emit.jsonfmt import json_text

NAME = "zoo"
HELP = ("build a reference model (resnet18, resnet50, resnet50-bn, resnet50-v2, yolov8n, "
        "yolov5n, yolo11n, mobilenet-v2, mobilenet-v3-large, efficientnet-lite0, "
        "efficientnet-v2-s, ssdlite-mobilenet-v2, flownets, regnetx-400mf, mobileone-s1, "
        "convmixer-768-32, lenet5)")
ORDER = 10


def add_arguments(p) -> None:
    """Arguments of ``tccc zoo``."""
    p.add_argument("name", help="resnet18 | resnet50 | resnet50-bn | resnet50-v2 | yolov8n | "
                                "yolov5n | yolo11n | mobilenet-v2 | mobilenet-v3-large | "
                                "efficientnet-lite0 | efficientnet-v2-s | "
                                "ssdlite-mobilenet-v2 | flownets | regnetx-400mf | "
                                "mobileone-s1 | convmixer-768-32 | lenet5")
    p.add_argument("--input", default=None,
                   help="W x H x C (default: the model's resolution in the vendor's zoo: "
                        "224x224x3 for classifiers, 640x320x3 for RegNetX and MobileOne, "
                        "32x32x1 for LeNet-5 (32x32 only), 640x640x3 for YOLOs, 300x300x3 "
                        "for SSDLite; FlowNetS, which has no row there: 512x384x6, two RGB "
                        "frames)")
    p.add_argument("--seed", type=int, default=0,
                   help="random seed of the (untrained) weights; the same seed gives a "
                        "byte-identical model (default 0)")
    p.add_argument("-o", "--output", required=True, help="output .onnx file")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args) -> int:
    """tccc zoo NAME [--input WxHxC] [--seed N] -o FILE.onnx"""
    from tcc_compiler import zoo
    from tcc_compiler.api.models import build_zoo_model

    spec = args.input or "x".join(str(v) for v in zoo.default_input(args.name))
    path, (w, h, c) = build_zoo_model(args.name, args.output, spec, args.seed)
    if getattr(args, "json", False):

        print(json_text({"output": str(path), "model": args.name, "input": [w, h, c]}))
    else:
        print(path)
    return 0
