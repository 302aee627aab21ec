#!/usr/bin/env python3
"""Issue #13's done-when table: every model family of the vendor's zoo that ``tccc zoo`` builds
(at the vendor's resolution, ``tccc zoo``'s default input) and every ``light_*`` model of the
onnx wheel, each compiled and checked as a user would, with the CLI in child processes:

1. ``tccc zoo NAME -o MODEL.onnx`` (zoo rows; light rows use the wheel's file and its input
   size);
2. ``tccc compile MODEL.onnx --input WxHxC -o DIR --json`` (calibration on the bundled
   photos; the YOLOs with ``--mean 0 0 0 --std 1 1 1``, the pixel / 255 they take, the
   others with ImageNet mean/std; models with other than 1 or 3 input channels, FlowNetS's
   two RGB frames, on ``.npy`` arrays made from the same photos: consecutive photos stacked
   along channels);
3. ``tccc run DIR INPUTS... --check MODEL.onnx --json`` on ``--images`` (default 10) bundled
   eval photos (or the stacked arrays).

``--precision auto|FILE`` compiles every row with that option (int16 activations where they pay,
README "Mixed precision"): the model cell then says how many layers went int16 and what they
cost in estimated latency (ms) and DRAM traffic per image (bytes), from the folder's
``report.json`` (every NPU segment's, summed).

Columns: compile status (or the one-line refusal), ``bit_exact`` on every input (executor ==
golden integer model, every byte), the SQNR (dB) of every graph output against ONNX Runtime's
float output (the minimum over the inputs; ``min/median``), whether every output meets
``--target-db`` (25 dB), the NPU/host split (nodes, segments), the host and boundary cost
(bytes moved across NPU/host boundaries per inference and the estimated boundary and host
ms, from the compile summary: cost model figures, not measurements), the estimated total
latency, the SQNR of every tensor an NPU segment hands to the host on the first input (the
minimum; see :func:`boundary_sqnr`), and the wall time of the row (compile + run, on this
machine as loaded now).

Prints the table as markdown on stdout (``--json FILE`` also writes every row).

Usage::

    PYTHONPATH=$PWD python3 tools/family_table.py [--only REGEX] [--all-zoo] [--images 10]
        [--input WxHxC] [--precision int8|auto|FILE] [--workdir DIR] [--timeout 3600]
        [--json FILE]

``--input`` overrides every row's resolution (a quick smoke run; the table is meant at the
vendor's). Exit status 0 when every row was measured (whatever its figures), 1 when a child
crashed (exit 1 or a signal) or timed out, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

#: The families issue #13 names (zoo builders); ``--all-zoo`` adds every other zoo model.
FAMILIES = ("yolov5n", "yolov8n", "yolo11n", "ssdlite-mobilenet-v2", "mobilenet-v3-large",
            "efficientnet-v2-s", "flownets")
#: The onnx wheel's light models the issue names.
LIGHT = ("light_bvlc_alexnet", "light_zfnet512", "light_densenet121", "light_inception_v1",
         "light_inception_v2", "light_shufflenet", "light_squeezenet")
PHOTOS = ROOT / "tcc_compiler" / "data" / "photos"


@dataclass
class Row:
    """One model's measurements (None where a step did not run)."""

    model: str
    input_whc: str
    status: str = "not run"
    bit_exact: bool | None = None
    sqnr_db: dict[str, list[float | None]] = field(default_factory=dict)
    placement: dict | None = None
    boundary_bytes: int | None = None
    boundary_ms: float | None = None
    host_ms: float | None = None
    total_ms: float | None = None
    npu_ms: float | None = None
    boundary_sqnr_db: dict[str, float | None] = field(default_factory=dict)
    precision: str = "int8"
    int16_layers: int | None = None
    int16_weight_layers: int = 0
    int16_added_weight_bytes: int = 0
    int16_added_ms: float | None = None
    int16_added_dram_bytes: int | None = None
    seconds: float = 0.0
    crashed: bool = False


