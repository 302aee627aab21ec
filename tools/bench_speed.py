#!/usr/bin/env python3
"""Speed of tccc next to ONNX Runtime, each measurement in a process of its own.

For each model: compile time with N calibration inputs next to ONNX Runtime's
``quantize_static`` (per-channel QDQ, the same float32 inputs, both handed the arrays so image
decoding is not timed), compile time from a calibration table (no calibration), each with
its CPU time (user + system, all threads: the figure to compare on a loaded machine) and its
stage times (``report.json``'s ``compile_seconds``), peak memory of the compile, and per
image the reference executor, ``tccc run --check`` (executor + golden integer model + the
float model in ONNX Runtime) and ONNX Runtime FP32 at its default settings.

Every figure is the median of ``--repeat`` runs, each a fresh process (imports excluded from
the timed region, model loading included for the compiles; the per-image figures after one
untimed image, which also pays numba's import and kernel loading when the ``fast`` extra is
installed: ``kernels`` in the output says which kernel set ran). ONNX Runtime spreads its threads
over every core and slows down far more than tccc on a loaded machine: compare figures only
from an idle machine. The output records the load average before and after each model
(``load_avg``) and says LOADED when other work shared the machine: more than half the cores
busy before the model, or, after it, more than the bench's own processes can explain (ONNX
Runtime keeps every core busy, so the bench alone lifts the 1-minute average towards the core
count: up to 1.5x the cores counts as idle); after each model's JSON line
one line per target of issue 18 (:data:`TARGETS`) gives the measured figure, the bound and
whether it is met.

Usage: python tools/bench_speed.py [--models resnet50:224x224x3 FILE.onnx:224x224x3 ...]
       [--calib N] [--images N] [--repeat N] [--calib-dir DIR] [--json FILE]
       [--only compile_no_calibration ...]
Called by ``tools/bench.py --speed``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Python run in a child process: prints one JSON line {"s": seconds, "rss_mib": peak}.
_PRELUDE = """
import json, resource, sys, time
import numpy as np
sys.path.insert(0, {root!r})
xs = list(np.load({inputs!r}))
"""

_TCCC_COMPILE = _PRELUDE + """
from tcc_compiler import api
compile_ = api.compile   # api loads the compiler's modules (onnx, ...) lazily: not timed
ru0 = resource.getrusage(resource.RUSAGE_SELF)
t = time.perf_counter()
m = compile_({model!r}, {whc!r}, calibration=[x[None] for x in xs][:{n}] or None{table})
s = time.perf_counter() - t
ru = resource.getrusage(resource.RUSAGE_SELF)
cpu = ru.ru_utime + ru.ru_stime - ru0.ru_utime - ru0.ru_stime
stages = {{k: round(v, 2) for k, v in m.report.get("compile_seconds", {{}}).items()}}
print(json.dumps({{"s": s, "rss_mib": ru.ru_maxrss / 1024, "cpu_s": cpu, "stages": stages}}))
"""

_ORT_QUANTIZE = _PRELUDE + """
from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                      quantize_static)
class Reader(CalibrationDataReader):
    def __init__(self, name, arrs):
        self.it = iter([{{name: a[None]}} for a in arrs])
    def get_next(self):
        return next(self.it, None)
