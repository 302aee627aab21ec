"""The compiler driver: one readable list of stages.

    import_onnx -> float passes -> calibrate -> quantize -> lower (tile + schedule) -> emit

:func:`compile_model` returns a :class:`CompiledArtifacts` holding both binaries, the manifest,
the report and the quantized IR; :mod:`tcc_compiler.api` wraps it for users.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import zlib
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import onnx

from tcc_compiler import __version__
from tcc_compiler.binfmt.cmdfile import write_cmd_file
from tcc_compiler.binfmt.weightfile import compression_summary, write_weight_file
from tcc_compiler.errors import InputError
from tcc_compiler.fsutil import file_sha256
from tcc_compiler.frontend import import_onnx, parse_input_spec
from tcc_compiler.ir.graph import Graph
from tcc_compiler.ir.ops import HOST_OPS, Op
from tcc_compiler.ir.verify import verify
from tcc_compiler.isa.spec import Queue
from tcc_compiler.frontend.tir_import import is_ir_file, load_resume_point
from tcc_compiler.passes import PassManager, default_pipeline
from tcc_compiler.passes.summary import fusion_summary, source_table
from tcc_compiler.passes.instruments import IMPORT_STAGE, QUANTIZE_STAGE
from tcc_compiler.quant import quantize_graph
from tcc_compiler.quant.bias_correction import correct_biases
from tcc_compiler.quant.calib_table import build_table, check_covers, read_table
from tcc_compiler.quant.calibrate import DEFAULT_PERCENTILE, observe
from tcc_compiler.schedule import Program, lower, replay
from tcc_compiler.schedule import report as perf_report
from tcc_compiler.target import Target, load_target

log = logging.getLogger(__name__)

CMD_FILE = "npu_cmd.bin"
WEIGHT_FILE = "quantized_network.bin"
MANIFEST_FILE = "manifest.json"
REPORT_FILE = "report.json"
#: Per-layer table of report.json as CSV (:func:`tcc_compiler.schedule.report.to_csv`).
REPORT_CSV_FILE = "report.csv"
IR_FILE = "quantized.tir"


@dataclass
class CompiledArtifacts:
    """Everything one compilation produces.

    Attributes:
        cmd_bin, weight_bin: the two NPU binaries (bytes).
        manifest, report: JSON-ready dicts.
        graph: the quantized graph IR. float_graph: the float graph after passes.
        program: the lowered program (commands with comments, layer table).
        target: the target compiled for.
    """

    cmd_bin: bytes
    weight_bin: bytes
    manifest: dict
    report: dict
    graph: Graph
    float_graph: Graph
    program: Program
    target: Target
    ir_dumps: dict = field(default_factory=dict)
    calib_table: dict | None = None     # tensor -> range table (quant/calib_table.py)


def _model_bytes_sha(model) -> str:
    if isinstance(model, (str, os.PathLike)):
        return file_sha256(model)
    return hashlib.sha256(model.SerializeToString()).hexdigest()


def default_calibration(graph: Graph, preprocess) -> tuple[list[np.ndarray], str]:
    """Calibration inputs from the photos bundled with the package (see data/photos)."""
    from tcc_compiler.datasets.images import IMAGE_CHANNELS, bundled_photos, load_inputs

    c = graph.inputs[0].shape[1]
    if c not in IMAGE_CHANNELS:  # 1 and 3 load as greyscale / colour (Preprocess.channels)
        raise InputError(f"the model takes {c} channels; the bundled calibration photos load "
                         "as 1 or 3 channels - give calibration/--calib .npy arrays")
    paths = bundled_photos("calib")
    return load_inputs(paths, preprocess, tuple(graph.inputs[0].shape)), \
        f"{len(paths)} bundled photos (tcc_compiler/data/photos/calib)"


def resolve_calibration(items, graph: Graph, preprocess) -> tuple[list[np.ndarray], str]:
    """Turn image paths, folders, .npy paths and arrays into float32 input arrays.

    Raises:
        InputError: unreadable files, wrong shapes, NaN/Inf values, nothing given.
    """
    from tcc_compiler.datasets.images import load_inputs

    shape = tuple(graph.inputs[0].shape)
    paths = [c for c in items if not isinstance(c, np.ndarray)]
    arrays = []
    for k, a in enumerate(c for c in items if isinstance(c, np.ndarray)):
        a = np.asarray(a, np.float32)
        if a.shape != shape:
            raise InputError(f"calibration array {k}: shape {a.shape}, model expects {shape}")
        arrays.append(a)
    if paths:
        arrays += load_inputs(paths, preprocess, shape)
    if not arrays:
        raise InputError("calibration/--calib: no calibration inputs given")
    desc = ", ".join(str(p) for p in paths) if paths else f"{len(arrays)} arrays"
    return arrays, desc


def _host_ops(graph: Graph) -> list[dict]:
    out = []
    for n in graph.nodes:
        if n.op in HOST_OPS:
            out.append({"op": n.op.value, "input": n.inputs[0].name, "output": n.output.name,
                        "axis": n.attrs.axis, "keepdims": n.attrs.keepdims,
                        "source": list(n.source)})
    return out


def compile_model(model: str | os.PathLike | onnx.ModelProto,
                  input_whc: str | tuple[int, int, int] | None = None,
                  calibration: Sequence[object] | None = None,
                  method: str = "mse",
                  target: str | Target | None = None,
                  preprocess=None,
                  verify_ir: bool = False,
                  instruments=None,
                  progress=None,
                  percentile: float = DEFAULT_PERCENTILE,
                  calib_table: str | os.PathLike | None = None,
                  bias_correction: bool = False,
                  compress_weights: bool = True) -> CompiledArtifacts:
    """Compile an ONNX image model for the NPU.

    Args:
        model: .onnx path or ModelProto, or a ``.tir`` IR file (a ``--dump-ir`` dump or a
            ``quantized.tir``): compilation resumes after the stage it records.
        input_whc: "WxHxC" or (W, H, C); None to use the model's fixed input dims.
        calibration: image paths, folders, .npy paths or float32 arrays shaped like the input;
            None = the photos bundled with the package.
        method: calibration method (see :data:`tcc_compiler.quant.METHODS`).
        target: target name, .toml path or :class:`Target`; None = tcc750x.
        preprocess: :class:`tcc_compiler.datasets.images.Preprocess` recorded in the manifest
            (None = ImageNet mean/std at the input size).
        verify_ir: run the IR verifier after every pass and after quantization.
        instruments: pass-manager instruments (IR printing/dumps).
        progress: optional iterable wrapper for calibration progress (tqdm).
        percentile: p of the "percentile" method (default 99.99).
        calib_table: a calibration table (``calib_table.json`` of an earlier compile, maybe
            edited) whose ranges replace calibration; the table used is always returned in
            ``CompiledArtifacts.calib_table`` and saved with the outputs.
        bias_correction: fold each conv/fc's mean per-channel error on the calibration inputs
            into its bias (quant/bias_correction.py; needs calibration inputs).
        compress_weights: store weights and parameters DEFLATE-compressed per channel block
            (specs/weights.md; loaded by DMA_LOAD_Z); False stores them raw.

    Returns:
        :class:`CompiledArtifacts`.

    Raises:
        TccError subclasses: bad model/options (InputError, ModelError, UnsupportedError),
        an op that cannot be tiled (ScheduleError).
    """
    from tcc_compiler.datasets.images import Preprocess

    t_start = time.perf_counter()
    tgt = target if isinstance(target, Target) else load_target(target)
    if input_whc is not None:  # "WxHxC" or (W, H, C): the same checks and messages
        input_whc = parse_input_spec(input_whc)
    timings = {}

    t0 = time.perf_counter()
    if is_ir_file(model):  # resume from a dump (see tcc_compiler/frontend/tir_import.py)
        graph, passes = load_resume_point(model, input_whc)
    else:
        graph, passes = import_onnx(model, input_whc), default_pipeline()
        _instrument(instruments, IMPORT_STAGE, "after", -1, graph)
    timings["import_s"] = time.perf_counter() - t0
    _log_import(model, graph, timings["import_s"])

    t0 = time.perf_counter()
    sources = source_table(graph)  # provenance snapshot for the fusion summary
    pm = PassManager(passes, verify_each=verify_ir, instruments=instruments)
    graph = pm.run(graph)
    timings["passes_s"] = time.perf_counter() - t0
    float_graph = graph.clone()
    fusion = fusion_summary(sources, float_graph)
    _log_passes(pm, fusion, timings["passes_s"])
    check_memory(graph, model)

    n, c, h, w = graph.inputs[0].shape
    if preprocess is None:
        # images load as greyscale for C=1; other C != 3 take only .npy inputs (load_inputs)
        preprocess = Preprocess(width=w, height=h, channels=c if c == 1 else 3)
    t0 = time.perf_counter()
    if graph.meta.get("quantized"):  # resumed from a quantized .tir: nothing to calibrate
        ignored = [opt for opt, given in (
            ("calibration/--calib", calibration is not None), ("method/--calib-method",
                                                                method != "mse"),
            ("calib_table/--calib-table", calib_table is not None),
            ("bias_correction/--bias-correction", bias_correction)) if given]
        if ignored:
            log.warning("%s is already quantized; %s ignored (compile the .onnx, or a dump "
                        "from before the quantize stage, to calibrate again)", model,
                        ", ".join(ignored))
        calibration, calib_source = [], f"none ({model} was already quantized)"
        table = None
    else:
        if calib_table is not None:  # ranges from a (maybe edited) table: no calibration run
            table, ranges = read_table(calib_table)
            check_covers(ranges, [graph.inputs[0].name] + [
                n.output.name for n in graph.nodes if n.op in (Op.CONV, Op.FC, Op.ADD)],
                calib_table)
            calibration, calib_source = [], f"table {calib_table}"
            method = str(table.get("method", "table"))
        else:
            if calibration is None:
                calibration, calib_source = default_calibration(graph, preprocess)
            else:
                calibration, calib_source = resolve_calibration(calibration, graph, preprocess)
            obs = observe(graph, calibration, [method], percentile, progress)[method]
            ranges = {k: o.range() for k, o in obs.items()}
            table = build_table(obs, method, percentile)
        timings["calibration_s"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        _instrument(instruments, QUANTIZE_STAGE, "before", len(passes), graph)
        quantize_graph(graph, ranges)
        if bias_correction:
            if not calibration:
                raise InputError("bias_correction/--bias-correction needs calibration inputs "
                                 "(calibration/--calib), not only a calib_table/--calib-table")
            correct_biases(float_graph, graph, calibration)
        if verify_ir:
            verify(graph, quantized=True)
        _instrument(instruments, QUANTIZE_STAGE, "after", len(passes), graph)
    timings["quantize_s"] = time.perf_counter() - t0
    if log.isEnabledFor(logging.INFO):
        log.info("quantize: method %s, %d calibration input(s) from %s (%.2f s)", method,
                 len(calibration), calib_source,
                 timings.get("calibration_s", 0.0) + timings["quantize_s"])

    t0 = time.perf_counter()
    program = lower(graph, tgt, compress_weights=compress_weights)
    weight_bin = write_weight_file(program.weights, __version__)
    cmd_bin = write_cmd_file(program.commands, sram_bytes=program.sram_bytes,
                             act_arena_bytes=program.act_arena_bytes,
                             input_bytes=program.input_bytes, output_bytes=program.output_bytes,
                             tool_version=__version__, slots=program.slots)
    timings["schedule_emit_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - t_start

    src = model if isinstance(model, (str, os.PathLike)) else None
    manifest = build_manifest(graph, program, tgt, cmd_bin, preprocess, method,
                              len(calibration), calib_source, src, _model_bytes_sha(model),
                              weight_bin)
    report = build_report(graph, program, tgt, cmd_bin, pm, timings, weight_bin)
    report["fusion"] = fusion
    _log_schedule_emit(report, timings, len(weight_bin))
    return CompiledArtifacts(cmd_bin, weight_bin, manifest, report, graph,
                             float_graph, program, tgt, calib_table=table)


#: Peak compile memory per byte of float32 activations (sum over every node's output). Measured
#: with `/usr/bin/time -f %M tccc compile` on the zoo resnet18: 448x448 (43 MB of activations)
#: peaked at 509 MB, 960x520 (107 MB) at 849 MB, i.e. ~5.3 B per activation byte on top of a
#: ~280 MB base; the tester's 2048x2048 resnet run reached 8.8 GB (~10 B per byte). 10 keeps
#: the estimate on the safe side of both.
MEMORY_PER_ACTIVATION_BYTE = 10


def available_memory_bytes() -> int | None:
    """MemAvailable from /proc/meminfo in bytes (Linux); None when it cannot be read."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def estimate_compile_memory(graph: Graph) -> tuple[int, int]:
    """Estimated peak memory (bytes) of calibrating and quantizing ``graph``, and the float32
    activation bytes it is based on (every node output, NCHW float32, as the float
    interpreter and the calibration observers hold them); see
    :data:`MEMORY_PER_ACTIVATION_BYTE`."""
    act = sum(int(np.prod(n.output.shape, dtype=np.int64)) * 4 for n in graph.nodes)
    return act * MEMORY_PER_ACTIVATION_BYTE, act