def _tccc(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    """Run ``tccc ARGS`` (this checkout's) in a child process, output captured."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-c", "import sys; from tcc_compiler.cli.main import main; "
           "sys.exit(main())", "-q", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=ROOT)


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:200] if lines else ""


def _model_channels(path: Path) -> int:
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    inits = {t.name for t in m.graph.initializer}
    inp = next(i for i in m.graph.input if i.name not in inits)
    return inp.type.tensor_type.shape.dim[1].dim_value


def _stacked_inputs(whc: str, folder: Path, n: int, src: Path) -> list[str]:
    """``n`` float32 NCHW ``.npy`` inputs for a model with C channels: consecutive photos of
    ``src`` (RGB, ImageNet mean/std) stacked along channels until C (FlowNetS: two frames)."""
    from PIL import Image

    w, h, c = (int(v) for v in whc.split("x"))
    photos = sorted(p for p in src.iterdir() if p.suffix.lower() in (".jpg", ".png"))
    mean = np.array([0.485, 0.456, 0.406], np.float32)[:, None, None]
    std = np.array([0.229, 0.224, 0.225], np.float32)[:, None, None]

    def frame(p: Path) -> np.ndarray:
        img = Image.open(p).convert("RGB").resize((w, h), Image.BILINEAR)
        return (np.asarray(img, np.float32).transpose(2, 0, 1) / 255.0 - mean) / std

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for k in range(n):
        planes = [frame(photos[(k + j) % len(photos)]) for j in range(math.ceil(c / 3))]
        x = np.concatenate(planes)[:c][None].astype(np.float32)
        path = folder / f"input_{k:02d}.npy"
        np.save(path, x)
        out.append(str(path))
    return out


def _model_file(name: str, whc: str, work: Path, timeout: float) -> Path:
    """The row's .onnx file: the wheel's light model, or ``tccc zoo`` output."""
    if name.startswith("light_"):
        from corpus_models import ONNX_DATA

        return ONNX_DATA / "light" / f"{name}.onnx"
    path = work / f"{name}.onnx"
    r = _tccc(["zoo", name, "--input", whc, "-o", str(path)], timeout)
    if r.returncode:
        raise RuntimeError(f"tccc zoo exit {r.returncode}: {_last_line(r.stderr)}")
    return path


def _row_input(name: str, override: str | None) -> str:
    """The row's WxHxC: the vendor's resolution, or ``override``'s W and H with the model's
    channels."""
    whc = _default_input(name)
    if override:
        w, h = override.split("x")[:2]
        return f"{w}x{h}x{whc.split('x')[2]}"
    return whc


def _default_input(name: str) -> str:
    if name.startswith("light_"):
        import onnx
        from corpus_models import ONNX_DATA, image_input_whc

        return image_input_whc(onnx.load(str(ONNX_DATA / "light" / f"{name}.onnx"),
                                         load_external_data=False)) or "224x224x3"
    from tcc_compiler.zoo import default_input

    return "x".join(str(v) for v in default_input(name))


def _preprocess_args(name: str) -> list[str]:
    """``tccc compile`` options giving a zoo model the pixels it was built for: the YOLOs
    take RGB in [0, 1] (ultralytics: pixel / 255), the others ImageNet mean/std (tccc's
    default). Without them a YOLO would be calibrated and checked on ImageNet-normalised
    values (-2.1..2.6), inputs it was not made for."""
    from tcc_compiler.zoo._registry import SPECS

    spec = SPECS.get(name)
    if spec is not None and spec.unit_pixels:
        return ["--mean", "0", "0", "0", "--std", "1", "1", "1"]
    return []


def _fill_compile(row: Row, summary: dict) -> None:
    row.placement = summary.get("placement")
    row.boundary_bytes = summary.get("boundary_bytes", 0)
    row.boundary_ms = summary.get("estimated_boundary_ms", 0.0)
    row.host_ms = summary.get("estimated_host_ms", 0.0)
    row.npu_ms = summary.get("estimated_latency_ms")
    row.total_ms = summary.get("estimated_total_ms", row.npu_ms)


def _fill_precision(row: Row, folder: Path) -> None:
    """The int16 layers a ``--precision`` compile chose and their estimated cost (latency ms,
    DRAM bytes per image), summed over the folder's ``report.json`` files (a segmented folder
    has one per NPU segment)."""
    row.int16_layers, row.int16_added_ms, row.int16_added_dram_bytes = 0, 0.0, 0
    for report in sorted(folder.glob("**/report.json")):
        p = json.loads(report.read_text()).get("precision")
        if not p:
            continue
        row.int16_layers += len(p.get("int16_layers", ()))
        row.int16_weight_layers += len(p.get("int16_weight_layers", ()))
        cost = p.get("cost") or {}
        row.int16_added_weight_bytes += (cost.get("layer_weight_bytes") or {}).get("added", 0)
        row.int16_added_ms += (cost.get("estimated_latency_ms") or {}).get("added", 0.0)
        row.int16_added_dram_bytes += (cost.get("dram_bytes_per_image") or {}).get("added", 0)


def _fill_run(row: Row, results: list[dict]) -> None:
    row.bit_exact = all(r["check"]["bit_exact"] for r in results)
    for r in results:
        c = r["check"]
        per = c.get("sqnr_db_outputs") or {"output": c.get("sqnr_db")}
        for out, db in per.items():
            row.sqnr_db.setdefault(out, []).append(db)


def measure(name: str, args: argparse.Namespace, work: Path) -> Row:
    """Build, compile and run-check one model; never raises for a model's failure."""
    whc = _row_input(name, args.input)
    row = Row(name, whc, precision=args.precision)
    t0 = time.monotonic()
    precision = [] if args.precision == "int8" else ["--precision", args.precision]
    folder = work / name
    try:
        model = _model_file(name, whc, work, args.timeout)
        c = int(whc.split("x")[2])
        calib: list[str] = []
        if c in (1, 3):
            evals = sorted(p for p in (PHOTOS / "eval").iterdir()
                           if p.suffix.lower() == ".jpg")
            inputs = [str(p) for p in evals[:args.images]]
        else:
            inputs = _stacked_inputs(whc, work / f"{name}_eval", args.images, PHOTOS / "eval")
            calib = ["--calib", *_stacked_inputs(whc, work / f"{name}_calib", 8,
                                                 PHOTOS / "calib")]
        r = _tccc(["compile", str(model), "--input", whc, "-o", str(folder), "--json",
                   *calib, *_preprocess_args(name), *precision], args.timeout)
        if r.returncode:
            row.crashed = r.returncode != 2
            row.status = f"refused (exit {r.returncode}): {_last_line(r.stderr)}"
            return row
        _fill_compile(row, json.loads(r.stdout))
        if precision:
            _fill_precision(row, folder)
        r = _tccc(["run", str(folder), *inputs, "--check", str(model), "--json"],
                  args.timeout)
        if r.returncode:
            row.crashed = r.returncode != 2
            row.status = f"run failed (exit {r.returncode}): {_last_line(r.stderr)}"
            return row
        _fill_run(row, json.loads(r.stdout)["results"])
        row.boundary_sqnr_db = boundary_sqnr(folder, model, inputs[0])
        row.status = "compiled"
    except subprocess.TimeoutExpired:
        row.crashed, row.status = True, f"timeout after {args.timeout:.0f} s"
    except (RuntimeError, ValueError) as exc:   # ValueError: a child's stdout is not JSON
        row.crashed, row.status = True, f"{type(exc).__name__}: {exc}"
    finally:
        row.seconds = round(time.monotonic() - t0, 1)
    return row


