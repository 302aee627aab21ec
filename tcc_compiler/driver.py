"""The compiler driver: the one pipeline, its stages listed once.

    import_model -> run_float_passes -> calibrate -> quantize -> lower_program -> emit

Each stage is a function below; :func:`compile_model` calls them in that order with one
:class:`~tcc_compiler.options.CompileOptions`. ``tccc ir print``, ``tccc analyze``,
:func:`tcc_compiler.placement.partition` and the test fixtures call the same stage functions
for the part of the pipeline they need, so the pipeline is assembled here only.
:mod:`tcc_compiler.api` wraps :func:`compile_model` for users; :mod:`tcc_compiler.emit` builds
the manifest and report and writes the output folder.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import onnx

from tcc_compiler.version import __version__
from tcc_compiler.datasets.calibration import default_calibration, resolve_calibration
from tcc_compiler.datasets.images import Preprocess
from tcc_compiler.datasets.presets import PreprocessSettings
from tcc_compiler.emit.binaries import encode_binaries
from tcc_compiler.emit.manifest import build_manifest
from tcc_compiler.emit.report import build_report
from tcc_compiler.emit.stream import stream_files
from tcc_compiler.emit.trace import chrome_trace
from tcc_compiler.errors import InputError, UnsupportedError
from tcc_compiler.frontend import import_onnx, parse_input_spec
from tcc_compiler.frontend.onnx_import import check_npu_work, is_segment
from tcc_compiler.frontend.tir_import import check_ir_graph, is_ir_file
from tcc_compiler.fsutil import file_sha256
from tcc_compiler.ir.graph import Graph
from tcc_compiler.ir.ops import Op
from tcc_compiler.interp.memory import constant_bytes, estimate_compile_memory
from tcc_compiler.ir.verify import verify
from tcc_compiler.options import DEFAULTS, CompileOptions, make_options
from tcc_compiler.passes import Pass, PassManager, default_pipeline
from tcc_compiler.passes.legalize import Legalize, field_problems
from tcc_compiler.passes.instruments import (AFTER_PASS_META, IMPORT_STAGE, QUANTIZE_STAGE,
                                             make_instruments)
from tcc_compiler.passes.summary import fusion_summary, source_table
from tcc_compiler.quant import quantize_graph
from tcc_compiler.emit.precision import precision_report
from tcc_compiler.quant.auto_precision import (PrecisionChoice, check_precision,
                                               choose_precision, split_precision)
from tcc_compiler.quant.bias_correction import correct_biases
from tcc_compiler.quant.precision import FILE_KEY, WEIGHTS_KEY, layer_nodes
from tcc_compiler.quant.calib_table import add_fixed, build_table, check_covers, read_table
from tcc_compiler.quant.calibrate import observe
from tcc_compiler.quant.lut_ranges import lut_input_ranges
from tcc_compiler.quant.quantize import fixed_ranges, ranges_needed
from tcc_compiler.quant.ranges import choose_ranges, snap_input_range
from tcc_compiler.quant.weight_rounding import (WEIGHT_ROUNDING, HessianSum,
                                                gptq_round_weights)
from tcc_compiler.schedule import Program, lower
from tcc_compiler.schedule.timeline import timeline
from tcc_compiler.numerics.blas import blas_threads
from tcc_compiler.target import Target, load_target

log = logging.getLogger(__name__)

#: A pass-manager instrument: ``(stage, "before"|"after", index, graph) -> None``.
Instrument = Callable[[str, str, int, Graph], None]


@dataclass
class CompiledArtifacts:
    """Everything one compilation produces.

    Attributes:
        cmd_bin, weight_bin: the two NPU binaries (bytes).
        manifest, report: JSON-ready dicts.
        graph: the quantized graph IR. float_graph: the float graph after passes.
        program: the lowered program (commands with comments, layer table).
        target: the target compiled for. extra_files: more binaries by file name (``--cores
            2``: the stream program's, emit/stream.py).
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
    trace: dict | None = None           # timeline.json (emit/trace.py)
    extra_files: dict = field(default_factory=dict)


@dataclass(frozen=True)
class FloatGraph:
    """What :func:`run_float_passes` returns.

    Attributes:
        graph: the float graph after the passes (NCHW input, the ops the NPU runs).
        pass_manager: the manager that ran them (``stats``: seconds and rewrites fired).
        fusion: the fusion summary (compute nodes -> NPU ops, what fused away).
    """

    graph: Graph
    pass_manager: PassManager
    fusion: dict


@dataclass(frozen=True)
class Calibration:
    """What :func:`calibrate` returns.

    Attributes:
        method: the calibration method used (the table's for ``calib_table``).
        inputs: the float32 NCHW calibration arrays, a sequence that may decode each image
            when read ([] with a table or a quantized graph).
        source: where they came from, for the manifest and the ``-v`` log.
        ranges: {value name: (lo, hi)} in real units; None when the graph is already
            quantized (nothing to quantize).
        table: the calibration table written as calib_table.json, or None.
        minmax: {value name: observed (min, max)} (the ranges of int16 tensors), or None
            (from a table).
        hessians: GPTQ's input second moments, gathered in the calibration pass when the
            weight rounding needs them, or None.
    """

    method: str
    inputs: list
    source: str
    ranges: dict | None
    table: dict | None
    minmax: dict | None = None
    hessians: HessianSum | None = None


def _model_bytes_sha(model) -> str:
    if isinstance(model, (str, os.PathLike)):
        return file_sha256(model)
    return hashlib.sha256(model.SerializeToString()).hexdigest()


# ---- the pipeline ---------------------------------------------------------------------------

def compile_model(model: str | os.PathLike | onnx.ModelProto,
                  options: CompileOptions | None = None, *,
                  instruments: Sequence[Instrument] | None = None,
                  progress: Callable | None = None, **settings: Any) -> CompiledArtifacts:
    """Compile an ONNX image model for the NPU: the stages below, in order.

    Args:
        model: .onnx path or ModelProto, or a ``.tir`` IR file (a ``--dump-ir`` dump or a
            ``quantized.tir``): compilation resumes after the stage it records.
        options: every compile setting (:class:`CompileOptions`; None = the defaults).
        instruments: extra pass-manager instruments (run before the IR printers/dumps the
            options ask for).
        progress: optional iterable wrapper for calibration progress (tqdm).
        settings: :class:`CompileOptions` fields overriding ``options`` (``input_whc=...``).

    Returns:
        :class:`CompiledArtifacts`; for a model the NPU cannot run whole (and
        ``options.strict`` off) :class:`tcc_compiler.segmenting.build.SegmentedArtifacts`:
        one NPU program per NPU segment, one ONNX model per host segment.

    Raises:
        TccError subclasses: bad model/options (InputError, ModelError, UnsupportedError:
        with ``strict``, or nodes that neither the NPU nor ONNX Runtime runs), an op that
        cannot be tiled (ScheduleError).
    """
    opts = make_options(options, **settings)
    instruments = list(instruments or []) + make_instruments(
        opts.dump_ir, opts.print_ir_before, opts.print_ir_after)
    t_start = time.perf_counter()
    tgt = opts.target if isinstance(opts.target, Target) else load_target(opts.target)
    check_cores(opts.cores, tgt)   # before any work
    timings = {}

    try:
        t0 = time.perf_counter()
        graph, passes = import_model(model, opts.input_whc, instruments)
        timings["import_s"] = time.perf_counter() - t0
        _log_import(model, graph, timings["import_s"])

        t0 = time.perf_counter()
        fg = run_float_passes(graph, passes, verify_ir=opts.verify_ir, instruments=instruments)
        check_npu_work(fg.graph)  # tccc ops (placement.partition) makes the same check
        timings["passes_s"] = time.perf_counter() - t0
    except UnsupportedError as exc:
        if opts.strict or is_ir_file(model) or is_segment(model):
            raise
        from tcc_compiler.segmenting.build import compile_segmented

        log.info("%s: the NPU cannot run the whole model (%s); compiling NPU and host "
                 "segments", model if isinstance(model, (str, os.PathLike)) else "model",
                 exc.problems[0] if exc.problems else exc)
        return compile_segmented(model, opts, progress=progress)
    graph, float_graph = fg.graph, fg.graph.clone()
    _log_passes(fg.pass_manager, fg.fusion, timings["passes_s"])
    check_memory(graph, model)

    preprocess = preprocess_for(graph, opts)
    given = split_precision(opts.precision)
    if is_segment(model) and given is not None:
        # one NPU segment of a segmented model: its own layers of the names given (the
        # segmented build checks every name belongs to some segment)
        own = layer_nodes(graph)
        opts = opts.with_(precision={FILE_KEY: [n for n in given[0] if n in own],
                                     WEIGHTS_KEY: [n for n in given[1] if n in own]})
    if not graph.meta.get("quantized"):
        check_precision(graph, opts.precision, opts.precision_goal_db)   # before calibrating
    # one BLAS thread: calibration and GPTQ parallelise over values and layers on threads of
    # their own, and OpenBLAS's threads on their small GEMMs and Cholesky factors only spin
    # and fight (sim/blas.py); the results then no longer depend on the core count either
    with blas_threads(1):
        t0 = time.perf_counter()
        calib = calibrate(graph, opts, preprocess, progress=progress, model=model)
        choice = None
        if calib.ranges is not None:
            timings["calibration_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            choice = quantize(graph, float_graph, calib, opts, instruments, len(passes))
        timings["quantize_s"] = time.perf_counter() - t0
    _log_quantize(calib, timings)

    t0 = time.perf_counter()
    program = lower_program(graph, tgt, opts)
    binaries = encode_binaries(program, __version__)
    timings["schedule_emit_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - t_start
    art = emit(model, graph, float_graph, program, binaries, tgt, preprocess, calib, fg,
               timings)
    if choice is not None and choice.mode != "int8":
        art.report["precision"] = precision_report(choice, art.report, float_graph,
                                                   calib.ranges, tgt, opts.compress_weights,
                                                   program)
    return art


def import_model(model: str | os.PathLike | onnx.ModelProto,
                 input_whc: str | tuple[int, int, int] | None = None,
                 instruments: Sequence[Instrument] | None = None) -> tuple[Graph, list[Pass]]:
    """Stage 1, import: an ONNX model into graph IR, or resume from a ``.tir`` dump.

    Args:
        model: .onnx path or ModelProto (imported by :func:`tcc_compiler.frontend.import_onnx`)
            or a ``.tir`` path (:func:`load_resume_point`).
        input_whc: "WxHxC" or (W, H, C); None = the model's fixed input dims.
        instruments: called with ``("import", "after", -1, graph)`` after an ONNX import.

    Returns:
        (graph, passes): the float (or, from a quantized ``.tir``, quantized) graph, and the
        float passes still to run on it (the whole default pipeline after an ONNX import).

    Raises:
        InputError, ModelError, UnsupportedError, FormatError: see the frontend.
    """
    if input_whc is not None:  # "WxHxC" or (W, H, C): the same checks and messages
        input_whc = parse_input_spec(input_whc)
    if is_ir_file(model):  # resume from a dump (see load_resume_point)
        return load_resume_point(model, input_whc)
    graph = import_onnx(model, input_whc)
    _instrument(instruments, IMPORT_STAGE, "after", -1, graph)
    return graph, default_pipeline()


def run_float_passes(graph: Graph, passes: Sequence[Pass] | None = None, *,
                     verify_ir: bool = DEFAULTS.verify_ir,
                     instruments: Sequence[Instrument] | None = None) -> FloatGraph:
    """Stage 2, float passes: fold BatchNorm, fuse, legalize (:func:`default_pipeline`).

    Args:
        graph: the imported float graph (changed in place and returned).
        passes: the passes to run (None = the default pipeline).
        verify_ir: run the IR verifier after every pass.
        instruments: pass-manager instruments (IR printing/dumps).

    Returns:
        :class:`FloatGraph` (graph, pass manager with its stats, fusion summary).

    Raises:
        UnsupportedError: the legalizer's list of ops the NPU cannot run.
        VerifyError: with ``verify_ir``, a pass broke an IR rule.
    """
    sources = source_table(graph)  # provenance snapshot for the fusion summary
    pm = PassManager(default_pipeline() if passes is None else list(passes),
                     verify_each=verify_ir, instruments=instruments)
    graph = pm.run(graph)
    return FloatGraph(graph, pm, fusion_summary(sources, graph))


def preprocess_for(graph: Graph, options: CompileOptions = DEFAULTS) -> Preprocess:
    """The image preprocessing recorded in the manifest and used on calibration images:
    ``options.preprocess`` (a :class:`Preprocess` as it is, or
    :class:`~tcc_compiler.datasets.presets.PreprocessSettings` resolved at the graph's input
    size), else ImageNet mean/std at the graph's input size.

    Raises:
        InputError: settings :class:`Preprocess` refuses (e.g. a mean of the wrong length).
    """
    if isinstance(options.preprocess, Preprocess):
        return options.preprocess
    n, c, h, w = graph.inputs[0].shape
    # images load as greyscale for C=1; other C != 3 take only .npy inputs (load_inputs)
    if isinstance(options.preprocess, PreprocessSettings):
        return options.preprocess.resolve(w, h, c)
    if options.preprocess is not None:
        raise InputError(f"preprocess: expected a Preprocess or PreprocessSettings, got "
                         f"{type(options.preprocess).__name__}")
    return Preprocess(width=w, height=h, channels=c if c == 1 else 3)


def calibrate(graph: Graph, options: CompileOptions, preprocess, *,
              progress: Callable | None = None, model: object = None) -> Calibration:
    """Stage 3, calibrate: activation ranges of the float graph on the calibration inputs
    (``options.calibration``, else the bundled photos), or from ``options.calib_table``.

    A graph that is already quantized (resumed from a quantized ``.tir``) is not calibrated:
    the returned ranges are None and calibration options given are ignored with a warning
    naming ``model``.

    Raises:
        InputError: unreadable or mis-shaped inputs, an unknown method, a table that does not
            cover the graph, both a table and calibration inputs.
    """
    if graph.meta.get("quantized"):  # resumed from a quantized .tir: nothing to calibrate
        ignored = [opt for opt, given in (
            ("calibration/--calib", options.calibration is not None),
            ("method/--calib-method", options.method != DEFAULTS.method),
            ("calib_table/--calib-table", options.calib_table is not None),
            ("bias_correction/--bias-correction", options.bias_correction),
            ("weight_rounding/--weight-rounding",
             options.weight_rounding != DEFAULTS.weight_rounding)) if given]
        if ignored:
            log.warning("%s is already quantized; %s ignored (compile the .onnx, or a dump "
                        "from before the quantize stage, to calibrate again)", model,
                        ", ".join(ignored))
        return Calibration(options.method, [], f"none ({model} was already quantized)",
                           None, None)
    needed = ranges_needed(graph)
    fixed = fixed_ranges(graph)
    where = model if isinstance(model, (str, os.PathLike)) else graph.meta.get("source",
                                                                              graph.name)
    if fixed and not needed:  # a fully pre-quantized model: its own parameters, exactly
        if options.calibration is not None or options.calib_table is not None:
            log.warning("%s fixes every quantization parameter (QDQ); calibration/--calib "
                        "and calib_table/--calib-table ignored", where)
        return Calibration("fixed", [], "the model's own quantization (QDQ)", {},
                           add_fixed(None, fixed))
    if fixed:  # calibrate only what the model leaves open, and say so
        log.warning("%s: %d tensor(s) have no quantization in the model and are calibrated: "
                    "%s", where, len(needed), ", ".join(needed[:5]) +
                    (", ..." if len(needed) > 5 else ""))
    if options.calib_table is not None and options.calibration is not None:
        raise InputError(f"{options.calib_table}: calib_table/--calib-table fixes every range, "
                         "so calibration/--calib inputs would be ignored: give one of the two")
    if options.calib_table is not None:  # ranges from a (maybe edited) table: no calibration
        table, ranges = read_table(options.calib_table)
        want = set(needed)
        check_covers(ranges, [n for n in [graph.inputs[0].name] + [
            n.output.name for n in graph.nodes if n.op in (Op.CONV, Op.FC, Op.ADD)]
            if n in want], options.calib_table)
        return Calibration(str(table.get("method", "table")), [],
                           f"table {options.calib_table}", ranges, table)
    return _calibrate_on_inputs(graph, options, preprocess, fixed, progress,
                                image_input=not is_segment(model))


def _calibrate_on_inputs(graph: Graph, options: CompileOptions, preprocess, fixed: dict,
                         progress: Callable | None, image_input: bool) -> Calibration:
    """:func:`calibrate` on the calibration inputs (``options.calibration``, else the bundled
    photos): observe, guarded ranges, the input's range on the pixel grid when
    ``image_input`` (not for an NPU segment, whose input is no image) and the table."""
    if options.calibration is None:
        inputs, source = default_calibration(graph, preprocess)
    else:
        inputs, source = resolve_calibration(options.calibration, graph, preprocess)
    method, p = options.method, options.percentile
    hess = _hessian_sum(graph, options.weight_rounding)
    obs = observe(graph, inputs, [method], p, progress,
                  also=getattr(hess, "visit", None))[method]
    ranges, rejected = choose_ranges(obs, method)   # the collapse guard warns per tensor
    if method == "mse":   # a table's input: the range that serves the table's output
        lut_input_ranges(graph, obs, ranges)
    minmax = {k: getattr(o, "mm", o).range() for k, o in obs.items()}
    if image_input:
        snap_input_range(ranges, minmax, graph.inputs[0].name, preprocess)
    table = build_table(obs, method, p, ranges, rejected)
    return Calibration(method, inputs, source, ranges,
                       add_fixed(table, fixed) if fixed else table, minmax, hess)


def _hessian_sum(graph: Graph, rounding: str) -> HessianSum | None:
    """The GPTQ second moments to gather in the calibration pass (``gptq``: the bounded
    layers, ``gptq-all``: every conv/fc), or None (``nearest``, or no layer to re-round)."""
    if rounding not in ("gptq", "gptq-all"):
        return None
    hess = HessianSum(graph, bounded=rounding != "gptq-all")
    return hess if hess.layers else None


def quantize(graph: Graph, float_graph: Graph, calib: Calibration,
             options: CompileOptions = DEFAULTS,
             instruments: Sequence[Instrument] | None = None,
             index: int = 0) -> PrecisionChoice:
    """Stage 4, quantize (in place): int8 weights and activations from ``calib.ranges`` (int16
    activations on the layers ``options.precision`` chooses,
    :func:`~tcc_compiler.quant.auto_precision.choose_precision`), int32
    biases, integer requantization; with ``options.weight_rounding`` "gptq" the int8 weights
    are re-rounded on the calibration inputs (:mod:`tcc_compiler.quant.weight_rounding`); with
    ``options.bias_correction`` each conv/fc's mean
    error on the calibration inputs is folded into its bias (``float_graph`` is the
    reference).

    Args:
        instruments, index: called with ``("quantize", "before"|"after", index, graph)``.

    Returns:
        The precision choice (which layers are int16; the report's ``precision``).

    Raises:
        InputError: bias correction or gptq rounding without calibration inputs, an unknown
            weight rounding, a bad ``options.precision`` (or ``auto`` without inputs).
        VerifyError: with ``options.verify_ir``, the quantized graph breaks an IR rule.
    """
    _instrument(instruments, QUANTIZE_STAGE, "before", index, graph)
    choice = choose_precision(float_graph, calib.ranges, calib.minmax, calib.inputs,
                              options.precision, options.precision_goal_db)
    quantize_graph(graph, calib.ranges, choice.int16_ranges, set(choice.plan.weight_layers))
    if options.weight_rounding not in WEIGHT_ROUNDING:
        raise InputError(f"weight_rounding/--weight-rounding '{options.weight_rounding}': "
                         f"choose one of {', '.join(WEIGHT_ROUNDING)}")
    _round_weights(graph, float_graph, calib, options.weight_rounding)
    if options.bias_correction:
        if not calib.inputs:
            raise InputError("bias_correction/--bias-correction needs calibration inputs "
                             "(calibration/--calib), not only a calib_table/--calib-table")
        correct_biases(float_graph, graph, calib.inputs)
    if options.verify_ir:
        verify(graph, quantized=True)
    _instrument(instruments, QUANTIZE_STAGE, "after", index, graph)
    return choice


def _round_weights(graph: Graph, float_graph: Graph, calib: Calibration, rounding: str) -> None:
    """GPTQ weight rounding on the calibration inputs, in place: ``gptq`` re-rounds the
    layers whose cost is bounded (:func:`~tcc_compiler.quant.weight_rounding.bounded_cost`),
    ``gptq-all`` every conv/fc; ``nearest`` keeps the quantizer's rounding. Without
    calibration inputs (a calibration table, or a fully pre-quantized model) the default falls
    back to nearest, saying so; asked for explicitly it is refused.

    Raises:
        InputError: an unknown mode, or a non-default GPTQ mode without calibration inputs.
    """
    if rounding == "nearest":
        return
    if not calib.inputs:
        if rounding == DEFAULTS.weight_rounding and calib.method != "fixed":
            log.warning("weights rounded to nearest: weight_rounding/--weight-rounding %s "
                        "(the default) needs calibration inputs, and %s gives none; the "
                        "binaries differ from a compile that calibrates", rounding,
                        calib.source)
            return
        if rounding == DEFAULTS.weight_rounding:
            return
        raise InputError(f"weight_rounding/--weight-rounding {rounding} needs calibration "
                         "inputs (calibration/--calib), not only a calib_table/--calib-table")
    gptq_round_weights(float_graph, graph, calib.inputs, bounded=rounding != "gptq-all",
                       hessians=calib.hessians)


def lower_program(graph: Graph, tgt: Target, options: CompileOptions = DEFAULTS) -> Program:
    """Stage 5, lower: tile and schedule the quantized graph for ``tgt``
    (:func:`tcc_compiler.schedule.lower`).

    Returns:
        The program: commands, DRAM/SRAM plan, layer table and the frozen weight layout
        (encode it with :func:`tcc_compiler.emit.binaries.encode_binaries`).

    Raises:
        ScheduleError: an op that cannot be tiled into the target's SRAM.
        InputError: ``options.cores`` is not 1 or 2, or more than the target has.
    """
    check_cores(options.cores, tgt)
    return lower(graph, tgt, compress_weights=options.compress_weights, cores=options.cores)


def check_cores(cores, tgt: Target) -> None:
    """Refuse a ``cores`` option that is not 1 or 2 or exceeds the target's cores.

    Raises:
        InputError: naming the value and the target's ``compute.cores``.
    """
    if isinstance(cores, bool) or cores not in (1, 2):
        raise InputError(f"cores = {cores!r}: choose 1 or 2")
    if cores > tgt.cores:
        raise InputError(f"cores = {cores}: target {tgt.name} has {tgt.cores} NPU core(s) "
                         "(compute.cores)")


def emit(model, graph: Graph, float_graph: Graph, program: Program,
         binaries: tuple[bytes, bytes], tgt: Target, preprocess, calib: Calibration,
         fg: FloatGraph, timings: dict) -> CompiledArtifacts:
    """Stage 6, emit: the manifest and report (:mod:`tcc_compiler.emit`) beside the binaries.

    Args:
        model: the compiled model as given (path or ModelProto: source name and sha256).
        binaries: (npu_cmd.bin, quantized_network.bin) bytes of ``program``.
        timings: stage wall times in seconds (``report["compile_seconds"]``).
    """
    cmd_bin, weight_bin = binaries
    src = model if isinstance(model, (str, os.PathLike)) else None
    manifest = build_manifest(graph, program, tgt, cmd_bin, preprocess, calib.method,
                              len(calib.inputs), calib.source, src, _model_bytes_sha(model),
                              weight_bin)
    spans = timeline(program, tgt)
    report = build_report(graph, program, tgt, cmd_bin, fg.pass_manager, timings, weight_bin,
                          spans)
    report["fusion"] = fg.fusion
    _log_schedule_emit(report, timings, len(weight_bin))
    trace = chrome_trace(spans, tgt, manifest["model"]["source"])
    extra, stream = stream_files(program, weight_bin, tgt, __version__)
    if stream is not None:
        manifest["stream"] = stream
    return CompiledArtifacts(cmd_bin, weight_bin, manifest, report, graph,
                             float_graph, program, tgt, calib_table=calib.table, trace=trace,
                             extra_files=extra)


# ---- pieces of the stages -------------------------------------------------------------------

def load_resume_point(path: str | os.PathLike,
                      input_whc: tuple[int, int, int] | None = None) -> tuple[Graph, list]:
    """Load a ``.tir`` file and decide which float passes remain to run on it.

    A dump written by ``tccc compile --dump-ir DIR`` carries ``meta after_pass = "<stage>"``;
    compilation continues with the passes after that stage. A ``.tir`` without that meta (hand
    written, or ``quantized.tir`` from an output folder) is treated by its content: a
    quantized graph goes straight to scheduling, a float graph runs the whole float pipeline
    (every pass is idempotent at its fixed point, so an already-applied pass does not fire).

    Args:
        path: the ``.tir`` file (its ``.npz`` sidecar is read when present).
        input_whc: (W, H, C) given with ``--input``; must match the IR's input (an IR file
            has fixed shapes; re-import the ONNX model to change them). None = no check.

    Returns:
        (graph, passes): the graph with ``after_pass`` removed from its meta, and the pass
        objects still to run (empty for a quantized graph or one dumped after the last pass).

    Raises:
        FormatError: the file does not parse (file:line:column in the message).
        InputError: unknown ``after_pass`` stage, an input size that differs from ``--input``,
            or a graph that breaks an IR rule (verifier message naming node and rule).
    """
    from tcc_compiler.ir.text import load_ir

    graph = load_ir(path)
    stage = graph.meta.pop(AFTER_PASS_META, None)
    quantized = bool(graph.meta.get("quantized", False))
    pipeline = default_pipeline()
    names = [p.name for p in pipeline]
    if stage is None or stage == IMPORT_STAGE:
        remaining = [] if quantized else pipeline
    elif stage == QUANTIZE_STAGE:
        remaining = []
    elif stage in names:
        remaining = pipeline[names.index(stage) + 1:]
    else:
        raise InputError(f"{path}: meta after_pass = {stage!r} is not a stage of this compiler "
                         f"({', '.join([IMPORT_STAGE] + names + [QUANTIZE_STAGE])})")
    if quantized and remaining:
        raise InputError(f"{path}: graph is quantized but meta after_pass = {stage!r} "
                         "precedes quantization")
    check_ir_graph(graph, path, input_whc, quantized)
    if not any(p.name == Legalize.name for p in remaining):   # its field checks still apply
        problems = [msg for n in graph.nodes for msg in field_problems(n)]
        if problems:
            raise UnsupportedError(str(path), problems)
    log.info("resuming %s after stage %s: %d float passes left%s", path, stage or "?",
             len(remaining), " (already quantized)" if quantized else "")
    return graph, remaining


def available_memory_bytes() -> int | None:
    """Bytes this process may still allocate: MemAvailable from /proc/meminfo, lowered to the
    address space left under the process's ``RLIMIT_AS`` soft limit (a container or ``ulimit
    -v``: its limit minus the VmSize already mapped) when one is set (Linux); None when
    neither can be read."""
    avail = _proc_value("/proc/meminfo", "MemAvailable:")
    soft = address_space_limit_bytes()
    if soft is not None:
        mapped = _proc_value("/proc/self/status", "VmSize:") or 0
        left = max(0, soft - mapped)
        avail = left if avail is None else min(avail, left)
    return avail


def address_space_limit_bytes() -> int | None:
    """The process's ``RLIMIT_AS`` soft limit in bytes (``ulimit -v``, a container); None when
    there is none or it cannot be read."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
    except (ImportError, OSError, ValueError):
        return None
    return None if soft == resource.RLIM_INFINITY else soft


def _proc_value(path: str, key: str) -> int | None:
    """A ``key: N kB`` line of a /proc file in bytes; None when it cannot be read."""
    try:
        with open(path, encoding="ascii") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_memory(graph: Graph, model) -> None:
    """Refuse up front a compile that would run out of memory (the kernel used to kill it
    without a message, exit 137, after minutes of swapping).

    Raises:
        InputError: :func:`tcc_compiler.interp.memory.estimate_compile_memory` (an upper bound
            of the compile's peak memory) exceeds MemAvailable; the message names the input
            size, the estimate and the memory available.
    """
    need, act = estimate_compile_memory(graph)
    avail = available_memory_bytes()
    log.debug("memory estimate: %.2f GB (%.2f GB of live float activations), available %s",
              need / 1e9, act / 1e9, "unknown" if avail is None else f"{avail / 1e9:.2f} GB")
    if avail is None or need <= avail:
        return
    _, c, h, w = graph.inputs[0].shape
    src = model if isinstance(model, (str, os.PathLike)) else graph.name
    weights = constant_bytes(graph)
    # the remedy depends on what dominates: a smaller input only helps when activations do
    fix = ("use a smaller input_whc/--input" if act >= weights else
           "the weights dominate, so a smaller input will not help: use a machine (or limit) "
           "with more memory")
    raise InputError(f"{src}: input {w}x{h}x{c} needs up to {need / 1e9:.1f} GB of memory to "
                     f"compile ({weights / 1e9:.2f} GB of float weights, kept in several copies;"
                     f" {act / 1e9:.2f} GB of float activations and working memory at its "
                     f"largest layer), more than the {avail / 1e9:.1f} GB available; {fix}")


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


def _log_quantize(calib: Calibration, timings: dict) -> None:
    """The ``quantize:`` line: method, calibration inputs and their source, wall time (s)."""
    if log.isEnabledFor(logging.INFO):
        log.info("quantize: method %s, %d calibration input(s) from %s (%.2f s)", calib.method,
                 len(calib.inputs), calib.source,
                 timings.get("calibration_s", 0.0) + timings["quantize_s"])


def _log_schedule_emit(report: dict, timings: dict, weight_bytes: int) -> None:
    """The ``schedule:`` and ``emit:`` lines (tiles, SRAM bytes, latency, container sizes)."""
    if not log.isEnabledFor(logging.INFO):
        return
    layers = report.get("layers", [])
    log.info("schedule: %d layers, %d tiles, SRAM used %s B, estimated %.3f ms "
             "(%s cycles; %.2f s)", len(layers), sum(int(x.get("tiles", 0)) for x in layers),
             f"{report.get('sram_peak_bytes', 0):,}", report.get("estimated_latency_ms", 0.0),
             f"{report.get('estimated_cycles', 0):,}", timings.get("schedule_emit_s", 0.0))
    log.info("emit: npu_cmd.bin %s B (%s commands), quantized_network.bin %s B",
             f"{report.get('command_bytes', 0):,}", report.get("commands", "?"),
             f"{weight_bytes:,}")