def check_memory(graph: Graph, model) -> None:
    """Refuse up front a compile that would run out of memory (the kernel used to kill it
    without a message, exit 137, after minutes of swapping).

    Raises:
        InputError: :func:`estimate_compile_memory` exceeds MemAvailable; the message names the
            input size, the estimate and the memory available.
    """
    need, act = estimate_compile_memory(graph)
    avail = available_memory_bytes()
    log.debug("memory estimate: %.2f GB (%.2f GB of float activations), available %s", need /
              1e9, act / 1e9, "unknown" if avail is None else f"{avail / 1e9:.2f} GB")
    if avail is None or need <= avail:
        return
    _, c, h, w = graph.inputs[0].shape
    src = model if isinstance(model, (str, os.PathLike)) else graph.name
    raise InputError(f"{src}: input {w}x{h}x{c} needs about {need / 1e9:.1f} GB of memory to "
                     f"calibrate and quantize ({act / 1e9:.2f} GB of float activations), more "
                     f"than the {avail / 1e9:.1f} GB available; use a smaller input_shape/--input")


def _instrument(instruments, stage: str, when: str, index: int, graph: Graph) -> None:
    """Call the pass-manager instruments for a stage that is not a pass (import, quantize)."""
    for inst in instruments or []:
        inst(stage, when, index, graph)