import onnx
name = onnx.load({model!r}, load_external_data=False).graph.input[0].name
ru0 = resource.getrusage(resource.RUSAGE_SELF)
t = time.perf_counter()
quantize_static({model!r}, {out!r}, Reader(name, xs[:{n}]), quant_format=QuantFormat.QDQ,
                per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
s = time.perf_counter() - t
ru = resource.getrusage(resource.RUSAGE_SELF)
cpu = ru.ru_utime + ru.ru_stime - ru0.ru_utime - ru0.ru_stime
print(json.dumps({{"s": s, "rss_mib": ru.ru_maxrss / 1024, "cpu_s": cpu}}))
"""

_ORT_RUN = _PRELUDE + """
import onnxruntime as ort
sess = ort.InferenceSession({model!r}, providers=["CPUExecutionProvider"])
name = sess.get_inputs()[0].name
sess.run(None, {{name: xs[0][None]}})
ts = []
for x in xs[:{n}]:
    t = time.perf_counter(); sess.run(None, {{name: x[None]}}); ts.append(time.perf_counter() - t)
print(json.dumps({{"s": float(np.median(ts))}}))
"""

_TCCC_RUN = _PRELUDE + """
from tcc_compiler.runtime import load_program
prog = load_program({folder!r})
chk = None
if {check}:
    from tcc_compiler.runtime.check import Checker
    chk = Checker(prog, {model!r})
def one(x):   # as tccc run --check: golden + float model beside the executor
    if chk is not None:
        return chk.run_checked(x[None])
    return prog.run(x[None])
one(xs[0])
ts = []
for x in xs[:{n}]:
    t = time.perf_counter(); one(x); ts.append(time.perf_counter() - t)
print(json.dumps({{"s": float(np.median(ts))}}))
"""


def _child(code: str) -> dict:
    """Run ``code`` in a fresh Python; its last stdout line parsed as JSON."""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       check=False)
    if r.returncode:
        raise RuntimeError(f"benchmark child failed:\n{r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def _median(code: str, repeat: int) -> dict:
    runs = [_child(code) for _ in range(repeat)]
    runs.sort(key=lambda d: d["s"])
    return runs[len(runs) // 2]


def _inputs(model: str, whc: str, n: int, calib_dir: str | None, path: Path) -> None:
    """Save ``n`` preprocessed float32 inputs [n, C, H, W] (bundled photos or ``calib_dir``)."""
    import numpy as np

    from tcc_compiler.datasets.images import Preprocess, bundled_photos, load_inputs
    from tcc_compiler.frontend import parse_input_spec

    w, h, c = parse_input_spec(whc)
    if calib_dir:
        files = sorted(p for p in Path(calib_dir).iterdir() if p.is_file())[:n]
        pre = Preprocess(width=w, height=h, mean=(127.0,) * 3, std=(128.0,) * 3, scale=1.0,
                         resize="bicubic")   # the imagenet-lite0 README preprocessing
    else:
        files, pre = bundled_photos("calib")[:n], Preprocess(width=w, height=h)
    xs = load_inputs(files, pre, (1, c, h, w))
    np.save(path, np.concatenate([x for x in xs])[:n])


#: Issue 18's targets: figure -> (bound, the models it applies to; None = every model).
#: Ratios are tccc over ONNX Runtime (per image FP32 at default settings; ``quantize_static``
#: per-channel QDQ on the same calibration inputs).
TARGETS = {
    "compile_over_ort": (1.0, None),
    "compile_no_calibration_s": (2.0, ("resnet50",)),
    "compile_peak_rss_mib": (1024.0, ("resnet50",)),
    "executor_over_ort": (1.5, None),
    "run_check_over_ort": (3.0, None),
}


def target_lines(r: dict) -> list[str]:
    """One line per target of :data:`TARGETS` that ``r`` (a :func:`bench_model` result)
    measured: figure, bound, met or not, and LOADED when the machine was."""
    name = Path(r["model"]).stem
    loaded = " (LOADED machine: indicative only)" if r.get("loaded") else ""
    out = []
    for key, (bound, models) in TARGETS.items():
        if key not in r or (models and not any(re.fullmatch(rf"{m}(-\d+x\d+x\d+)?", name)
                                               for m in models)):
            continue
        verdict = "met" if r[key] <= bound else "NOT met"
        out.append(f"  {name}: {key} = {r[key]} (target <= {bound}): {verdict}{loaded}")
    return out


def kernel_set() -> str:
    """Which conv epilogue/depthwise kernels the executor and golden model use here:
    "compiled (numba X.Y)" with the ``fast`` extra installed, else "numpy"
    (:mod:`tcc_compiler.numerics.jit`)."""
    sys.path.insert(0, str(ROOT))
    from tcc_compiler.numerics import jit

    if not jit.available():
        return "numpy"
    import numba

    return f"compiled (numba {numba.__version__})"


def load_avg() -> float:
    """The 1-minute load average (0.0 where the OS does not report one)."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return 0.0


#: The figures :func:`bench_model` measures (``--only`` picks some).
FIGURES = ("compile", "ort_quantize", "compile_no_calibration", "executor", "run_check",
           "ort_fp32")


def bench_model(model: str, whc: str, n_calib: int, n_images: int, repeat: int,
                calib_dir: str | None, work: Path, only=FIGURES) -> dict:
    """The speed figures ``only`` of one model (seconds; per-image figures in ms) and the
    ratios between those measured."""
    inputs = work / "inputs.npy"
    _inputs(model, whc, max(n_calib, n_images), calib_dir, inputs)
    folder = work / "out"
    kw = dict(root=str(ROOT), inputs=str(inputs), model=model, whc=whc)
    r: dict = {"model": model, "input": whc, "calib_inputs": n_calib}
    if "compile" in only:
        comp = _median(_TCCC_COMPILE.format(n=n_calib, table="", **kw), repeat)
        r["compile_s"] = round(comp["s"], 2)
        r["compile_cpu_s"] = round(comp["cpu_s"], 2)
        r["compile_stages_s"] = comp["stages"]
        r["compile_peak_rss_mib"] = round(comp["rss_mib"], 1)
    if "ort_quantize" in only:
        ortq = _median(_ORT_QUANTIZE.format(n=n_calib, out=str(work / "q.onnx"), **kw), repeat)
        r["ort_quantize_static_s"] = round(ortq["s"], 2)
        r["ort_quantize_static_cpu_s"] = round(ortq["cpu_s"], 2)
    if "compile" in only and "ort_quantize" in only:
        r["compile_over_ort"] = round(comp["s"] / ortq["s"], 2)
    if not set(only) & {"compile_no_calibration", "executor", "run_check"}:
        return r
    # the table of one compile, for the no-calibration figure and the run figures
    m = _compile_once(model, whc, inputs, n_calib)
    m.save(folder)
    table = f", calib_table={str(folder / 'calib_table.json')!r}"
    if "compile_no_calibration" in only:
        nocal = _median(_TCCC_COMPILE.format(n=0, table=table, **kw), repeat)
        r["compile_no_calibration_s"] = round(nocal["s"], 2)
        r["compile_no_calibration_cpu_s"] = round(nocal["cpu_s"], 2)
        r["compile_no_calibration_stages_s"] = nocal["stages"]
    for name, check in (("executor", False), ("run_check", True)):
        if name in only:
            got = _median(_TCCC_RUN.format(folder=str(folder), check=check, n=n_images, **kw),
                          repeat)
            r[f"{name}_ms"] = round(1e3 * got["s"], 1)
    if "ort_fp32" in only:
        ort = _median(_ORT_RUN.format(n=n_images, **kw), repeat)
        r["ort_fp32_ms"] = round(1e3 * ort["s"], 1)
        for name in ("executor", "run_check"):
            if f"{name}_ms" in r:
                r[f"{name}_over_ort"] = round(r[f"{name}_ms"] / r["ort_fp32_ms"], 2)
    return r


def _compile_once(model: str, whc: str, inputs: Path, n: int):
    import numpy as np

    from tcc_compiler import api

    xs = list(np.load(inputs))[:n]
    return api.compile(model, whc, calibration=[x[None] for x in xs])


def _resolve(item: str, work: Path) -> tuple[str, str]:
    """``NAME:WxHxC`` (a zoo name or an .onnx path) -> (model path, WxHxC)."""
    name, whc = item.rsplit(":", 1)
    if name.endswith(".onnx"):
        return name, whc
    from tcc_compiler import zoo
    from tcc_compiler.frontend import parse_input_spec

    w, h, c = parse_input_spec(whc)
    path = work / f"{name}-{whc}.onnx"
    zoo.save(name, path, width=w, height=h, channels=c)
    return str(path), whc


def main(argv=None) -> int:
    """Print one line per model (and JSON with --json)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["resnet50:224x224x3"],
                   help="NAME:WxHxC items (zoo names or .onnx paths)")
    p.add_argument("--calib", type=int, default=8, help="calibration inputs")
    p.add_argument("--calib-dir", help="calibration images (default: bundled photos)")
    p.add_argument("--images", type=int, default=8, help="images timed per run figure")
    p.add_argument("--repeat", type=int, default=3, help="processes per figure (median)")
    p.add_argument("--json", help="also write the results to this file")
    p.add_argument("--only", nargs="+", choices=FIGURES, default=FIGURES,
                   help="measure only these figures (default: all)")
    args = p.parse_args(argv)
    print("NOTE: ratios to ONNX Runtime are meaningful only on an idle machine (ORT's threads "
          "slow down far more under load).", file=sys.stderr)
    results = []
    for item in args.models:
        before = load_avg()
        with tempfile.TemporaryDirectory(prefix="tccc-speed-") as tmp:
            model, whc = _resolve(item, Path(tmp))
            r = bench_model(model, whc, args.calib, args.images, args.repeat, args.calib_dir,
                            Path(tmp), args.only)
        r["load_avg"] = [before, load_avg()]
        r["kernels"] = kernel_set()
        cores = os.cpu_count() or 1
        r["loaded"] = before > 0.5 * cores or r["load_avg"][1] > 1.5 * cores
        results.append(r)
        print(json.dumps(r))
        print("\n".join(target_lines(r)))
        sys.stdout.flush()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
