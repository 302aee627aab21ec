"""The driver's pipeline: :func:`compile_model` and the stages it calls in order.

    import_model -> run_float_passes -> calibrate -> quantize -> lower_program -> emit

``calibrate`` and ``quantize`` are in :mod:`tcc_compiler.driver.quantizing`, the ``.tir``
resume point in :mod:`~tcc_compiler.driver.resume`, the memory check in
:mod:`~tcc_compiler.driver.memory`, the ``-v`` lines in :mod:`~tcc_compiler.driver.logs`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable, Sequence

import onnx

from tcc_compiler.version import __version__
from tcc_compiler.driver.logs import log_import, log_passes, log_quantize, log_schedule_emit
from tcc_compiler.driver.memory import check_memory
from tcc_compiler.driver.quantizing import calibrate, preprocess_for, quantize
from tcc_compiler.driver.records import (Calibration, CompiledArtifacts, FloatGraph, Instrument,
                                         Quantized, run_instruments)
from tcc_compiler.driver.resume import load_resume_point
from tcc_compiler.emit.binaries import encode_binaries
from tcc_compiler.emit.manifest import build_manifest
from tcc_compiler.emit.precision import precision_report
from tcc_compiler.emit.report import build_report
from tcc_compiler.emit.stream import stream_files
from tcc_compiler.emit.trace import chrome_trace
from tcc_compiler.errors import InputError, UnsupportedError
from tcc_compiler.frontend import import_onnx, parse_input_spec
from tcc_compiler.frontend.onnx_import import check_npu_work, is_segment
from tcc_compiler.frontend.tir_import import is_ir_file
from tcc_compiler.fsutil import file_sha256
from tcc_compiler.interp.onnx_float import shared_sessions
from tcc_compiler.ir.graph import Graph
from tcc_compiler.numerics import jit
from tcc_compiler.numerics.blas import blas_threads
from tcc_compiler.options import DEFAULTS, CompileOptions, make_options
from tcc_compiler.passes import Pass, PassManager, default_pipeline
from tcc_compiler.passes.instruments import IMPORT_STAGE, make_instruments
from tcc_compiler.passes.summary import fusion_summary, source_table
from tcc_compiler.quant.auto_precision import check_precision, split_precision
from tcc_compiler.quant.precision import FILE_KEY, WEIGHTS_KEY, layer_nodes
from tcc_compiler.schedule import Program, lower
from tcc_compiler.schedule.bounds import check_op_tiles
from tcc_compiler.schedule.timeline import timeline
from tcc_compiler.target import Target, load_target

log = logging.getLogger(__name__)


def _model_bytes_sha(model) -> str:
    if isinstance(model, (str, os.PathLike)):
        return file_sha256(model)
    return hashlib.sha256(model.SerializeToString()).hexdigest()


def _model_sha_in_background(model) -> Callable[[], str]:
    """Start hashing the model file (the manifest's ``model.sha256``) on a daemon thread and
    return the call that waits for the hex digest (re-raising the thread's OSError, if any).

    The SHA-256 of ResNet-50's 102 MB file costs about 0.06 s of CPU (OpenSSL's
    ``hashlib`` update and the file reads release the GIL); done in ``emit`` it was nearly all
    of the compile's last, single-threaded stage, while on a thread it shares the cores with
    calibration. A ModelProto (its bytes made by protobuf under the GIL) is hashed when the
    returned call is made, as before."""
    if not isinstance(model, (str, os.PathLike)):
        return lambda: _model_bytes_sha(model)
    done: Future = Future()

    def run() -> None:
        try:
            done.set_result(file_sha256(model))
        except BaseException as exc:  # noqa: BLE001 -- handed to the caller of result()
            done.set_exception(exc)

    threading.Thread(target=run, name="tccc-model-sha", daemon=True).start()
    return done.result


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
    _warm_kernels(model, opts)

    try:
        t0 = time.perf_counter()
        graph, passes = import_model(model, opts.input_whc, instruments)
        timings["import_s"] = time.perf_counter() - t0
        log_import(model, graph, timings["import_s"])

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
    model_sha = _model_sha_in_background(model)   # whole on the NPU: hash it beside the rest
    graph, float_graph = fg.graph, fg.graph.clone()
    log_passes(fg.pass_manager, fg.fusion, timings["passes_s"])
    check_memory(graph, model)
    check_op_tiles(graph, tgt)   # a hopeless target refused before calibrating (schedule/)

    preprocess = preprocess_for(graph, opts)
    given = split_precision(opts.precision)
    if is_segment(model) and given is not None:
        # one NPU segment of a segmented model: its own layers of the names given (the
        # segmented build checks every name belongs to some segment)
        own = layer_nodes(graph)
        opts = opts.with_(precision={FILE_KEY: [n for n in given[0] if n in own],
                                     WEIGHTS_KEY: [n for n in given[1] if n in own]})
    if not graph.meta.get("quantized"):
        check_precision(graph, opts.precision, opts.precision_goal_db,   # before calibrating
                        opts.precision_target_db)
    # one BLAS thread: calibration and GPTQ parallelise over values and layers on threads of
    # their own, and OpenBLAS's threads on their small GEMMs and Cholesky factors only spin
    # and fight (sim/blas.py); the results then no longer depend on the core count either
    # one ONNX Runtime session for calibration's and bias correction's float passes
    with blas_threads(1), shared_sessions():
        t0 = time.perf_counter()
        calib = calibrate(graph, opts, preprocess, progress=progress, model=model)
        quantized = None
        if calib.ranges is not None:
            timings["calibration_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            quantized = quantize(graph, float_graph, calib, opts, instruments, len(passes))
        timings["quantize_s"] = time.perf_counter() - t0
    log_quantize(calib, timings)

    t0 = time.perf_counter()
    program = lower_program(graph, tgt, opts)
    binaries = encode_binaries(program, __version__)
    timings["schedule_emit_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - t_start
    art = emit(model, graph, float_graph, program, binaries, tgt, preprocess, calib, fg,
               timings, quantized, model_sha=model_sha)
    if quantized is not None and quantized.precision.mode != "int8":
        art.report["precision"] = precision_report(quantized.precision, art.report,
                                                   float_graph, calib.ranges, tgt,
                                                   opts.compress_weights, program)
    return art


def _warm_kernels(model, opts: CompileOptions) -> None:
    """When the compile will calibrate (no ``calib_table``, not a ``.tir`` resume), start
    loading the compiled kernels (:func:`tcc_compiler.numerics.jit.warm_in_background`):
    calibration and the quantize stage run them, and numba's import and first dispatch (about
    0.5 s of CPU, mostly Python) then overlap the GIL-free parts of the import and of ONNX
    Runtime's work instead of stalling calibration's first observer."""
    if opts.calib_table is None and not is_ir_file(model):
        jit.warm_in_background()


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
    run_instruments(instruments, IMPORT_STAGE, "after", -1, graph)
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
         fg: FloatGraph, timings: dict,
         quantized: Quantized | None = None, *,
         model_sha: Callable[[], str] | None = None) -> CompiledArtifacts:
    """Stage 6, emit: the manifest and report (:mod:`tcc_compiler.emit`) beside the binaries.

    Args:
        model: the compiled model as given (path or ModelProto: source name and sha256).
        binaries: (npu_cmd.bin, quantized_network.bin) bytes of ``program``.
        timings: stage wall times in seconds (``report["compile_seconds"]``).
        quantized: what the quantize stage did (its bias correction: the manifest's
            ``calibration.bias_correction``, the report's ``bias_correction``), or None (the
            graph was not quantized here).
        model_sha: returns the model's hex SHA-256 (:func:`_model_sha_in_background`), or
            None: hashed here.

    Raises:
        OSError: the model file can no longer be read for its hash.
    """
    cmd_bin, weight_bin = binaries
    bias = quantized.bias_correction if quantized is not None else None
    src = model if isinstance(model, (str, os.PathLike)) else None
    manifest = build_manifest(graph, program, tgt, cmd_bin, preprocess, calib.method,
                              len(calib.inputs), calib.source, src,
                              model_sha() if model_sha is not None else _model_bytes_sha(model),
                              weight_bin,
                              bias_correction=bias.applied if bias is not None else None)
    spans = timeline(program, tgt)
    report = build_report(graph, program, tgt, cmd_bin, fg.pass_manager, timings, weight_bin,
                          spans)
    report["fusion"] = fg.fusion
    if bias is not None:
        report["bias_correction"] = bias.to_dict()
    log_schedule_emit(report, timings, len(weight_bin))
    trace = chrome_trace(spans, tgt, manifest["model"]["source"])
    extra, stream = stream_files(program, weight_bin, tgt, __version__)
    if stream is not None:
        manifest["stream"] = stream
    return CompiledArtifacts(cmd_bin, weight_bin, manifest, report, graph,
                             float_graph, program, tgt, calib_table=calib.table, trace=trace,
                             extra_files=extra)


