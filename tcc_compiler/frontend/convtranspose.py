"""Converter of ConvTranspose (opsets 1 and 11): a transposed convolution as one ordinary
convolution per output phase, interleaved (IR ops ``conv`` x ``sh * sw`` + ``interleave``).

ONNX (https://onnx.ai/onnx/operators/onnx__ConvTranspose.html), one axis, stride ``s``, kernel
``K``, pad ``p`` at the start: ``y[o] = sum_{i, k : o = i*s + k - p} x[i] * W[k]``. For the
output phase ``o = s*q + r`` only the taps ``k = k_r + s*j`` with ``k_r = (r + p) mod s`` meet an
input, at ``i = q + d - j`` with ``d = (r + p - k_r) / s``. So phase ``r`` is the correlation of
``x`` with the ``J = ceil((K - k_r) / s)`` taps reversed, ``W'[m] = W[k_r + s*(J - 1 - m)]``,
padded by ``J - 1 - d`` before and by what makes its length ``out / s`` after (the phase
decomposition of e.g. Shi et al., "Is the deconvolution layer the same as a convolutional
layer?", 2016). The weights [C_in, C_out, K_h, K_w] become OIHW [C_out, C_in, J_h, J_w] per
phase; the bias goes to every phase. The phases run as plain convs on the NPU, each writing its
pixels into the output buffer (a strided view, schedule/views.py), so the op costs the MACs of
the non-zero taps only.

Accepted: 2-D, group 1, dilation 1, constant weights (and bias), explicit pads or
``output_padding`` / ``output_shape`` that give an output a multiple of the strides and phase
pads >= 0. Listed in :mod:`tcc_compiler.frontend.converters`.
"""

from __future__ import annotations

import numpy as np
import onnx

from tcc_compiler.frontend.context import Ctx, Unsupported, attrs_of
from tcc_compiler.ir.graph import Value
from tcc_compiler.ir.ops import ConvAttrs, InterleaveAttrs, Op


def _ints(v, n: int, default: int) -> list[int]:
    return [int(e) for e in v] if v is not None else [default] * n


def phase_taps(k: int, s: int, p: int, r: int, n_in: int, n_out: int):
    """(tap indices of W in correlation order, pad before, pad after) of phase ``r`` along one
    axis (module docstring).

    Raises:
        Unsupported: the phase would need negative padding (a crop).
    """
    kr = (r + p) % s
    d = (r + p - kr) // s
    taps = list(range(kr, k, s))[::-1]
    j = len(taps)
    before = j - 1 - d
    after = n_out // s - 1 + j - n_in - before
    if not taps or before < 0 or after < 0:
        raise Unsupported(f"phase {r} of stride {s}, kernel {k}, pad {p} needs a crop "
                          f"(pads {before}, {after}); not supported")
    return taps, before, after


def _geometry(node: onnx.NodeProto, x: Value, w: np.ndarray):
    """(strides, (t, l, b, r) pads, output (H, W)) of a ConvTranspose node."""
    a = attrs_of(node)
    k = w.shape[2:]
    s = _ints(a.get("strides"), 2, 1)
    if _ints(a.get("dilations"), 2, 1) != [1, 1]:
        raise Unsupported("dilated ConvTranspose is not supported")
    auto = a.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto not in ("NOTSET", ""):
        raise Unsupported(f"auto_pad {auto}: give explicit pads")
    pads = _ints(a.get("pads"), 4, 0)
    op = _ints(a.get("output_padding"), 2, 0)
    h, wd = x.shape[2:]
    out = [s[i] * ((h, wd)[i] - 1) + op[i] + k[i] - pads[i] - pads[i + 2] for i in range(2)]
    if "output_shape" in a:
        want = [int(v) for v in a["output_shape"]][-2:]
        if want != out:
            raise Unsupported(f"output_shape {want} (computed {out} from pads): only explicit "
                              "pads are supported")
    if len(s) != 2 or len(pads) != 4 or out[0] % s[0] or out[1] % s[1]:
        raise Unsupported(f"output {out[0]}x{out[1]} is not a multiple of the strides {s}")
    return s, pads, out


def conv_transpose(ctx: Ctx, node: onnx.NodeProto) -> None:
    """ConvTranspose -> one conv per output phase + interleave (module docstring)."""
    x = ctx.get(node, 0)
    w = ctx.const(node, 1, "weight")
    b = ctx.const(node, 2, "bias")
    if len(x.shape) != 4 or w is None or w.ndim != 4:
        raise Unsupported("only 2-D ConvTranspose of an NCHW map is supported")
    if int(attrs_of(node).get("group", 1)) != 1 or w.shape[0] != x.shape[1]:
        raise Unsupported("grouped ConvTranspose is not supported")
    s, pads, out = _geometry(node, x, w)
    cout = w.shape[1]
    bias = (b if b is not None else np.zeros(cout)).astype(np.float32)
    rows = [phase_taps(w.shape[2], s[0], pads[0], r, x.shape[2], out[0]) for r in range(s[0])]
    cols = [phase_taps(w.shape[3], s[1], pads[1], c, x.shape[3], out[1]) for c in range(s[1])]
    base = node.output[0]
    single = s == [1, 1]   # stride 1: one phase, the conv is the whole op
    phases = []
    for r, (th, pt, pb) in enumerate(rows):
        for c, (tw, pl, pr) in enumerate(cols):
            wp = w[:, :, th][:, :, :, tw].transpose(1, 0, 2, 3).astype(np.float32)
            wv = ctx.add_const(ctx.g.fresh_name(f"{base}__w{r}{c}"), np.ascontiguousarray(wp))
            bv = ctx.add_const(ctx.g.fresh_name(f"{base}__b{r}{c}"), bias.copy())
            attrs = ConvAttrs(kernel=(len(th), len(tw)), pads=(pt, pl, pb, pr))
            phases.append(ctx.emit(Op.CONV, node, [x, wv, bv], attrs,
                                   out_name=base if single else f"{base}__phase{r}{c}"))
    if not single:
        ctx.emit(Op.INTERLEAVE, node, phases, InterleaveAttrs(s[0], s[1]))


CONVTRANSPOSE_CONVERTERS = {"ConvTranspose": conv_transpose}