# INFO lines (``tccc -v``) on what each stage did, logged as soon as the stage ends so a long
# compile shows its progress live; quiet at the default WARNING level.

def _log_import(model, graph: Graph, seconds: float) -> None:
    """The ``import:`` line: source, opset, input name and NCHW shape, wall time (s)."""
    if not log.isEnabledFor(logging.INFO):
        return
    src = model if isinstance(model, (str, os.PathLike)) else graph.name
    log.info("import: %s: opset %s, input %s %s (%.2f s)", src, graph.meta.get("opset"),
             graph.inputs[0].name, list(graph.inputs[0].shape), seconds)


def _log_passes(pm: PassManager, fusion: dict, seconds: float) -> None:
    """The ``passes:`` line: rewrites fired, compute nodes -> NPU ops, wall time (s)."""
    if not log.isEnabledFor(logging.INFO):
        return
    fired = ", ".join(f"{k} {v}" for k, v in pm.stats.fired.items() if v) or "none"
    fused = ", ".join(f"{v} {k}" for k, v in sorted(fusion.get("fused_away", {}).items()))
    log.info("passes: rewrites fired: %s; %s compute nodes -> %s NPU ops (fused away: %s; "
             "%.2f s)", fired, fusion.get("compute_nodes", "?"), fusion.get("npu_ops", "?"),
             fused or "nothing", seconds)