def boundary_sqnr(folder: Path, model: Path, image: str) -> dict[str, float | None]:
    """SQNR (dB) against ONNX Runtime of every tensor an NPU segment of a segmented ``folder``
    hands to the host, on one input (a host op at the end, e.g. a softmax of constant logits,
    can hide what the NPU computed: the light models' outputs are all 0.001). {} for a
    model the NPU runs whole."""
    import onnx
    import onnxruntime as ort

    from tcc_compiler.api.folders import inputs_for
    from tcc_compiler.runtime import load_program
    from tcc_compiler.runtime.check import sqnr_db

    manifest = json.loads((folder / "manifest.json").read_text())
    names = [t for s in manifest.get("segments", ()) if s["device"] == "npu"
             for t in s.get("outputs", ())]
    if not names:
        return {}
    prog = load_program(folder)
    x = (np.load(image) if image.endswith(".npy") else inputs_for([image], prog)[0])
    res = prog.run(x)
    m = onnx.load(str(model))
    # tensors tccc made itself (e.g. a Sigmoid sunk into a conv: '<name>_sunk') have no
    # ONNX Runtime counterpart: only the model's own tensors are compared
    made = {o for n in m.graph.node for o in n.output}
    names = [t for t in names if t in made]
    have = {o.name for o in m.graph.output}
    m.graph.output.extend(onnx.helper.make_value_info(t, onnx.TypeProto())
                          for t in names if t not in have)
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    ref = dict(zip([o.name for o in sess.get_outputs()],
                   sess.run(None, {sess.get_inputs()[0].name: x})))
    return {t: round(sqnr_db(ref[t], res[t]), 2) if t in res else None for t in names}


def _db(v: float | None) -> float:
    return math.inf if v is None else v   # JSON null = +inf (identical outputs)


