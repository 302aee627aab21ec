"""Compare the ``tccc zoo`` builders with what the real exporters write (dev only).

Needs a separate venv with torch, torchvision, timm, ultralytics, yolov5 (and onnxslim, which
ultralytics' exporter uses) -- never the project's own environment, tests do not use torch::

    python3 -m venv /tmp/venv-torch
    /tmp/venv-torch/bin/pip install torch torchvision timm ultralytics onnxslim onnx
    /tmp/venv-torch/bin/pip install --no-deps yolov5 && /tmp/venv-torch/bin/pip install \\
        pandas seaborn gitpython requests tqdm pyyaml psutil "setuptools<70"
    PYTHONPATH=$PWD python3 tools/dev/compare_exports.py --venv /tmp/venv-torch/bin/python

The script re-runs itself under ``--venv`` with ``--export DIR`` to export every real model
with random initialisation (no weight download: nothing but package registries is reachable)
at the builder's default resolution, torch.onnx opset 17 (ultralytics: its own ``export``), and
to record torch's parameter counts. Then, in the project's Python, it builds the zoo model at
the same size and prints, per model, the op histograms side by side (``Identity`` nodes, which
torch adds when random-init BatchNorm folding makes biases identical, and timm's dynamic
"SAME"-padding arithmetic are listed but are not differences of layout), the outputs and the
parameter counts (torch's, torch's with BatchNorm folded, and the builder's).

Besides the histograms it compares, node by node in order (export artefacts left out), the op
type sequence, every node's inferred output shapes and its parameters' shapes (Identity
nodes that share random-init weights resolved), and says where the first difference is.
MobileOne-S1 is exported in its deployed form (timm's ``reparameterize_model`` first); LeNet-5
is the usual PyTorch MNIST definition (:class:`_LeNet5`, written here: it is in no package).

SSDLite-MobileNetV2 (qfgaohao/pytorch-ssd) and FlowNetS (FlowNetPytorch) are not on PyPI, so
they have no real export to compare with; the script says so.
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
import tempfile
from pathlib import Path

#: zoo name -> how the real model is made in the torch venv (see _export_one)
REAL = {"yolov8n": "ultralytics:yolov8n.yaml", "yolo11n": "ultralytics:yolo11n.yaml",
        "yolov5n": "yolov5:yolov5n.yaml", "mobilenet-v2": "torchvision:mobilenet_v2",
        "mobilenet-v3-large": "torchvision:mobilenet_v3_large",
        "efficientnet-v2-s": "torchvision:efficientnet_v2_s",
        "efficientnet-lite0": "timm:tf_efficientnet_lite0",
        "regnetx-400mf": "timm:regnetx_004", "mobileone-s1": "timm-reparam:mobileone_s1",
        "convmixer-768-32": "timm:convmixer_768_32", "lenet5": "lenet:"}
NOT_PACKAGED = {"ssdlite-mobilenet-v2": "qfgaohao/pytorch-ssd mb2-ssd-lite is not on PyPI",
                "flownets": "FlowNetPytorch is not on PyPI"}
#: ops that are export artefacts of random init / dynamic shapes, not of the layout
ARTEFACTS = {"Identity", "Shape", "Gather", "Unsqueeze", "Cast", "Ceil", "ConstantOfShape"}


# ------------------------------------------------------------------ torch side (in the venv)

def _torch_counts(model) -> dict:
    import torch

    total = sum(p.numel() for p in model.parameters())
    bn = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    return {"torch_params": total, "bn_folded": total - sum(m.num_features for m in bn)}


def _export_one(name: str, how: str, size: tuple[int, int, int], out: Path) -> dict:
    import torch

    kind, arch = how.split(":")
    w, h, c = size
    dest = out / f"{name}.onnx"
    if kind == "ultralytics":
        from ultralytics import YOLO

        yolo = YOLO(arch)
        counts = _torch_counts(yolo.model)
        path = yolo.export(format="onnx", imgsz=(h, w), opset=17)
        Path(path).replace(dest)
        return counts
    if kind == "yolov5":
        import os

        import yolov5
        from yolov5.models.yolo import Detect, Model

        model = Model(os.path.join(os.path.dirname(yolov5.__file__), "models", arch)).eval()
        counts = _torch_counts(model)
        model = model.fuse()
        for m in model.modules():
            if isinstance(m, Detect):  # what yolov5's export.py sets
                m.inplace, m.export, m.dynamic = False, True, False
        names = (["images"], ["output0"])
    elif kind in ("timm", "timm-reparam"):
        import timm

        model = timm.create_model(arch, pretrained=False).eval()
        if kind == "timm-reparam":   # the deployed form: branches folded into one conv
            from timm.utils.model import reparameterize_model

            model = reparameterize_model(model)
        counts = _torch_counts(model)
        names = (["input"], ["logits"])
    elif kind == "lenet":
        model = _lenet5(c).eval()
        counts = _torch_counts(model)
        names = (["input"], ["logits"])
    else:
        import torchvision

        model = getattr(torchvision.models, arch)().eval()
        counts = _torch_counts(model)
        names = (["input"], ["logits"])
    x = torch.zeros(1, c, h, w)
    model(x)
    torch.onnx.export(model, x, str(dest), opset_version=17, input_names=names[0],
                      output_names=names[1], dynamo=False)
    if arch == "tf_efficientnet_lite0":  # timm's "SAME" padding exports as shape arithmetic
        try:
            import onnx
            import onnxslim

            onnx.save(onnxslim.slim(onnx.load(str(dest))), str(out / f"{name}.slim.onnx"))
        except ImportError:
            pass
    return counts


def _lenet5(channels: int):
    """The usual PyTorch MNIST LeNet-5 (conv 5x5 6, pool, conv 5x5 16, pool, fc 120, 84, 10)."""
    import torch
    from torch import nn

    class _LeNet5(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.conv2 = nn.Conv2d(channels, 6, 5), nn.Conv2d(6, 16, 5)
            self.fc1, self.fc2 = nn.Linear(400, 120), nn.Linear(120, 84)
            self.fc3 = nn.Linear(84, 10)

        def forward(self, x):
            x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)
            x = torch.flatten(torch.max_pool2d(torch.relu(self.conv2(x)), 2), 1)
            return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))

    return _LeNet5()


def export_all(out: Path, names: list[str]) -> None:
    """Export every real model of ``names`` into ``out`` and write ``out/counts.json``."""
    import torch

    # torchvision's PyPI wheel is built against CUDA torch: with the CPU torch wheel its C ops
    # do not load, and importing it fails while registering fake kernels for nms/qnms.
    # Defining the two op schemas first lets the pure-Python models import.
    if subprocess.run([sys.executable, "-c", "import torchvision"],
                      capture_output=True, check=False).returncode:
        lib = torch.library.Library("torchvision", "DEF")
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        globals()["_TV_LIB"] = lib  # keep the library (and its definitions) alive
    sizes = json.loads((out / "sizes.json").read_text())
    counts = {}
    for name in names:
        counts[name] = _export_one(name, REAL[name], tuple(sizes[name]), out)
        print(f"exported {name}", file=sys.stderr)
    (out / "counts.json").write_text(json.dumps(counts))


# ------------------------------------------------------------------ project side

def _hist(model) -> collections.Counter:
    return collections.Counter(n.op_type for n in model.graph.node)


def _outputs(model) -> list[str]:
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    return [f"{o.name}{[d.dim_value for d in o.type.tensor_type.shape.dim]}"
            for o in inferred.graph.output]


def _sequence(model) -> list[tuple[str, str, list, list]]:
    """(node name, op type, inferred output shapes, parameter shapes) per node, export
    artefacts left out; initializers reached through Identity nodes resolved."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    inits = {t.name: list(t.dims) for t in model.graph.initializer}
    alias = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "Identity"}
    return [(n.name, n.op_type, [shapes.get(o) for o in n.output],
             [inits.get(alias.get(i, i)) for i in n.input[1:]])
            for n in model.graph.node if n.op_type not in ARTEFACTS | {"Constant"}]