def _log_schedule_emit(report: dict, timings: dict, weight_bytes: int) -> None:
    """The ``schedule:`` and ``emit:`` lines (tiles, SRAM bytes, latency, container sizes)."""
    if not log.isEnabledFor(logging.INFO):
        return
    layers = report.get("layers", [])
    log.info("schedule: %d layers, %d tiles, SRAM used %s B, estimated %.3f ms "
             "(%s cycles; %.2f s)", len(layers), sum(int(x.get("tiles", 0)) for x in layers),
             f"{report.get('sram_bytes', 0):,}", report.get("estimated_latency_ms", 0.0),
             f"{report.get('estimated_cycles', 0):,}", timings.get("schedule_emit_s", 0.0))
    log.info("emit: npu_cmd.bin %s B (%s commands), quantized_network.bin %s B",
             f"{report.get('command_bytes', 0):,}", report.get("commands", "?"),
             f"{weight_bytes:,}")


def _io_dict(io) -> dict:
    return {"name": io.name, "shape": list(io.shape), "npu_hwc": list(io.hwc),
            "npu_layout": "NHWC", "dtype": io.dtype, "region": io.region.name,
            "offset": io.offset, "scale": io.scale, "zero_point": io.zero_point}


def build_manifest(graph: Graph, program: Program, tgt: Target, cmd_bin: bytes, preprocess,
                   method: str, n_calib: int, calib_source: str, source, sha: str,
                   weight_bin: bytes | None = None) -> dict:
    """The manifest: everything a host runtime needs to feed and read the NPU program
    (``weight_bin``: its quantized_network.bin, written from ``program.weights`` if None)."""
    if weight_bin is None:
        weight_bin = write_weight_file(program.weights, __version__)
    inp = dict(_io_dict(program.inputs[0]))
    inp["onnx_layout"] = graph.meta.get("input_layout", "NCHW")
    inp["onnx_name"] = graph.meta.get("onnx_input", inp["name"])
    inp["quantize"] = "q = clamp(rint(x / scale) + zero_point, -128, 127), NHWC"
    return {
        "format": "tccc-manifest",
        "manifest_version": 1,
        "tool": "tccc",
        "tool_version": __version__,
        "model": {"source": str(source) if source else graph.name, "sha256": sha,
                  "opset": graph.meta.get("opset")},
        "target": {"name": tgt.name, "sram_bytes": tgt.sram_bytes,
                   "macs_per_cycle": tgt.macs_per_cycle, "clock_hz": tgt.clock_hz},
        "files": {
            CMD_FILE: {"bytes": len(cmd_bin), "crc32": zlib.crc32(cmd_bin)},
            WEIGHT_FILE: {"bytes": len(weight_bin),
                          "crc32": zlib.crc32(weight_bin),
                          "compression": compression_summary(weight_bin)},
        },
        "dram": {"act_arena_bytes": program.act_arena_bytes,
                 "input_bytes": program.input_bytes, "output_bytes": program.output_bytes},
        "input": inp,
        "outputs": [_io_dict(o) for o in program.outputs],
        "graph_outputs": [o.name for o in graph.outputs],
        "host_ops": _host_ops(graph),
        "preprocess": preprocess.to_dict(),
        "calibration": {"method": method, "inputs": n_calib, "source": calib_source},
    }


