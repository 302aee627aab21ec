"""Fold a per-channel affine that follows a clamping activation into the producing conv.

ConvMixer's ``Conv -> Relu -> BatchNormalization`` (torch.onnx cannot fold a BatchNorm after
a Relu) kept every BatchNorm as an affine op of its own: a depthwise 1x1 conv over the whole
map (fold_affine.py folds an affine only where it is linear in the conv's output). For an
activation that is a clamp, ``relu(v) = clamp(v, 0, inf)`` and ``clip(v, l, h)``, the affine
moves through it exactly, channel by channel (``a = scale[c]``, ``c0 = shift[c]``)::

    a * clamp(v, l, h) + c0 = clamp(a v + c0, a l + c0, a h + c0)    a > 0
                            = clamp(a v + c0, a h + c0, a l + c0)    a < 0
                            = c0                                      a = 0 (weights 0)

so the conv takes the scaled weights ``a W``, the bias ``a b + c0``, no activation and a
per-channel clamp ``[lo[c], hi[c]]`` (input 5, float [2, O], +-inf where open), which the NPU
applies in its epilogue after the requantization (specs/quantization.md "Per-channel output
clamp"; the parameter record's clamp bytes, an ASSUMPTION of specs/target.md). No border or
second reader is involved: the fold is into the producer, whose output only the affine read.

Pattern: an affine (fold_affine's depthwise 1x1 conv) with no activation, shortcut or
shortcut scale, whose input is a conv's output read by it alone. Check: the conv's activation
is relu or clip; it has no shortcut (its clamp would act after the add, the affine's before)
and no per-channel clamp yet; neither value carries an imported model's quantization (two
roundings there). Runs after residual and activation fusion (passes/__init__.py), so the
activation is in the conv's epilogue and no residual add is fused into it afterwards.
"""

from __future__ import annotations

import numpy as np

from tcc_compiler.ir.ops import NO_ACT, ActKind, Op
from tcc_compiler.passes.affine import absorb, affine_params, is_affine, scale_into, set_const
from tcc_compiler.passes.rewrite import RewritePass, single_use


def clamp_bounds(act, scale: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """float64 [2, C]: the per-channel bounds ``[lo, hi]`` of ``scale * act(v) + shift`` as a
    clamp of ``scale * v + shift`` (module docstring; ``act`` relu or clip, +-inf where
    open)."""
    lo_a, hi_a = act.bounds()
    with np.errstate(invalid="ignore", over="ignore"):
        at_lo = np.where(scale == 0, 0.0, scale * lo_a) + shift
        at_hi = np.where(scale == 0, 0.0, scale * hi_a) + shift
    return np.stack([np.where(scale >= 0, at_lo, at_hi), np.where(scale >= 0, at_hi, at_lo)])


class FoldAffineAfterActivation(RewritePass):
    """conv (relu|clip) -> affine  ==>  conv with scaled weights and a per-channel clamp."""

    name = "fold-affine-after-activation"

    def match(self, graph, node):
        if not is_affine(node) or node.attrs.act != NO_ACT or node.input(4) is not None:
            return None
        p = node.inputs[0].producer
        if p is None or p.op is not Op.CONV:
            return None
        return {"affine": node, "prod": p}

    def check(self, graph, m):
        p, aff = m["prod"], m["affine"]
        if not single_use(graph, p.output):
            return "the conv's output has other readers"
        if p.attrs.act.kind not in (ActKind.RELU, ActKind.CLIP):
            return "the conv's activation is not a clamp (relu/clip)"
        if p.input(3) is not None or p.input(5) is not None:
            return "the conv has a fused shortcut or a per-channel clamp already"
        if p.output.quant is not None or aff.output.quant is not None:
            return "the imported model quantizes the conv's or the affine's output"
        return None

    def rewrite(self, graph, m):
        p, aff = m["prod"], m["affine"]
        a, c = affine_params(aff)
        bounds = clamp_bounds(p.attrs.act, a, c)
        scale_into(graph, p, a, c)
        set_const(graph, p, 5, bounds, "_clamp")
        p.attrs = type(p.attrs)(**{**p.attrs.__dict__, "act": NO_ACT})
        absorb(graph, p, aff)