def _sequence_lines(ours, real) -> list[str]:
    """Where the builder's node sequence first differs from the export's (op type, output
    shapes, parameter shapes), or that they are equal."""
    a, b = _sequence(ours), _sequence(real)
    for what, k in (("op type", 1), ("output shape", 2), ("parameter shape", 3)):
        diff = next((i for i, (x, y) in enumerate(zip(a, b)) if x[k] != y[k]), None)
        if diff is not None:
            return [f"  {what} sequence differs at node {diff}: builder {a[diff][0]} "
                    f"{a[diff][k]}, exporter {b[diff][0]} {b[diff][k]}"]
    if len(a) != len(b):
        return [f"  node sequences differ in length: builder {len(a)}, exporter {len(b)}"]
    return [f"  op type, output shape and parameter shape sequences equal ({len(a)} nodes)"]


def _compare(name: str, ours, real, counts: dict, slim=None) -> list[str]:
    from tcc_compiler.zoo import weight_count

    a, b = _hist(ours), _hist(real)
    c = _hist(slim) if slim is not None else None
    head = f"  {'op':<20}{'builder':>9}{'exporter':>10}" + ("   onnxslim" if c else "")
    lines = [f"== {name}", head]
    diffs = 0
    for op in sorted(set(a) | set(b) | set(c or ())):
        mark = ""
        if a[op] != b[op]:
            mark = "  (export artefact)" if op in ARTEFACTS or op == "Constant" else "  <--"
            diffs += mark.endswith("<--")
        extra = f"{c[op]:>11}" if c else ""
        lines.append(f"  {op:<20}{a[op]:>9}{b[op]:>10}{extra}{mark}")
    ours_names = {n.name for n in ours.graph.node}
    real_names = {n.name for n in real.graph.node}
    lines.append(f"  node names also in the export: {len(ours_names & real_names)} of "
                 f"{len(ours_names)}")
    lines.append(f"  outputs: builder {_outputs(ours)}  exporter {_outputs(real)}")
    lines += _sequence_lines(ours, real)
    ours_n = weight_count(ours)
    ref = counts["bn_folded"]
    lines.append(f"  parameters: builder {ours_n:,}; torch {counts['torch_params']:,}, with "
                 f"BatchNorm folded {ref:,} ({100.0 * (ours_n - ref) / ref:+.2f}%)")
    lines.append(f"  layout differences: {diffs}")
    return lines