def _weight_raw(li) -> dict:
    """``weight_raw_bytes`` (weights + params before compression, bytes) and ``weight_ratio``
    (bytes in quantized_network.bin / raw, as ``tccc inspect --csv`` gives) of a layer with
    weights (a LayerInfo); {} without."""
    if not li.weight_raw_bytes:
        return {}
    return {"weight_raw_bytes": li.weight_raw_bytes,
            "weight_ratio": round(li.weight_file_bytes / li.weight_raw_bytes, 4)}


def build_report(graph: Graph, program: Program, tgt: Target, cmd_bin: bytes, pm: PassManager,
                 timings: dict, weight_bin: bytes | None = None) -> dict:
    """The compile report: sizes, MACs, estimated cycles per layer and in total
    (``weight_bin``: the program's quantized_network.bin, written if None)."""
    if weight_bin is None:
        weight_bin = write_weight_file(program.weights, __version__)
    spans = replay(program.commands, tgt)
    total_cycles = spans[-1][1] if spans else 0
    layers = []
    for li in program.layers:
        if li.cmds is not None:
            # a cascaded op's commands interleave with its chain's, so its wall-clock span
            # overlaps the others': count the cycles its own compute commands are busy
            own = [i for i in li.cmds if program.commands[i].queue is Queue.COMPUTE]
            cycles = sum(spans[i][1] - spans[i][0] for i in own)
            n_cmds = len(li.cmds)
        else:
            seg = spans[li.first_cmd:li.end_cmd]
            cycles = max(e for _, e in seg) - min(s for s, _ in seg)
            n_cmds = li.end_cmd - li.first_cmd
        layers.append({
            "name": li.name, "op": li.kind, "source": list(li.source),
            "input_shape": list(li.in_shape), "output_shape": list(li.out_shape),
            "tiles": li.tiles, "macs": li.macs, "estimated_cycles": cycles,
            "commands": n_cmds, "weight_bytes": li.weight_bytes,
            **_weight_raw(li),
            "sram_bytes": li.sram_bytes, "tiling": li.plan,
            **perf_report.layer_dram(program, li),
            "mac_utilisation": round(perf_report.utilisation(li.macs, cycles, tgt), 4),
        })
    macs = sum(li.macs for li in program.layers)
    dram_rd, dram_wr = perf_report.dram_bytes(program.commands)
    min_dram = (sum(li.weight_bytes for li in program.layers) + program.input_bytes
                + program.output_bytes)
    counts: dict[str, int] = {}
    for li in program.layers:
        counts[li.kind] = counts.get(li.kind, 0) + 1
    return {
        "tool_version": __version__,
        "target": tgt.name,
        "command_bytes": len(cmd_bin),
        "weight_bytes": len(weight_bin),
        "weight_compression": compression_summary(weight_bin),
        "commands": len(program.commands),
        "macs": macs,
        "estimated_cycles": total_cycles,
        "estimated_latency_ms": total_cycles / tgt.clock_hz * 1e3,
        "sram_bytes": program.sram_bytes,
        "dram_activation_bytes": program.act_arena_bytes,
        "dram_read_bytes": dram_rd,
        "dram_write_bytes": dram_wr,
        "minimal_dram_bytes": min_dram,
        "mac_utilisation": round(perf_report.utilisation(macs, total_cycles, tgt), 4),
        "roofline": perf_report.roofline(macs, min_dram, tgt),
        "capacity_bound": perf_report.capacity_bound(
            [li.macs for li in program.layers], [li.weight_bytes for li in program.layers],
            tgt, [li.name for li in program.layers]),
        "npu_ops": counts,
        "layers": layers,
        "passes": {"seconds": pm.stats.seconds, "fired": pm.stats.fired},
        "compile_seconds": timings,
    }
