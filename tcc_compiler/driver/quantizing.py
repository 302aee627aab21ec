"""Stages 3 and 4 of the driver: calibrate (activation ranges of the float graph) and quantize
(int8/int16 weights and activations, GPTQ weight rounding, bias correction), and the image
preprocessing calibration reads its inputs with.
"""

from __future__ import annotations

import logging
import os
from typing import Callable, Sequence

from tcc_compiler.datasets.calibration import default_calibration, resolve_calibration
from tcc_compiler.datasets.images import Preprocess
from tcc_compiler.datasets.presets import preprocess_at
from tcc_compiler.driver.records import Calibration, Instrument, Quantized, run_instruments
from tcc_compiler.errors import InputError
from tcc_compiler.frontend.onnx_import import is_segment
from tcc_compiler.ir.graph import Graph
from tcc_compiler.ir.ops import Op
from tcc_compiler.ir.verify import verify
from tcc_compiler.options import DEFAULTS, CompileOptions
from tcc_compiler.passes.instruments import QUANTIZE_STAGE
from tcc_compiler.quant import quantize_graph
from tcc_compiler.quant.auto_precision import choose_precision
from tcc_compiler.quant.bias_correction import apply_bias_correction
from tcc_compiler.quant.bias_refs import OutputRefs
from tcc_compiler.quant.calib_table import add_fixed, build_table, check_covers, read_table
from tcc_compiler.quant.calibrate import observe
from tcc_compiler.quant.lut_ranges import lut_input_ranges
from tcc_compiler.quant.quantize import fixed_ranges, ranges_needed
from tcc_compiler.quant.ranges import choose_ranges, snap_input_range
from tcc_compiler.quant.weight_rounding import (WEIGHT_ROUNDING, HessianSum,
                                                gptq_round_weights)
from tcc_compiler.target import Target, load_target

log = logging.getLogger(__name__)


def preprocess_for(graph: Graph, options: CompileOptions = DEFAULTS) -> Preprocess:
    """The image preprocessing recorded in the manifest and used on calibration images:
    ``options.preprocess`` at the graph's input (NCHW) size and channel count
    (:func:`~tcc_compiler.datasets.presets.preprocess_at`: a :class:`Preprocess` as it is,
    :class:`~tcc_compiler.datasets.presets.PreprocessSettings` resolved, None the ImageNet
    mean/std).

    Raises:
        InputError: settings :class:`Preprocess` refuses (e.g. a mean of the wrong length), a
            :class:`Preprocess` for another input size or channel count.
    """
    _, c, h, w = graph.inputs[0].shape
    return preprocess_at(options.preprocess, w, h, c)


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
            ("bias_correction/--bias-correction",
             options.bias_correction != DEFAULTS.bias_correction),
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
        inputs, source = resolve_calibration(options.calibration, graph, preprocess,
                                             options.raw_spec())
    method, p = options.method, options.percentile
    hess = _hessian_sum(graph, options.weight_rounding)
    refs = OutputRefs(graph) if options.bias_correction == "auto" else None   # the check's
    visits = [v.visit for v in (hess, refs) if v is not None]
    obs = observe(graph, inputs, [method], p, progress,
                  also=(lambda name, value: [v(name, value) for v in visits]) if visits
                  else None)[method]
    ranges, rejected = choose_ranges(obs, method)   # the collapse guard warns per tensor
    if method == "mse":   # a table's input: the range that serves the table's output
        lut_input_ranges(graph, obs, ranges)
    minmax = {k: getattr(o, "mm", o).range() for k, o in obs.items()}
    if image_input:
        snap_input_range(ranges, minmax, graph.inputs[0].name, preprocess)
    table = build_table(obs, method, p, ranges, rejected)
    return Calibration(method, inputs, source, ranges,
                       add_fixed(table, fixed) if fixed else table, minmax, hess, refs)


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
             index: int = 0) -> Quantized:
    """Stage 4, quantize (in place): int8 weights and activations from ``calib.ranges`` (int16
    activations on the layers ``options.precision`` chooses,
    :func:`~tcc_compiler.quant.auto_precision.choose_precision`), int32
    biases, integer requantization; with ``options.weight_rounding`` "gptq" the int8 weights
    are re-rounded on the calibration inputs (:mod:`tcc_compiler.quant.weight_rounding`);
    ``options.bias_correction`` ("auto" by default: only when a two-fold check on the
    calibration inputs gains; "on"; "off") folds each conv/fc's mean error on the calibration
    inputs into its bias (:func:`~tcc_compiler.quant.bias_correction.apply_bias_correction`;
    ``float_graph`` is the reference).

    Args:
        instruments, index: called with ``("quantize", "before"|"after", index, graph)``.

    Returns:
        :class:`Quantized`: the precision choice (which layers are int16; the report's
        ``precision``) and what bias correction did (the report's ``bias_correction``).

    Raises:
        InputError: bias correction "on" or gptq rounding without calibration inputs, an
            unknown weight rounding or bias correction mode, a bad ``options.precision`` (or
            ``auto`` without inputs).
        VerifyError: with ``options.verify_ir``, the quantized graph breaks an IR rule.
    """
    run_instruments(instruments, QUANTIZE_STAGE, "before", index, graph)
    choice = choose_precision(float_graph, calib.ranges, calib.minmax, calib.inputs,
                              options.precision, options.precision_goal_db,
                              options.precision_target_db,
                              options.target if isinstance(options.target, Target)
                              else load_target(options.target))
    quantize_graph(graph, calib.ranges, choice.int16_ranges, set(choice.plan.weight_layers))
    if options.weight_rounding not in WEIGHT_ROUNDING:
        raise InputError(f"weight_rounding/--weight-rounding '{options.weight_rounding}': "
                         f"choose one of {', '.join(WEIGHT_ROUNDING)}")
    _round_weights(graph, float_graph, calib, options.weight_rounding)
    refs = calib.outputs.per_input(len(calib.inputs)) \
        if calib.outputs is not None and calib.inputs else None
    bias = apply_bias_correction(options.bias_correction, float_graph, graph, calib.inputs,
                                 refs)
    if options.verify_ir:
        verify(graph, quantized=True)
    run_instruments(instruments, QUANTIZE_STAGE, "after", index, graph)
    return Quantized(choice, bias)


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