def main(argv: list[str] | None = None) -> int:
    """Entry point: see the module docstring."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--venv", help="python of the torch venv (compare mode)")
    p.add_argument("--export", metavar="DIR", help="(internal) export the real models to DIR")
    p.add_argument("--only", nargs="*", default=None, help="zoo names to compare")
    p.add_argument("--keep", metavar="DIR", help="keep the exported models in DIR")
    args = p.parse_args(argv)
    names = [n for n in (args.only or list(REAL) + list(NOT_PACKAGED))]
    if args.export:
        export_all(Path(args.export), [n for n in names if n in REAL])
        return 0
    if not args.venv:
        p.error("--venv PYTHON is required (the torch venv's python)")
    import onnx

    from tcc_compiler import zoo

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.keep or tmp)
        out.mkdir(parents=True, exist_ok=True)
        (out / "sizes.json").write_text(json.dumps({n: zoo.default_input(n) for n in names}))
        subprocess.run([args.venv, __file__, "--export", str(out), "--only", *names],
                       check=True, cwd=out)
        counts = json.loads((out / "counts.json").read_text())
        for name in names:
            if name in NOT_PACKAGED:
                print(f"== {name}\n  no real export: {NOT_PACKAGED[name]}")
                continue
            w, h, c = zoo.default_input(name)
            ours = zoo.build(name, w, h, c)
            real = onnx.load(str(out / f"{name}.onnx"))
            slim_path = out / f"{name}.slim.onnx"
            slim = onnx.load(str(slim_path)) if slim_path.exists() else None
            print("\n".join(_compare(name, ours, real, counts[name], slim)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
