"""Empirical per-channel bias correction (Nagel et al. 2019, "Data-Free Quantization", sec. 4.2,
empirical variant; Finkelstein et al. 2019), and the two-fold check that turns it on per model.

Quantizing weights and rounding in the epilogue shift each output channel's mean. For every
conv/fc with an int32 bias, this measures on calibration inputs the mean per-channel error of
the layer's *isolated* dequantized output (its inputs: the float values, quantized with the
layer's input parameters, as in :mod:`tcc_compiler.quant.analyze`) against the float output,
and folds it into the bias: ``bias[c] -= round(mean_err[c] / s_b[c])`` with
``s_b[c] = s_x * s_w[c]``, clipped to int32. Using the isolated error means every layer is
corrected for its own shift only: upstream shifts are corrected upstream, never twice.

In-sample the correction always lowers the error, so whether it helps a model is decided on
held-out calibration inputs (:func:`gated_bias_correction`, ``--bias-correction auto``): the
inputs at even positions give corrections whose network output SQNR against float is
measured on the odd ones, and the other way round; the correction (from all inputs) is kept
only when both folds gain (specs/quantization.md, "Empirical bias correction").
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Iterable

import numpy as np

from tcc_compiler.errors import InputError
from tcc_compiler.ir.feeds import feeds
from tcc_compiler.ir.graph import Graph, Value
from tcc_compiler.ir.ops import Op
from tcc_compiler.quant.analyze import quantize_value
from tcc_compiler.quant.bias_folds import Half, Sqnr, add_fold, same_outputs
from tcc_compiler.quant.bias_fused import error_and_quantized
from tcc_compiler.quant.bias_pass import chains, error_pass, in_order
from tcc_compiler.quant.calibrate_run import workers
from tcc_compiler.quant.golden import GoldenModel, eval_int_node, prepare_conv
from tcc_compiler.quant.params import mean_output_error

log = logging.getLogger(__name__)

#: ``--bias-correction`` modes: auto (the two-fold check decides), on, off.
BIAS_CORRECTION_MODES = ("auto", "on", "off")
#: The default mode.
DEFAULT_BIAS_CORRECTION = "auto"


def bias_correction_mode(value) -> str:
    """The mode of a ``bias_correction`` setting: "auto", "on" or "off" (True and False, the
    old boolean spelling, are "on" and "off").

    Raises:
        InputError: any other value.
    """
    if value is True or value is False:
        return "on" if value else "off"
    if isinstance(value, str) and value in BIAS_CORRECTION_MODES:
        return value
    raise InputError(f"bias_correction/--bias-correction {value!r}: choose one of "
                     f"{', '.join(BIAS_CORRECTION_MODES)}")


@dataclass
class _ErrorSums:
    """Per-layer sums of the isolated mean output error (float64 per output channel): over
    all inputs in input order (``total``) and per fold (``fold[k]``: inputs at positions
    ``i % 2 == k``), with their input counts."""

    layers: list
    total: dict
    fold: list
    count: int = 0
    fold_count: list = field(default_factory=lambda: [0, 0])


def _layer_error(n, fl: dict, prepared: tuple | None = None,
                 quantized: dict | None = None, golden: GoldenModel | None = None,
                 reader: Value | None = None) -> np.ndarray:
    """The mean per-channel error (float64 ``[C]``) of conv/fc ``n``'s isolated dequantized
    output against the float output ``fl[n.output.name]`` on one input (``fl``: the float
    values of that input; ``prepared``: :func:`~tcc_compiler.quant.golden.prepare_conv` of
    ``n``, or None; ``quantized``: {value name: integer NHWC array} of this input's values
    already quantized, filled here, so a value read by several layers is quantized once, or
    None; ``golden``: a :class:`~tcc_compiler.quant.golden.GoldenModel` of the graph made
    from these ``prepared``, whose per-shape conv routines (:meth:`~tcc_compiler.quant.golden.
    GoldenModel.conv`, the same bytes as :func:`~tcc_compiler.quant.golden.eval_int_node`)
    serve, or None; ``reader``: ``n``'s output as the next conv's input, or None: the error
    and that conv's quantized input are then taken in one pass over the float output
    (:func:`~tcc_compiler.quant.bias_fused.error_and_quantized`, the same values), and the
    latter is put in ``quantized``).

    Raises:
        InputError: a value of ``n`` missing from ``fl``."""
    names = [n.output.name] + [v.name for v in n.inputs if v is not None and not v.is_const]
    for name in names:
        if name not in fl:
            raise InputError(f"bias correction: value '{name}' of node '{n.name}' is "
                             "not in the float graph")
    if quantized is None:
        quantized = {}
    args = []
    for v in n.inputs:
        if v is None or v.is_const:
            args.append(None)
            continue
        if v.name not in quantized:
            quantized[v.name] = quantize_value(fl[v.name], v)
        args.append(quantized[v.name])
    q = golden.conv(n, args) if golden is not None else eval_int_node(n, args, prepared)
    f = fl[n.output.name]
    f4 = f.reshape(1, -1, 1, 1) if f.ndim == 2 else f
    hwc = (f4.shape[2], f4.shape[3], f4.shape[1])
    if reader is not None and reader.name not in quantized:
        both = error_and_quantized(q.reshape(hwc), n.output, f4, reader)
        if both is not None:
            if both[1] is not None:
                quantized[reader.name] = both[1]
            return both[0]
    return mean_output_error(q.reshape(hwc), n.output, f4)


def _prepare_all(layers: list) -> dict:
    """{conv/fc name: :func:`~tcc_compiler.quant.golden.prepare_conv` of it}, made on worker
    threads in ``layers`` order (each layer's the same bytes as on one thread): the weights'
    relayout (numpy copies, GIL released) of ResNet-50's 54 layers took 0.06 s of CPU alone
    on one core at the start of the gate, the other core idle."""
    with ThreadPoolExecutor(max(1, min(len(layers), workers())),
                            thread_name_prefix="tccc-prepare") as pool:
        return dict(zip([n.name for n in layers], pool.map(prepare_conv, layers)))


def _error_jobs(float_graph: Graph, qgraph: Graph, prepared: dict | None = None,
                golden: GoldenModel | None = None) -> tuple:
    """(conv/fc layers of ``qgraph``, the float values their error jobs and the network
    output's SQNR read, the error jobs: one :func:`_chain_job` per run of layers
    (:func:`~tcc_compiler.quant.bias_pass.chains`), each giving its layers' errors in order,
    so the jobs' results, one after another, are the layers' errors in layer order
    (:func:`_flat`)).

    Args:
        prepared: {conv/fc name: :func:`~tcc_compiler.quant.golden.prepare_conv` of it with
            the graph's present biases}, or None: made here.
        golden: a :class:`~tcc_compiler.quant.golden.GoldenModel` of ``qgraph`` made from
            ``prepared`` (its conv routines serve the jobs), or None: made here."""
    layers = [n for n in qgraph.nodes if n.op in (Op.CONV, Op.FC)]
    known = {v.name for v in float_graph.inputs} | {n.output.name for n in float_graph.nodes}
    names = [v.name for n in layers for v in [n.output] + list(n.inputs)
             if v is not None and not v.is_const and v.name in known]
    names += [o.name for o in qgraph.outputs if o.name in known]
    if prepared is None:   # the biases do not change here
        prepared = {n.name: prepare_conv(n) for n in layers}
    if golden is None:
        golden = GoldenModel(qgraph, prepared=prepared)
    return layers, names, [partial(_chain_job, chain, golden) for chain in chains(layers)]


def _chain_job(chain: list, golden: GoldenModel, fl: dict, quantized: dict) -> list:
    """:func:`_layer_error` of each layer of ``chain`` in order, as an error-pass job
    (``quantized``: the input's shared cache of quantized values; each layer's output
    quantized for the next one in the same pass as its error)."""
    return [_layer_error(n, fl, golden=golden, quantized=quantized,
                         reader=chain[k + 1].inputs[0] if k + 1 < len(chain) else None)
            for k, n in enumerate(chain)]


def _flat(errs: list) -> list:
    """The per-layer errors of one input from its chain jobs' results (layer order)."""
    return [e for chain in errs for e in chain]


def _sums(layers, errors: Iterable[list]) -> dict:
    """{layer name: float64 [C] sum of its errors}, added from zero in the order given (the
    order fixes the float64 sums bit for bit)."""
    out = {n.name: np.zeros(n.output.shape[1], np.float64) for n in layers}
    for errs in errors:
        for n, err in zip(layers, errs):
            out[n.name] = out[n.name] + err
    return out


def _error_sums(float_graph: Graph, qgraph: Graph, inputs: Sequence) -> _ErrorSums:
    """One float pass over ``inputs`` (ONNX Runtime as calibration, else the numpy
    interpreter: :func:`~tcc_compiler.interp.onnx_float.float_values`): the isolated errors
    of every conv/fc of ``qgraph`` (:class:`_ErrorSums`), each input's computed on worker
    threads and added in input order (:func:`~tcc_compiler.quant.bias_pass.error_pass`: the
    serial loop's sums).

    Raises:
        InputError: a value of ``qgraph`` missing from the float graph."""
    layers, names, jobs = _error_jobs(float_graph, qgraph)
    errors = [_flat(errs) for _, _, errs, _ in error_pass(float_graph, names, inputs, jobs)]
    return _ErrorSums(layers, _sums(layers, errors),
                      [_sums(layers, errors[k::2]) for k in (0, 1)], len(errors),
                      [len(errors[0::2]), len(errors[1::2])])


def _new_biases(layers, sums: dict, count: int) -> dict:
    """{node name: corrected int32 bias} for the layers whose correction is not zero."""
    out = {}
    for n in layers:
        b = n.inputs[2]
        s_b = np.asarray(b.quant.scale, np.float64)
        delta = np.round(sums[n.name] / count / s_b)
        if np.any(delta != 0):
            new = np.clip(b.const.astype(np.int64) - delta, -(2 ** 31) + 1, 2 ** 31 - 1)
            out[n.name] = new.astype(np.int32)
    return out


def _set_biases(qgraph: Graph, biases: dict) -> dict:
    """Set the bias constants of the named conv/fc nodes; return the biases they had."""
    old = {}
    for n in qgraph.nodes:
        if n.name in biases:
            old[n.name] = n.inputs[2].const
            n.inputs[2].const = biases[n.name]
    return old


def _changed(qgraph: Graph, biases: dict) -> dict:
    """{node name: largest |correction| in bias units} of ``biases`` against the graph's."""
    return {n.name: int(np.abs(biases[n.name].astype(np.int64)
                               - n.inputs[2].const.astype(np.int64)).max())
            for n in qgraph.nodes if n.name in biases}


def _as_sequence(inputs) -> Sequence:
    """``inputs`` as a sequence (a lazy one, from datasets, loads one at a time).

    Raises:
        InputError: no inputs."""
    if not isinstance(inputs, Sequence):
        inputs = list(inputs)
    if not len(inputs):
        raise InputError("bias correction needs at least one calibration input")
    return inputs


def correct_biases(float_graph: Graph, qgraph: Graph, inputs: Iterable[np.ndarray]) -> dict:
    """Fold each conv/fc's mean isolated output error into its int32 bias (in place).

    Args:
        float_graph: the float graph the quantized one was made from (same value names).
        qgraph: the quantized graph (modified: bias constants of conv/fc nodes).
        inputs: float32 NCHW calibration inputs.

    Returns:
        {node name: largest |correction| in bias units (int)} for every corrected node.

    Raises:
        InputError: no inputs, or a value missing from the float graph.
    """
    inputs = _as_sequence(inputs)
    sums = _error_sums(float_graph, qgraph, inputs)
    biases = _new_biases(sums.layers, sums.total, sums.count)
    changed = _changed(qgraph, biases)
    _set_biases(qgraph, biases)
    log.info("bias correction: %d of %d layers changed", len(changed), len(sums.layers))
    return changed


@dataclass
class BiasCorrection:
    """What :func:`apply_bias_correction` did (``report.json``'s ``bias_correction``).

    Attributes:
        mode: "auto", "on" or "off" (as asked).
        applied: whether the biases were corrected.
        reason: why, in one line.
        folds: for ``auto``, the two folds' network output SQNR against float on their
            held-out half (dB): ``[{"corrections_from": "even"|"odd", "without_db",
            "with_db"}, ...]``; [] otherwise.
        changed: {node name: largest |correction| in bias units} when applied.
        seconds: wall time of the correction and its check.
    """

    mode: str
    applied: bool
    reason: str
    folds: list = field(default_factory=list)
    changed: dict = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        """JSON form (``report.json``)."""
        return {"mode": self.mode, "applied": self.applied, "reason": self.reason,
                "folds": self.folds, "layers_changed": len(self.changed),
                "seconds": round(self.seconds, 2)}


def _trial(qgraph: Graph, layers, weights: dict, sums: dict, count: int) -> GoldenModel:
    """The golden model of ``qgraph`` corrected by ``sums`` over ``count`` inputs (the graph's
    biases put back after; ``weights``: the layers' prepared weights, shared)."""
    old = _set_biases(qgraph, _new_biases(layers, sums, count))
    try:   # a GoldenModel reads the biases when made
        return GoldenModel(qgraph, weights)
    finally:
        _set_biases(qgraph, old)


def _both(golden: GoldenModel, trial: GoldenModel, float_graph: Graph, x) -> tuple:
    """The outputs of ``golden`` and of ``trial`` on input ``x`` (one job)."""
    feed = feeds(float_graph, x)
    return golden.run(feed), trial.run(feed)


def _even_pass(float_graph: Graph, names: list, jobs: list, inputs: Sequence,
               golden: GoldenModel, refs: Sequence[dict] | None, outs: list, errors: list,
               ref: dict, base: Sqnr) -> Sequence[dict] | None:
    """The error pass over the even inputs of ``inputs`` with the uncorrected ``golden`` model
    beside it: their errors put in ``errors``, their float outputs in ``ref`` (by input
    position, in ``outs`` order) and their SQNR added to ``base``. Returns ``refs`` when it
    holds one output dict per input and those of the even inputs equal the pass's bit for bit,
    else None."""
    ins = [v.name for v in float_graph.inputs]
    if refs is not None and len(refs) != len(inputs):
        refs = None
    for j, fl, errs, (got,) in error_pass(float_graph, names, Half(inputs, 0), jobs,
                                          [lambda fl: golden.run({k: fl[k] for k in ins})]):
        errors[2 * j], ref[2 * j] = _flat(errs), [fl[o] for o in outs]
        if refs is not None and not same_outputs(refs[2 * j], outs, ref[2 * j]):
            refs = None
        for r, o in zip(ref[2 * j], outs):
            base.add(r, got[o])
    return refs


def _first_fold(float_graph: Graph, names: list, jobs: list, odds: Sequence, models: tuple,
                refs: Sequence[dict] | None, outs: list, errors: list, sq: tuple) -> bool:
    """The first fold's SQNRs (``sq``: the without and with :class:`~tcc_compiler.quant.
    bias_folds.Sqnr`) on the odd inputs ``odds``, from the uncorrected and the even-corrected
    golden models (``models``). Without ``refs``: beside the error pass over ``odds``, their
    errors put in ``errors`` (returns True); with ``refs``: against those float outputs, no
    float pass and no errors (returns False)."""
    golden, by_even = models
    if refs is None:
        ins = [v.name for v in float_graph.inputs]
        extra = [lambda fl, m=m: m.run({k: fl[k] for k in ins}) for m in models]
        for j, fl, errs, (got, fix) in error_pass(float_graph, names, odds, jobs, extra):
            errors[2 * j + 1] = _flat(errs)
            add_fold(sq, outs, fl, got, fix)
        return True
    for j, (got, fix) in in_order(lambda j, x: _both(golden, by_even, float_graph, x), odds):
        add_fold(sq, outs, refs[2 * j + 1], got, fix)
    return False


def gated_bias_correction(float_graph: Graph, qgraph: Graph, inputs: Iterable[np.ndarray],
                          refs: Sequence[dict] | None = None) -> BiasCorrection:
    """Bias correction kept only when it helps on held-out calibration inputs (in place).

    Two folds: the corrections estimated on the inputs at even positions are judged by the
    network output SQNR against float (every graph output, all elements) on the odd ones,
    and the other way round; when the corrected network's SQNR is higher in **both** folds,
    the correction estimated on all inputs (what :func:`correct_biases` gives) is applied,
    else the graph is left as it was.

    Order of work: the error pass over the even inputs (with the uncorrected golden model
    beside it), then over the odd ones with both the uncorrected model and the one corrected
    by the even half run beside it (the first fold); only when that fold gains, the model
    corrected by the odd half on the even inputs (the second fold). When the first fold
    loses the decision is already "off": the second fold's ``with_db`` is None and the reason
    says its check was not needed. Each input's errors are kept and added in input order, so
    every sum, decision and bias is that of one pass in input order, bit for bit. Cost: the
    error pass of :func:`correct_biases` plus two golden-model runs per odd input and, when
    the first fold gains, one more per even input. With ``refs`` that equal the even inputs'
    float outputs of the error pass bit for bit, the first fold reads the odd inputs' outputs
    from ``refs`` and the error pass over the odd inputs runs only when that fold gains (the
    same sums and decision: when it loses, half the float pass and error jobs are left out).

    Args:
        float_graph: the float graph the quantized one was made from (same value names).
        qgraph: the quantized graph (bias constants changed when applied).
        inputs: float32 NCHW calibration inputs (or {input: array} feeds); fewer than 2
            leave the graph as it is.
        refs: per input, {graph output name: float32 NCHW value} as calibration's float pass
            computed it (:class:`~tcc_compiler.quant.bias_refs.OutputRefs`), or None; not
            used unless one per input and equal to the error pass's on the even inputs.

    Returns:
        :class:`BiasCorrection` (mode "auto").

    Raises:
        InputError: no inputs, or a value missing from the float graph.
    """
    inputs = _as_sequence(inputs)
    if len(inputs) < 2:
        return BiasCorrection("auto", False, "fewer than 2 calibration inputs: no held-out "
                              "half to check the correction on")
    outs = [o.name for o in qgraph.outputs]
    layers = [n for n in qgraph.nodes if n.op in (Op.CONV, Op.FC)]
    prepared = _prepare_all(layers)
    weights = {name: p[0] for name, p in prepared.items()}   # the trials change only biases
    golden = GoldenModel(qgraph, prepared=prepared)   # the biases as prepared
    layers, names, jobs = _error_jobs(float_graph, qgraph, prepared, golden)
    errors: list = [None] * len(inputs)
    ref: dict = {}                   # the even inputs' float outputs
    base = [Sqnr(), Sqnr()]          # by held-out fold (input parity)
    fixed = [Sqnr(), Sqnr()]
    evens, odds = Half(inputs, 0), Half(inputs, 1)
    refs = _even_pass(float_graph, names, jobs, inputs, golden, refs, outs, errors, ref,
                      base[0])
    by_even = _trial(qgraph, layers, weights, _sums(layers, errors[0::2]), len(evens))
    odd_errors = _first_fold(float_graph, names, jobs, odds, (golden, by_even), refs, outs,
                             errors, (base[1], fixed[1]))
    first = {"corrections_from": "even", "without_db": round(base[1].db(), 3),
             "with_db": round(fixed[1].db(), 3)}
    if not fixed[1].db() > base[1].db():
        second = {"corrections_from": "odd", "without_db": round(base[0].db(), 3),
                  "with_db": None}
        return BiasCorrection("auto", False, f"off: not better on the odd held-out half of "
                              f"the calibration inputs ({first['without_db']:.2f} -> "
                              f"{first['with_db']:.2f} dB); the even half's check was not "
                              "needed", [first, second])
    if not odd_errors:   # the first fold gains: the odd inputs' errors are needed now
        for j, _, errs, _ in error_pass(float_graph, names, odds, jobs):
            errors[2 * j + 1] = _flat(errs)
    by_odd = _trial(qgraph, layers, weights, _sums(layers, errors[1::2]), len(odds))
    for j, got in in_order(lambda j, x: by_odd.run(feeds(float_graph, x)), evens):
        for r, o in zip(ref[2 * j], outs):
            fixed[0].add(r, got[o])
    folds = [first, {"corrections_from": "odd", "without_db": round(base[0].db(), 3),
                     "with_db": round(fixed[0].db(), 3)}]
    text = ", ".join(f"{f['without_db']:.2f} -> {f['with_db']:.2f} dB" for f in folds)
    if not fixed[0].db() > base[0].db():
        return BiasCorrection("auto", False, f"off: not better on both held-out halves of "
                              f"the calibration inputs ({text})", folds)
    biases = _new_biases(layers, _sums(layers, errors), len(inputs))
    changed = _changed(qgraph, biases)
    _set_biases(qgraph, biases)
    return BiasCorrection("auto", True, f"on: better on both held-out halves of the "
                          f"calibration inputs ({text})", folds, changed)


def apply_bias_correction(mode, float_graph: Graph, qgraph: Graph, inputs: Sequence,
                          refs: Sequence[dict] | None = None) -> BiasCorrection:
    """``--bias-correction MODE`` on a quantized graph (in place): "on" corrects every conv/fc
    (:func:`correct_biases`), "auto" only when the two-fold check gains
    (:func:`gated_bias_correction`), "off" nothing. Without calibration inputs (a
    ``calib_table``) "auto" is off.

    Args:
        mode: a ``bias_correction`` setting (:func:`bias_correction_mode`: True/False too).
        float_graph, qgraph, inputs: as :func:`correct_biases`.
        refs: for "auto", the inputs' float outputs from calibration, or None
            (:func:`gated_bias_correction`).

    Returns:
        :class:`BiasCorrection` (``seconds``: wall time).

    Raises:
        InputError: an unknown mode, "on" without calibration inputs, a value missing from the
            float graph.
    """
    mode = bias_correction_mode(mode)
    t0 = time.perf_counter()
    if mode == "off":
        res = BiasCorrection(mode, False, "off: asked for")
    elif not inputs:
        if mode == "on":
            raise InputError("bias_correction/--bias-correction on needs calibration inputs "
                             "(calibration/--calib), not only a calib_table/--calib-table")
        res = BiasCorrection(mode, False, "off: no calibration inputs to check it on")
    elif mode == "on":
        changed = correct_biases(float_graph, qgraph, inputs)
        res = BiasCorrection(mode, True, "on: asked for", changed=changed)
    else:
        res = gated_bias_correction(float_graph, qgraph, inputs, refs)
    res.seconds = time.perf_counter() - t0
    log.info("bias correction %s: %s (%d layers changed, %.1f s)", mode, res.reason,
             len(res.changed), res.seconds)
    return res
