"""Execute a float graph IR with numpy (NCHW, float32 data, float64 accumulation).

Used to calibrate (it can return every intermediate value) and to prove that the passes keep
the network's function: after every pass it must match ONNX Runtime (rtol 1e-4).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from tcc_compiler.errors import InternalError
from tcc_compiler.ir.graph import Graph, Node, Value
from tcc_compiler.ir.ops import LutFunc, Op, ResizeMode
from tcc_compiler.numerics.kernels import channel_shuffle_order
from tcc_compiler.numerics.lut import lut_function
from tcc_compiler.numerics.resize import bilinear_float


def _pad_nchw(x: np.ndarray, pads, value) -> np.ndarray:
    t, l, b, r = pads
    if not (t or l or b or r):
        return x
    return np.pad(x, ((0, 0), (0, 0), (t, b), (l, r)), constant_values=value)


def _windows(x: np.ndarray, kernel, strides, dilations=(1, 1)) -> np.ndarray:
    kh, kw = kernel
    eh, ew = (kh - 1) * dilations[0] + 1, (kw - 1) * dilations[1] + 1
    win = sliding_window_view(x, (eh, ew), axis=(2, 3))   # [N, C, OH', OW', eh, ew]
    return win[:, :, ::strides[0], ::strides[1], ::dilations[0], ::dilations[1]]


#: Largest float64 window copy (bytes) one conv evaluation makes at once; larger convs are
#: computed in bands of output rows. The einsum below copies the sliding windows into a
#: [rows * OW, C/g * KH * KW] matrix (8 bytes an element): a 3x3 conv on a 4096x4096 map made a
#: 3.6 GB copy. Below this size (every layer of the zoo models up to 960x520) one band is the
#: whole map, so results do not depend on it.
CONV_BAND_BYTES = 256 << 20


def conv2d_float(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, strides, pads,
                 dilations, group: int,
                 epilogue: Callable[[np.ndarray, slice], np.ndarray] | None = None
                 ) -> np.ndarray:
    """Float conv. x [N,C,H,W], w [O,C/g,KH,KW] -> [N,O,OH,OW] (float64 accumulate).

    Args:
        epilogue: optional ``(acc, rows) -> array``: applied to each band of output rows
            ``rows`` (a slice of OH) of the float64 accumulator (bias added); the result has
            its dtype (e.g. float32 after the activation), so the whole float64 output is
            never held. None returns the float64 accumulator.
    """
    xp = _pad_nchw(x.astype(np.float64), pads, 0.0)
    o, cg, kh, kw = w.shape
    win = _windows(xp, (kh, kw), strides, dilations)     # [N, C, OH, OW, KH, KW]
    n, _, oh, ow = win.shape[:4]
    og = o // group
    wf = w.astype(np.float64)
    bias = None if b is None else b.astype(np.float64).reshape(1, -1, 1, 1)
    row_bytes = max(1, n * cg * ow * kh * kw * 8)
    step = max(1, min(oh, CONV_BAND_BYTES // row_bytes))
    out = None
    for y0 in range(0, oh, step):
        rows = slice(y0, min(oh, y0 + step))
        acc = np.empty((n, o, rows.stop - rows.start, ow), np.float64)
        for g in range(group):
            cols = win[:, g * cg:(g + 1) * cg, rows]
            acc[:, g * og:(g + 1) * og] = np.einsum("ncyxkl,ockl->noyx", cols,
                                                    wf[g * og:(g + 1) * og], optimize=True)
        if bias is not None:
            acc += bias
        band = acc if epilogue is None else epilogue(acc, rows)
        if out is None:
            out = np.empty((n, o, oh, ow), band.dtype)
        out[:, :, rows] = band
    return out


def eval_node(node: Node, args: list[np.ndarray | None]) -> np.ndarray:
    """Evaluate one IR node on float arrays (NCHW). Returns float32 (int64 for argmax).

    Raises:
        InternalError: the op has no float rule.
    """
    rule = _RULES.get(node.op)
    if rule is None:
        raise InternalError(f"float interpreter: no rule for op {node.op.value}")
    return rule(node, node.attrs, args)


def _conv(node: Node, a, args) -> np.ndarray:
    sc = args[3] if len(args) > 3 else None
    k = args[4] if len(args) > 4 else None
    cl = args[5] if len(args) > 5 else None   # per-channel clamp [2, O] (after act)

    def epilogue(acc: np.ndarray, rows: slice) -> np.ndarray:  # per band of output rows
        if sc is not None:
            s = sc[:, :, rows].astype(np.float64)
            if k is not None:   # per-channel shortcut scale (> 0)
                s = s * k.astype(np.float64).reshape(1, -1, 1, 1)
            acc = acc + s
        y = a.act.apply(acc)
        if cl is not None:
            b = np.asarray(cl, np.float64).reshape(2, 1, -1, 1, 1)
            y = np.minimum(np.maximum(y, b[0]), b[1])
        return y.astype(np.float32)

    return conv2d_float(args[0], args[1], args[2], a.strides, a.pads, a.dilations, a.group,
                        epilogue)


def _fc(node: Node, a, args) -> np.ndarray:
    x, w = args[0], args[1]
    y = x.reshape(x.shape[0], -1).astype(np.float64) @ w.reshape(w.shape[0], -1).T.astype(
        np.float64) + args[2].astype(np.float64)
    if len(args) > 3 and args[3] is not None:
        y = y + args[3].reshape(y.shape)
    y = a.act.apply(y)
    return y.reshape(node.output.shape).astype(np.float32)


def _batchnorm(node: Node, a, args) -> np.ndarray:
    sc, bi, mu, var = (v.astype(np.float64).reshape(1, -1, 1, 1) for v in args[1:5])
    return ((args[0] - mu) / np.sqrt(var + a.epsilon) * sc + bi).astype(np.float32)


def _binary(node: Node, a, args) -> np.ndarray:
    x, bb = args[0], args[1]
    if bb.ndim < x.ndim and bb.size > 1:
        bb = bb.reshape((1, -1) + (1,) * (x.ndim - 2))
    x64 = x.astype(np.float64)
    y = x64 + bb if node.op is Op.ADD else x64 - bb if node.op is Op.SUB else x64 * bb
    return a.act.apply(y).astype(np.float32)


def _lut(node: Node, a, args) -> np.ndarray:
    """Lookup-table activation in float64 (prelu: slope [C] along NCHW axis 1, or scalar)."""
    x = args[0]
    slope = None
    if a.func is LutFunc.PRELU:
        slope = np.asarray(node.inputs[1].const, dtype=np.float64).reshape(-1)
        if slope.size > 1:
            slope = slope.reshape((1, -1) + (1,) * (x.ndim - 2))
    return lut_function(a.func, x, a.alpha, a.beta, slope).astype(np.float32)


def _maxpool(node: Node, a, args) -> np.ndarray:
    xp = _pad_nchw(args[0], a.pads, -np.inf)
    return _windows(xp, a.kernel, a.strides).max(axis=(4, 5)).astype(np.float32)


def _resize(node: Node, a, args) -> np.ndarray:
    """Nearest (a repeat) or bilinear upsampling of an NCHW map by integer factors."""
    if a.mode is ResizeMode.BILINEAR:
        return bilinear_float(args[0], a.scale_h, a.scale_w, a.coord.value)
    return np.repeat(np.repeat(args[0], a.scale_h, axis=2), a.scale_w, axis=3)


def _avgpool(node: Node, a, args) -> np.ndarray:
    x = args[0]
    xp = _pad_nchw(x.astype(np.float64), a.pads, 0.0)
    s = _windows(xp, a.kernel, a.strides).sum(axis=(4, 5))
    if a.count_include_pad or not any(a.pads):
        return (s / (a.kernel[0] * a.kernel[1])).astype(np.float32)
    ones = _pad_nchw(np.ones((1, 1) + x.shape[2:]), a.pads, 0.0)
    cnt = _windows(ones, a.kernel, a.strides).sum(axis=(4, 5))
    return (s / cnt).astype(np.float32)


def _softmax(node: Node, a, args) -> np.ndarray:
    x = args[0]
    e = np.exp(x.astype(np.float64) - x.max(axis=a.axis, keepdims=True))
    return (e / e.sum(axis=a.axis, keepdims=True)).astype(np.float32)


def _group_softmax(node: Node, a, args) -> np.ndarray:
    x = args[0]
    n, c, h, w = x.shape
    g = x.reshape(n, c // a.group, a.group, h, w).astype(np.float64)
    e = np.exp(g - g.max(axis=2, keepdims=True))
    return (e / e.sum(axis=2, keepdims=True)).reshape(x.shape).astype(np.float32)


#: Op -> float rule (node, attrs, input arrays) -> output array.
_RULES = {
    Op.CONV: _conv,
    Op.FC: _fc,
    Op.BATCHNORM: _batchnorm,
    Op.ADD: _binary,
    Op.MUL: _binary,
    Op.SUB: _binary,
    Op.RELU: lambda n, a, args: a.act.apply(args[0]).astype(np.float32),
    Op.CLIP: lambda n, a, args: a.act.apply(args[0]).astype(np.float32),
    Op.LUT: _lut,
    Op.MAXPOOL: _maxpool,
    Op.AVGPOOL: _avgpool,
    Op.GAP: lambda n, a, args: args[0].astype(np.float64).mean(
        axis=(2, 3), keepdims=True).astype(np.float32),
    Op.RESHAPE: lambda n, a, args: args[0].reshape(a.shape),
    Op.TRANSPOSE: lambda n, a, args: np.ascontiguousarray(args[0].transpose(a.perm)),
    Op.RESIZE: _resize,
    Op.SHUFFLE: lambda n, a, args: np.ascontiguousarray(
        args[0][:, channel_shuffle_order(args[0].shape[1], a.groups)]),
    Op.CONCAT: lambda n, a, args: np.concatenate(args, axis=a.axis),
    Op.SLICE: lambda n, a, args: np.ascontiguousarray(
        np.take(args[0], np.arange(a.start, a.end), axis=a.axis)),
    Op.INTERLEAVE: lambda n, a, args: interleave(args, a.sh, a.sw, (2, 3)),
    Op.SOFTMAX: _softmax,
    Op.GROUP_SOFTMAX: _group_softmax,
    Op.ARGMAX: lambda n, a, args: np.argmax(args[0], axis=a.axis).reshape(
        n.output.shape).astype(np.int64),
}


def interleave(phases: list[np.ndarray], sh: int, sw: int, axes: tuple[int, int]) -> np.ndarray:
    """Interleave ``sh * sw`` same-shaped phase arrays (row-major phase order) along the two
    spatial ``axes``: phase ``r * sw + c`` fills positions (y * sh + r, x * sw + c)."""
    ay, ax = axes
    shape = list(phases[0].shape)
    shape[ay] *= sh
    shape[ax] *= sw
    out = np.empty(shape, phases[0].dtype)
    for k, p in enumerate(phases):
        idx = [slice(None)] * len(shape)
        idx[ay], idx[ax] = slice(k // sw, None, sh), slice(k % sw, None, sw)
        out[tuple(idx)] = p
    return out


def run_float(graph: Graph, inputs: dict[str, np.ndarray] | np.ndarray,
              keep: bool = False,
              visit: Callable[[str, np.ndarray], None] | None = None) -> dict[str, np.ndarray]:
    """Run the graph on float inputs.

    Args:
        graph: float graph IR.
        inputs: {input name: float32 array} or a single array for the single input
            (shape as the graph input, e.g. NCHW [1,3,H,W]).
        keep: return every intermediate value too (memory: every activation at once).
        visit: called as ``visit(value name, array)`` for every graph input and then every
            node output as soon as it is computed (calibration streams its statistics this
            way). Without ``keep``, a value is dropped once its last consumer has run, so the
            memory held is the live activations only, not every activation of the network.

    Returns:
        {value name: array} for the graph outputs (and all values when ``keep``).

    Raises:
        InternalError: an op without a float rule.
    """
    env: dict[int, np.ndarray] = {}
    if isinstance(inputs, np.ndarray):
        inputs = {graph.inputs[0].name: inputs}
    for v in graph.inputs:
        env[id(v)] = np.asarray(inputs[v.name], dtype=np.float32)
        if visit is not None:
            visit(v.name, env[id(v)])
    last_use = {} if keep else _last_uses(graph)
    names: dict[int, Value] = {}
    for i, node in enumerate(graph.nodes):
        args = []
        for v in node.inputs:
            if v is None:
                args.append(None)
            elif v.is_const:
                args.append(v.const)
            else:
                args.append(env[id(v)])
        out = eval_node(node, args)
        del args
        env[id(node.output)] = out
        names[id(node.output)] = node.output
        if visit is not None:
            visit(node.output.name, out)
        for v in node.inputs:  # free what no later node reads (graph outputs stay)
            if v is not None and last_use.get(id(v)) == i:
                env.pop(id(v), None)
    result = {o.name: env[id(o)] for o in graph.outputs}
    if keep:
        for k, v in names.items():
            result[v.name] = env[k]
    return result


def _last_uses(graph: Graph) -> dict[int, int]:
    """{id(value): index of the last node reading it} for values that are not graph outputs."""
    outs = {id(o) for o in graph.outputs}
    last: dict[int, int] = {}
    for i, node in enumerate(graph.nodes):
        for v in node.inputs:
            if v is not None and not v.is_const and id(v) not in outs:
                last[id(v)] = i
    return last


def working_bytes(node: Node) -> int:
    """Upper bound of the bytes :func:`eval_node` allocates for ``node`` beyond its float32
    inputs and output (float64 copies, padded inputs, window matrices), from the rules above:
    a conv holds its padded input in float64, one band of windows (<= :data:`CONV_BAND_BYTES`)
    and a float64 band of the output three times (accumulator, shortcut sum, activation);
    other ops up to three float64 copies of their input and output. Used by the compile memory
    estimate (:func:`tcc_compiler.driver.estimate_compile_memory`)."""
    def elems(v) -> int:
        return int(np.prod(v.shape, dtype=np.int64)) if v is not None else 0

    x, y = node.inputs[0], node.output
    if node.op is Op.CONV:
        o, cg, kh, kw = node.inputs[1].shape
        n, _, oh, ow = y.shape
        _, c, h, w = x.shape
        t, l, b, r = node.attrs.pads
        padded = n * c * (h + t + b) * (w + l + r) * 8
        row_bytes = max(1, n * cg * ow * kh * kw * 8)
        rows = max(1, min(oh, CONV_BAND_BYTES // row_bytes))
        return padded + 2 * rows * row_bytes + 3 * n * o * rows * ow * 8
    return 3 * 8 * (elems(x) + elems(y))
