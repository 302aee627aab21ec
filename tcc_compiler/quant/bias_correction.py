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
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from tcc_compiler.errors import InputError
from tcc_compiler.interp.onnx_float import float_values
from tcc_compiler.ir.feeds import feeds
from tcc_compiler.ir.graph import Graph
from tcc_compiler.ir.ops import Op
from tcc_compiler.quant.analyze import quantize_value
from tcc_compiler.quant.golden import GoldenModel, eval_int_node, prepare_conv
from tcc_compiler.quant.params import dequantize_output

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


def _layer_error(n, fl: dict, prepared: tuple | None = None) -> np.ndarray:
    """The mean per-channel error (float64 ``[C]``) of conv/fc ``n``'s isolated dequantized
    output against the float output ``fl[n.output.name]`` on one input (``fl``: the float
    values of that input; ``prepared``: :func:`~tcc_compiler.quant.golden.prepare_conv` of
    ``n``, or None)."""
    names = [n.output.name] + [v.name for v in n.inputs if v is not None and not v.is_const]
    for name in names:
        if name not in fl:
            raise InputError(f"bias correction: value '{name}' of node '{n.name}' is "
                             "not in the float graph")
    args = [None if v is None or v.is_const else quantize_value(fl[v.name], v)
            for v in n.inputs]
    q = eval_int_node(n, args, prepared)
    f = fl[n.output.name]
    f4 = f.reshape(1, -1, 1, 1) if f.ndim == 2 else f
    hwc = (f4.shape[2], f4.shape[3], f4.shape[1])
    qd = dequantize_output(q.reshape(hwc), n.output).reshape(f4.shape)
    return (qd.astype(np.float64) - f4).mean(axis=(0, 2, 3))


def _error_sums(float_graph: Graph, qgraph: Graph, inputs: Sequence, keep=None) -> _ErrorSums:
    """One float pass over ``inputs`` (ONNX Runtime as calibration, else the numpy
    interpreter: :func:`~tcc_compiler.interp.onnx_float.float_values`): the isolated errors
    of every conv/fc of ``qgraph`` (:class:`_ErrorSums`); ``keep(i, fl)`` is called with each
    input's float values (the layers' inputs and outputs, and the graph outputs).

    Raises:
        InputError: a value of ``qgraph`` missing from the float graph."""
    layers = [n for n in qgraph.nodes if n.op in (Op.CONV, Op.FC)]
    zeros = {n.name: np.zeros(n.output.shape[1], np.float64) for n in layers}
    sums = _ErrorSums(layers, dict(zeros), [dict(zeros), dict(zeros)])
    known = {v.name for v in float_graph.inputs} | {n.output.name for n in float_graph.nodes}
    names = [v.name for n in layers for v in [n.output] + list(n.inputs)
             if v is not None and not v.is_const and v.name in known]
    names += [o.name for o in qgraph.outputs if o.name in known]
    prepared = {n.name: prepare_conv(n) for n in layers}   # the biases do not change here
    for i, fl in enumerate(float_values(float_graph, names, inputs)):
        k = i % 2
        for n in layers:
            err = _layer_error(n, fl, prepared[n.name])
            sums.total[n.name] = sums.total[n.name] + err
            sums.fold[k][n.name] = sums.fold[k][n.name] + err
        sums.count += 1
        sums.fold_count[k] += 1
        if keep is not None:
            keep(i, fl)
    return sums


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


class _Sqnr:
    """Running 10 log10(sum ref^2 / sum (ref - got)^2) over every output element (float64)."""

    def __init__(self):
        self.ref = 0.0
        self.err = 0.0

    def add(self, ref: np.ndarray, got: np.ndarray) -> None:
        r = np.asarray(ref, np.float64).reshape(-1)
        self.ref += float(np.dot(r, r))
        e = r - np.asarray(got, np.float64).reshape(-1)
        self.err += float(np.dot(e, e))

    def db(self) -> float:
        if self.err == 0.0:
            return math.inf
        return 10.0 * math.log10(max(self.ref, 1e-300) / self.err)


def gated_bias_correction(float_graph: Graph, qgraph: Graph,
                          inputs: Iterable[np.ndarray]) -> BiasCorrection:
    """Bias correction kept only when it helps on held-out calibration inputs (in place).

    Two folds: the corrections estimated on the inputs at even positions are judged by the
    network output SQNR against float (every graph output, all elements) on the odd ones,
    and the other way round; when the corrected network's SQNR is higher in **both** folds,
    the correction estimated on all inputs (what :func:`correct_biases` gives) is applied,
    else the graph is left as it was. Cost: the error pass of :func:`correct_biases` plus two
    golden-model runs per input (uncorrected, and corrected by the other fold).

    Args:
        float_graph: the float graph the quantized one was made from (same value names).
        qgraph: the quantized graph (bias constants changed when applied).
        inputs: float32 NCHW calibration inputs (or {input: array} feeds); fewer than 2
            leave the graph as it is.

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
    ref = {}
    sums = _error_sums(float_graph, qgraph, inputs,
                       keep=lambda i, fl: ref.__setitem__(i, [fl[o] for o in outs]))
    base = [_Sqnr(), _Sqnr()]        # by held-out fold
    golden = GoldenModel(qgraph)
    for i, x in enumerate(inputs):
        got = golden.run(feeds(float_graph, x))
        for r, o in zip(ref[i], outs):
            base[i % 2].add(r, got[o])
    folds = []
    for src in (0, 1):
        held = 1 - src
        biases = _new_biases(sums.layers, sums.fold[src], sums.fold_count[src])
        old = _set_biases(qgraph, biases)
        try:
            golden = GoldenModel(qgraph)
            fixed = _Sqnr()
            for i in range(held, len(inputs), 2):
                got = golden.run(feeds(float_graph, inputs[i]))
                for r, o in zip(ref[i], outs):
                    fixed.add(r, got[o])
        finally:
            _set_biases(qgraph, old)
        folds.append({"corrections_from": ("even", "odd")[src],
                      "without_db": round(base[held].db(), 3),
                      "with_db": round(fixed.db(), 3),
                      "gain": fixed.db() > base[held].db()})
    gains = all(f.pop("gain") for f in folds)
    text = ", ".join(f"{f['without_db']:.2f} -> {f['with_db']:.2f} dB" for f in folds)
    if not gains:
        return BiasCorrection("auto", False, f"off: not better on both held-out halves of "
                              f"the calibration inputs ({text})", folds)
    biases = _new_biases(sums.layers, sums.total, sums.count)
    changed = _changed(qgraph, biases)
    _set_biases(qgraph, biases)
    return BiasCorrection("auto", True, f"on: better on both held-out halves of the "
                          f"calibration inputs ({text})", folds, changed)


def apply_bias_correction(mode, float_graph: Graph, qgraph: Graph,
                          inputs: Sequence) -> BiasCorrection:
    """``--bias-correction MODE`` on a quantized graph (in place): "on" corrects every conv/fc
    (:func:`correct_biases`), "auto" only when the two-fold check gains
    (:func:`gated_bias_correction`), "off" nothing. Without calibration inputs (a
    ``calib_table``) "auto" is off.

    Args:
        mode: a ``bias_correction`` setting (:func:`bias_correction_mode`: True/False too).
        float_graph, qgraph, inputs: as :func:`correct_biases`.

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
        res = gated_bias_correction(float_graph, qgraph, inputs)
    res.seconds = time.perf_counter() - t0
    log.info("bias correction %s: %s (%d layers changed, %.1f s)", mode, res.reason,
             len(res.changed), res.seconds)
    return res
