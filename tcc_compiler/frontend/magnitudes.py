"""Refuse float parameters the INT8 scheme cannot represent: non-finite or absurdly large.

Checked on the float graph after the passes (:func:`parameter_problems`, called by
:func:`tcc_compiler.frontend.onnx_import.check_npu_work`, which both ``tccc compile`` and
``tccc ops`` / :func:`tcc_compiler.placement.partition` run), so the values checked are the
ones quantization sees: conv and FC weights and biases after batch norm, Gemm ``alpha``/``beta``
and constant affines are folded in, constant operands, PRelu slopes, and the ``alpha``/``beta``
of the lookup-table activations. Checking the raw ONNX tensors alone would miss what folding
makes of them (a BatchNormalization with ``var = 0`` and ``epsilon = 0`` folds to an infinite
weight; ``Gemm alpha = 1e30`` times ordinary weights to 1e30).

Before this check existed, such a model passed ``tccc ops`` and was refused later, by
calibration (an activation overflowing float32) or quantization (a requantization multiplier
beyond its field), so ``ops`` said "compiles" about a model ``compile`` refused (issue #16).
"""

from __future__ import annotations

import math

import numpy as np

from tcc_compiler.ir.graph import Graph, Node
from tcc_compiler.ir.ops import CLAMP_INPUT, LutAttrs, LutFunc, Op

#: Largest |float parameter| tccc compiles: 2**31, the int32 accumulator's range at unit
#: scale. A trained network's weights, biases and folded batch-norm terms are many orders of
#: magnitude smaller; beyond this bound the requantization multiplier of the layer's output
#: (``s_x * s_w / s_out``, specs/quantization.md) exceeds its 2**30 limit from about 1e11 (a
#: conv followed by Relu6 on unit-variance inputs), or calibration overflows float32 a few
#: layers on. Documented in specs/quantization.md ("Parameter magnitudes").
MAX_PARAM_MAGNITUDE = float(2 ** 31)


def _array_problem(arr: np.ndarray) -> str | None:
    """Why a float parameter array cannot be quantized, or None."""
    a = np.asarray(arr)
    if a.size == 0 or a.dtype.kind != "f":
        return None
    finite = np.isfinite(a)
    if not finite.all():
        bad = a[~finite]
        return (f"holds {bad.size} non-finite value(s) ({bad.reshape(-1)[0]:g}); "
                "a NaN or infinite parameter has no INT8 encoding")
    peak = float(np.max(np.abs(a)))
    if peak > MAX_PARAM_MAGNITUDE:
        return (f"holds {peak:.3g}, beyond the +-{MAX_PARAM_MAGNITUDE:.3g} tccc quantizes "
                "(weights of absurd magnitude?)")
    return None


def _lut_problem(attrs: LutAttrs) -> str | None:
    """Why a lookup-table activation's ``alpha``/``beta`` cannot be used, or None. Clip's
    bounds (alpha = lo, beta = hi) may be infinite (one-sided clip), never NaN."""
    for key in ("alpha", "beta"):
        v = float(getattr(attrs, key))
        if math.isnan(v):
            return f"{key} is NaN"
        if attrs.func is LutFunc.CLIP and math.isinf(v):
            continue
        if not math.isfinite(v) or abs(v) > MAX_PARAM_MAGNITUDE:
            return (f"{key} = {v:g} is beyond the +-{MAX_PARAM_MAGNITUDE:.3g} tccc "
                    "quantizes")
    return None


def _node_problems(node: Node) -> list[str]:
    out = []
    where = f"{node.op.value} '{node.name}'"
    origin = f" (ONNX {', '.join(node.source)})" if node.source else ""
    for i, v in enumerate(node.inputs):
        if v is None or not v.is_const or (node.op is Op.CONV and i == CLAMP_INPUT):
            continue   # a per-channel clamp's bounds are +-inf where open, clipped to int8
        why = _array_problem(v.const)
        if why:
            out.append(f"{where}: constant '{v.name}'{origin} {why}")
    if isinstance(node.attrs, LutAttrs):
        why = _lut_problem(node.attrs)
        if why:
            out.append(f"{where}: {node.attrs.func.value}{origin} {why}")
    return out


def parameter_problems(g: Graph) -> list[str]:
    """One ``"<op> '<node>': reason"`` line per node of float graph ``g`` (after the passes)
    holding a float parameter that is NaN, infinite or beyond :data:`MAX_PARAM_MAGNITUDE`
    in magnitude (constant inputs; lookup-table ``alpha``/``beta``); empty when all are
    representable. Integer constants (reshape targets) are not parameters and are skipped."""
    problems: list[str] = []
    for node in g.nodes:
        problems += _node_problems(node)
    return problems
