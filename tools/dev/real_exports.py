"""Export the vendor zoo's families with the real exporters and try them in tccc (dev only).

Needs the torch venv of ``tools/dev/compare_exports.py`` (torch, torchvision, timm,
ultralytics, yolov5, onnxslim); tests never run it. Two steps, as a new user would:

    /tmp/venv-torch/bin/python tools/dev/real_exports.py export -o /tmp/real [--only NAME..]
    PYTHONPATH=$PWD python3 tools/dev/real_exports.py try -o /tmp/real [--only NAME..]

``export`` builds every model from its config with random initialisation (no weight download:
only package registries are reachable; the classifiers' BatchNorm statistics recalibrated on
random inputs, else the untrained nets are chaotic) and writes ``NAME.onnx`` with the exporter
a user would call: ultralytics' ``YOLO(yaml).export(format="onnx", opset=17)``, yolov5's
``Model`` with its ``Detect`` head in export mode, ``torch.onnx.export`` (opset 17,
TorchScript exporter) for torchvision and timm.

``try`` runs, per model, the README's commands in fresh processes: ``tccc ops``, ``tccc
compile --input WxHxC``, ``tccc run --check`` on one bundled photo. It prints one JSON row per
model: NPU/host nodes, compile seconds, bit-exact, SQNR of every output against ONNX Runtime
(``run --check``; for ultralytics' [1, 4 + K, N] output also of the class-score rows alone),
the estimated NPU ms and host ms (``report.json``), the sizes of the command and weight
binaries. Any exit code other than 0 is printed with its stderr.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

#: name -> (how to build it, input W x H x C at the vendor zoo's resolution)
MODELS = {
    "yolov3u": ("ultralytics:yolov3u.yaml", (640, 640, 3)),
    "yolov3-tinyu": ("ultralytics:yolov3-tinyu.yaml", (640, 640, 3)),
    "yolov5n": ("yolov5:yolov5n.yaml", (640, 640, 3)),
    "yolov5nu": ("ultralytics:yolov5nu.yaml", (640, 640, 3)),
    "yolov6n": ("ultralytics:yolov6n.yaml", (640, 640, 3)),
    "yolov8n": ("ultralytics:yolov8n.yaml", (640, 640, 3)),
    "yolov8n-pose": ("ultralytics:yolov8n-pose.yaml", (640, 640, 3)),
    "yolov9t": ("ultralytics:yolov9t.yaml", (640, 640, 3)),
    "yolov9s": ("ultralytics:yolov9s.yaml", (640, 640, 3)),
    "yolo11n": ("ultralytics:yolo11n.yaml", (640, 640, 3)),
    "yolo11n-seg": ("ultralytics:yolo11n-seg.yaml", (512, 512, 3)),
    "yolo11m-seg": ("ultralytics:yolo11m-seg.yaml", (512, 512, 3)),
    "mobilenet_v3_large": ("torchvision:mobilenet_v3_large", (224, 224, 3)),
    "efficientnetv2_rw_s": ("timm:efficientnetv2_rw_s", (224, 224, 3)),
    "tf_efficientnetv2_s": ("timm:tf_efficientnetv2_s", (224, 224, 3)),
    "tf_efficientnet_lite0": ("timm:tf_efficientnet_lite0", (224, 224, 3)),
    # not in the vendor's zoo: attention blocks (host segments), ghost modules
    "mobilevit_xxs": ("timm:mobilevit_xxs", (256, 256, 3)),
    "ghostnet_100": ("timm:ghostnet_100", (224, 224, 3)),
    # semantic segmentation: bilinear upsampling (F.interpolate, align_corners=False)
    "lraspp_mobilenet_v3_large": ("torchvision-seg:lraspp_mobilenet_v3_large", (224, 224, 3)),
    "deeplabv3_mobilenet_v3_large": ("torchvision-seg:deeplabv3_mobilenet_v3_large",
                                     (224, 224, 3)),
}
PHOTO = "tcc_compiler/data/photos/eval/camera_man.jpg"


# ------------------------------------------------------------------ torch side (in the venv)

def _fix_torchvision() -> None:
    """Let torchvision's pure-Python models import with the CPU torch wheel.

    torchvision's PyPI wheel is built against CUDA torch: its C ops do not load, and importing
    it fails while registering fake kernels for nms/qnms (see tools/dev/compare_exports.py).
    """
    import torch

    if subprocess.run([sys.executable, "-c", "import torchvision"],
                      capture_output=True, check=False).returncode:
        lib = torch.library.Library("torchvision", "DEF")
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        globals()["_TV_LIB"] = lib


def _torch_model(kind: str, arch: str):
    """(module, input names, output names) of a torchvision, timm or yolov5 model."""
    if kind == "yolov5":
        import os

        import yolov5
        from yolov5.models.yolo import Detect, Model

        model = Model(os.path.join(os.path.dirname(yolov5.__file__), "models", arch)).eval()
        model = model.fuse()
        for m in model.modules():
            if isinstance(m, Detect):  # what yolov5's export.py sets
                m.inplace, m.export, m.dynamic = False, True, False
        return model, ["images"], ["output0"]
    if kind == "timm":
        import timm

        return timm.create_model(arch).eval(), ["input"], ["logits"]
    import torchvision

    if kind == "torchvision-seg":   # returns {"out": ...}: export the "out" tensor
        import torch

        class _Out(torch.nn.Module):
            def __init__(self, net):
                super().__init__()
                self.net = net

            def forward(self, x):
                return self.net(x)["out"]

        net = getattr(torchvision.models.segmentation, arch)(weights=None,
                                                              weights_backbone=None)
        return _Out(net).eval(), ["input"], ["out"]
    return getattr(torchvision.models, arch)().eval(), ["input"], ["logits"]


def _recalibrate_batchnorm(model, chw: tuple[int, int, int], batches: int = 8) -> None:
    """Set every BatchNorm's running statistics to the batch statistics of random inputs.

    A randomly initialised classifier keeps mean 0 / variance 1 running statistics, so its
    activations grow layer after layer (timm's EfficientNetV2 reaches ~1e4 at the head) and
    the untrained net is chaotic: any rounding anywhere is amplified to an unrelated output.
    Trained nets are not like that; recalibrated statistics give each layer the normalised
    ranges a trained one has (the weights stay random).
    """
    import torch

    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None   # cumulative average over the batches below
    model.train()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _ in range(batches):
            model(torch.randn(4, *chw, generator=gen))
    model.eval()


def export_one(name: str, out: Path) -> None:
    """Write ``out/NAME.onnx`` with the exporter a user of that family calls."""
    import torch

    how, (w, h, c) = MODELS[name]
    kind, arch = how.split(":")
    dest = out / f"{name}.onnx"
    if kind == "ultralytics":
        from ultralytics import YOLO

        path = YOLO(arch).export(format="onnx", imgsz=(h, w), opset=17)
        Path(path).replace(dest)
        return
    model, ins, outs = _torch_model(kind, arch)
    if kind in ("timm", "torchvision", "torchvision-seg"):
        _recalibrate_batchnorm(model, (c, h, w))
    x = torch.zeros(1, c, h, w)
    model(x)
    torch.onnx.export(model, x, str(dest), opset_version=17, input_names=ins,
                      output_names=outs, dynamo=False)


# ------------------------------------------------------------------ project side

def _tccc(*args: str, timeout: float = 3600) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "tcc_compiler.cli.main", "-q", *args]
    return subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=timeout)


def _fail(step: str, proc: subprocess.CompletedProcess) -> dict:
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return {"failed": step, "exit": proc.returncode, "stderr": " | ".join(tail)}


def try_one(name: str, out: Path, reuse: bool = False) -> dict:
    """Run ops, compile and run --check on ``out/NAME.onnx``; one result record.

    ``reuse``: keep an earlier compile of the same model (its folder and time) if any.
    """
    onnx_path = out / f"{name}.onnx"
    w, h, c = MODELS[name][1]
    size = f"{w}x{h}x{c}"
    row: dict = {"model": name, "input": size}
    ops = _tccc("ops", str(onnx_path), "--input", size, "--json")
    if ops.returncode:
        row.update(_fail("ops", ops))
        return row
    places = [n["device"] for n in json.loads(ops.stdout)]
    row["npu_nodes"], row["host_nodes"] = places.count("npu"), places.count("host")
    row["unsupported"] = places.count("unsupported")
    folder = out / f"{name}.out"
    timing = out / f"{name}.compile_s"
    if not (reuse and timing.exists()):
        t0 = time.perf_counter()
        comp = _tccc("compile", str(onnx_path), "--input", size, "-o", str(folder))
        if comp.returncode:
            row.update(_fail("compile", comp))
            return row
        timing.write_text(f"{time.perf_counter() - t0:.1f}")
    row["compile_s"] = float(timing.read_text())
    run = _tccc("run", str(folder), PHOTO, "--check", str(onnx_path), "--json")
    if run.returncode:
        row.update(_fail("run", run))
        return row
    check = json.loads(run.stdout)["check"]
    row["bit_exact"] = check["bit_exact"]
    row["sqnr_db"] = check.get("sqnr_db_outputs") or check["sqnr_db"]
    row.update(_report_figures(folder))
    scores = _score_sqnr(folder, onnx_path)
    if scores is not None:
        row["sqnr_scores_db"] = scores
    return row


def _score_sqnr(folder: Path, onnx_path: Path) -> float | None:
    """SQNR of the class-score rows (4: of ultralytics' [1, 4 + K, N] output) alone: the box
    rows, in pixels, dwarf the scores in the whole output's SQNR. None for other outputs."""
    import numpy as np
    import onnxruntime as ort

    from tcc_compiler.runtime import load_program
    from tcc_compiler.runtime.check import sqnr_db

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    shape = sess.get_outputs()[0].shape
    if len(shape) != 3 or not isinstance(shape[1], int) or shape[1] < 6 or shape[1] > shape[2]:
        return None
    prog = load_program(folder)
    x = prog.as_input(PHOTO)
    ref = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    got = np.asarray(prog.final_output(prog.run(x))).reshape(ref.shape)
    return round(sqnr_db(ref[:, 4:], got[:, 4:]), 3)


def _report_figures(folder: Path) -> dict:
    rep = json.loads((folder / "report.json").read_text())
    cmd = sorted(folder.rglob("npu_cmd.bin"))
    wts = sorted(folder.rglob("quantized_network.bin"))
    host_ms = rep.get("estimated_host_ms", 0.0) + rep.get("estimated_boundary_ms", 0.0)
    return {"npu_ms": rep.get("estimated_latency_ms"), "host_ms": round(host_ms, 3),
            "cmd_kb": round(sum(p.stat().st_size for p in cmd) / 1024, 1),
            "weights_mb": round(sum(p.stat().st_size for p in wts) / 2**20, 2)}


def main(argv: list[str] | None = None) -> int:
    """Entry point: see the module docstring."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("step", choices=["export", "try"])
    p.add_argument("-o", "--out", required=True, help="folder of the exported models")
    p.add_argument("--only", nargs="*", default=None, help="model names (default: all)")
    p.add_argument("--reuse", action="store_true", help="(try) keep earlier compiles")
    args = p.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    names = args.only or list(MODELS)
    if args.step == "export":
        _fix_torchvision()
        import os

        os.chdir(out)  # ultralytics writes its .pt/.onnx next to the cwd
        for name in names:
            try:
                export_one(name, out)
                print(f"exported {name}", file=sys.stderr)
            except Exception as exc:  # noqa: BLE001 - report and go on with the next model
                print(f"export of {name} failed: {exc!r}", file=sys.stderr)
        return 0
    for name in names:
        if not (out / f"{name}.onnx").exists():
            print(json.dumps({"model": name, "failed": "no export"}))
            continue
        print(json.dumps(try_one(name, out, args.reuse)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