def _sqnr_cell(row: Row, target: float) -> tuple[str, str]:
    if not row.sqnr_db:
        return "-", "-"
    cells, ok = [], True
    for out, vals in row.sqnr_db.items():
        vals = [_db(v) for v in vals]
        lo, med = min(vals), statistics.median(vals)
        ok &= lo >= target
        label = "" if out == "output" else f"{out}: "
        cells.append(f"{label}{lo:.1f}/{med:.1f}")
    return "<br>".join(cells), "yes" if ok else "**no**"


def _model_cell(r: Row) -> str:
    """The model's name, and for a ``--precision`` row what it chose and cost."""
    if r.precision == "int8":
        return r.model
    if r.int16_layers is None:
        return f"{r.model} (--precision {r.precision})"
    return (f"{r.model} (--precision {r.precision}: {r.int16_layers} int16 outputs, "
            f"{r.int16_weight_layers} int16 weights, +{r.int16_added_ms:.2f} ms, "
            f"{r.int16_added_dram_bytes / 1024:+.0f} KiB DRAM, "
            f"{r.int16_added_weight_bytes / 1024:+.0f} KiB weights)")


def markdown(rows: list[Row], target: float, images: int) -> str:
    """The table (one line per row) with a header naming the units."""
    head = ("| model | input WxHxC | status | bit-exact (%d inputs) | SQNR dB per output "
            "(min/median) | >= %g dB | NPU/host nodes | segments NPU/host | boundary KiB "
            "| boundary ms | host ms | total ms (est.) | NPU->host tensors SQNR dB (1st input, "
            "min) | wall s |" % (images, target))
    lines = [head, "|" + "---|" * 14]
    for r in rows:
        sq, ok = _sqnr_cell(r, target)
        p = r.placement or {}
        split = (f"{p.get('npu_nodes', '?')}/{p.get('host_nodes', 0)}" if r.placement
                 else ("all NPU" if r.status == "compiled" else "-"))
        segs = (f"{p.get('npu_segments', 1)}/{p.get('host_segments', 0)}" if r.placement
                else ("1/0" if r.status == "compiled" else "-"))
        kib = "-" if r.boundary_bytes is None else f"{r.boundary_bytes / 1024:.0f}"

        def ms(v):
            return "-" if v is None else f"{v:.2f}"
        exact = "-" if r.bit_exact is None else ("yes" if r.bit_exact else "**NO**")
        bvals = [_db(v) for v in r.boundary_sqnr_db.values()]
        bnd = f"{min(bvals):.1f} ({len(bvals)})" if bvals else "-"
        lines.append(f"| {_model_cell(r)} | {r.input_whc} | {r.status} | {exact} | {sq} | {ok} | "
                     f"{split} | {segs} | {kib} | {ms(r.boundary_ms)} | {ms(r.host_ms)} | "
                     f"{ms(r.total_ms)} | {bnd} | {r.seconds:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Measure the rows, print the table; see the module docstring for the exit status."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default=None, help="regex on the model names")
    ap.add_argument("--all-zoo", action="store_true", help="every tccc zoo model too")
    ap.add_argument("--images", type=int, default=10, help="eval photos per model (1..12)")
    ap.add_argument("--input", default=None, help="override every row's W and H (WxH)")
    ap.add_argument("--workdir", default=None, help="keep models and folders here")
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds per child command")
    ap.add_argument("--target-db", type=float, default=25.0)
    ap.add_argument("--precision", default="int8", metavar="int8|auto|FILE",
                    help="tccc compile --precision for every row (default int8)")
    ap.add_argument("--json", default=None, help="also write the rows as JSON")
    args = ap.parse_args(argv)
    if not 1 <= args.images <= 12:
        ap.error("--images takes 1..12 (the bundled eval photos)")
    names = list(FAMILIES)
    if args.all_zoo:
        from tcc_compiler.zoo import NAMES

        names = [n for n in NAMES if n not in names] + names
    names = list(LIGHT) + names   # the light models first: quicker
    if args.only:
        names = [n for n in names if re.search(args.only, n)]
    rows = []
    with tempfile.TemporaryDirectory(prefix="family_table_") as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        for name in names:
            row = measure(name, args, work)
            print(f"{name}: {row.status} ({row.seconds:.0f} s)", file=sys.stderr, flush=True)
            rows.append(row)
            if args.json:   # after every row: a long run leaves what it measured so far
                Path(args.json).write_text(json.dumps([asdict(r) for r in rows], indent=1))
    print(markdown(rows, args.target_db, args.images))
    return 1 if any(r.crashed for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
