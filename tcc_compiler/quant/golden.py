"""Golden integer model: the quantized graph computed on whole tensors with the NPU numerics.

Independent of tiling, scheduling and binary encoding, so the reference executor must agree
with it bit for bit. Activations are single-image NHWC arrays [H, W, C]; a rank-2 value
[1, M] is held as [1, 1, M] (the same bytes).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from tcc_compiler.errors import InputError, InternalError
from tcc_compiler.interp.float_exec import eval_node, interleave
from tcc_compiler.ir.graph import Graph, Node
from tcc_compiler.ir.ops import HOST_OPS, Op, ResizeMode, VIEW_OPS
from tcc_compiler.ir.shapes import npu_hwc
from tcc_compiler.numerics import jit
from tcc_compiler.numerics import kernels as K
from tcc_compiler.numerics.eltwise import EwKind
from tcc_compiler.numerics.epilogue import EpilogueConsts, epilogue_consts
from tcc_compiler.quant import golden_conv, golden_epi, golden_gemm, golden_resize
from tcc_compiler.quant.golden_ew import ew_int
from tcc_compiler.quant.golden_input import quantize_input
from tcc_compiler.quant.golden_lut import lut_int8, lut_int16
from tcc_compiler.quant.golden_pool import avgpool_node, rescale
from tcc_compiler.quant.golden_softmax import group_softmax
from tcc_compiler.quant.params import (PoolQuant, add_quant, conv_quant, dequantize_output,
                                       group_softmax_table, lut_quant,
                                       ew_quant, pool_quant, uses_ew)


def weights_ohwi(node: Node) -> np.ndarray:
    """Conv/fc int8 (or int16) weights in the NPU's OHWI layout ([O, KH, KW, C/group])."""
    w = node.inputs[1].const
    return np.ascontiguousarray(w.transpose(0, 2, 3, 1))


def prepare_conv(node: Node, weights: golden_gemm.GoldWeights | None = None) -> tuple[
        golden_gemm.GoldWeights, object, EpilogueConsts | None, tuple | None]:
    """A conv/fc node's weights as the golden model's accumulators take them
    (:func:`~tcc_compiler.quant.golden_gemm.prepare_weights`), epilogue parameters
    (``conv_quant``), the float64 epilogue's factors
    (:func:`~tcc_compiler.numerics.epilogue.epilogue_consts`, or None; a shortcut bounded as
    int16, which covers int8) and the compiled epilogue's parameters
    (:func:`~tcc_compiler.numerics.jit.epilogue_params`, or None; both as (above, below)
    pairs for a two-slope epilogue), computed once per node by :class:`GoldenModel` (they
    depend only on the node's constants).

    Args:
        weights: the node's prepared weights when already made (the first element of an
            earlier ``prepare_conv`` of this node with the same weights: a caller changing
            only biases reuses them), or None: made here."""
    group = node.attrs.group if node.op is Op.CONV else 1
    q = conv_quant(node)
    consts = jit_params = None
    if q.two_slope:   # (above, below) pairs (numerics/epilogue.py two_slope_epilogue)
        consts = tuple(epilogue_consts(q.bias, m, q.shift, q.zp_out, q.act_lo, q.act_hi,
                                       out_dtype=q.out_dtype) for m in (q.mult, q.sc_mult))
        jit_params = tuple(jit.epilogue_params(q.bias, m, q.shift, None)
                           for m in (q.mult, q.sc_mult))
    elif not q.out_int32:
        has_sc = len(node.inputs) > 3 and node.inputs[3] is not None
        consts = epilogue_consts(q.bias, q.mult, q.shift, q.zp_out, q.act_lo, q.act_hi,
                                 q.sc_mult if has_sc else None, q.zp_sc, np.int16,
                                 q.out_dtype)
        jit_params = jit.epilogue_params(q.bias, q.mult, q.shift,
                                         q.sc_mult if has_sc else None)
    if weights is None:
        weights = golden_gemm.prepare_weights(weights_ohwi(node), group)
    return weights, q, consts, jit_params


def eval_int_node(node: Node, args: list[np.ndarray], prepared: tuple | None = None,
                  acc_fn=None, fused=None) -> np.ndarray:
    """One NPU op on NHWC integer arrays, whole tensors (the golden model's own kernels where
    it has them, ``quant/golden_*.py``; the conv accumulators ``quant/golden_gemm.py``).

    Args:
        node: a quantized NPU op. args: its operands (int8/int16 NHWC [H, W, C]; None
            for constants). prepared: for a conv/fc, :func:`prepare_conv` of this node (computed
            here when None). acc_fn: for a conv/fc, its accumulator routine for this very
            input shape (:func:`conv_accumulator`), or None: made here.
            fused: for a depthwise conv, :func:`conv_fused` for this very input shape (its
            accumulator and epilogue in one pass, the same bytes), or None.

    Returns:
        The op's integer NHWC output (int8 or int16 as the output value, or int32 for a
        raw-output conv).

    Raises:
        InternalError: an op without an integer rule.
    """
    x = args[0]
    if node.op in (Op.CONV, Op.FC):
        return _conv_int(node, args, prepared if prepared is not None else prepare_conv(node),
                         acc_fn, fused)
    if node.op is Op.MAXPOOL:
        a = node.attrs
        return maxpool_plain(x, a.kernel, a.strides, a.pads)
    if node.op is Op.GAP:
        return gap_int(x, pool_quant(node))
    if node.op is Op.AVGPOOL:   # its own (quant/golden_pool.py), not numerics' avgpool_int8
        return avgpool_node(node, x)
    if uses_ew(node):
        q = ew_quant(node)
        return ew_int(q.kind, x, args[1], q.zp_a, q.zp_b, q.zp_out, q.mult_a, q.mult_b,
                      q.shift, q.act_lo, q.act_hi, q.out_dtype)   # its own, not numerics'
    if node.op is Op.ADD:
        p = add_quant(node)
        return ew_int(EwKind.ADD, x, args[1], p.zp_a, p.zp_b, p.zp_out, p.mult_a, p.mult_b,
                      p.shift, p.act_lo, p.act_hi)
    if node.op is Op.LUT:
        lq = lut_quant(node)
        return (lut_int16(x, lq.tables[0], lq.wide_out) if lq.wide   # its own, not numerics/lut
                else lut_int8(x, lq.tables))
    if node.op is Op.GROUP_SOFTMAX:   # NHWC: each pixel's channel groups are contiguous
        return group_softmax(x, node.attrs.group, group_softmax_table(node))   # its own
    if node.op is Op.RESIZE:
        return _resize_int(node, x)
    if node.op is Op.SHUFFLE:  # NHWC: a permutation of the last axis; shared quantization
        return np.ascontiguousarray(x[:, :, K.channel_shuffle_order(x.shape[2],
                                                                    node.attrs.groups)])
    if node.op is Op.CONCAT:   # NHWC: channels are the last axis; one shared quantization
        return np.concatenate(args, axis=2)
    if node.op is Op.INTERLEAVE:   # NHWC: rows and columns are axes 0 and 1
        return interleave(args, node.attrs.sh, node.attrs.sw, (0, 1))
    if node.op is Op.SLICE:
        return np.ascontiguousarray(x[:, :, node.attrs.start:node.attrs.end])
    raise InternalError(f"golden model: no integer rule for {node.op.value} '{node.name}'")


def gap_int(x: np.ndarray, p: PoolQuant) -> np.ndarray:
    """Global average pooling of the NHWC int8/int16 map ``x`` [H, W, C] with its
    :func:`~tcc_compiler.quant.params.pool_quant` ``p`` (divisor H W folded into ``p.mult``):
    ``clamp(zp_y + (((sum(x) - H W zp_x) M + 2**(S-1)) >> S))`` per channel, in the type's
    range, the whole map's int64 sum taken at once (``sum(x - zp_x) = sum(x) - H W zp_x``
    exactly; |sum| < 2**32 for int16 maps up to 2**15 pixels, so ``|sum| M < 2**63``): the
    integers :func:`~tcc_compiler.numerics.kernels.avgpool_int8` (the executor's POOL_TILE
    kernel) gives over one H x W window, computed by the golden model's own formula (rounded
    by :func:`~tcc_compiler.quant.golden_pool.rescale`, not ``numerics.requantize``) so a
    fault in that kernel stays visible to ``--check``.

    Returns:
        ``x``'s dtype [1, 1, C] (int8 or int16, the output value's, which equals the input's).
    """
    h, w, c = x.shape
    sums = x.reshape(h * w, c).sum(axis=0, dtype=np.int64) - np.int64(h * w * int(p.zp_in))
    y = rescale(sums, p.mult, p.shift) + p.zp_out
    return np.clip(y, *K.int_range(x.dtype)).astype(x.dtype).reshape(1, 1, c)


def maxpool_plain(x: np.ndarray, kernel: tuple[int, int], strides: tuple[int, int],
                  pads: tuple[int, int, int, int]) -> np.ndarray:
    """Max pooling of the NHWC int8/int16 map ``x`` [H, W, C], ``pads`` (top, left, bottom,
    right) holding the type's minimum (ONNX pads with -inf): the running ``np.maximum`` of the
    ``kh x kw`` strided slices, the golden model's own loop rather than
    :func:`~tcc_compiler.numerics.kernels.maxpool_int8` (the executor's POOL_TILE kernel), so
    a fault in that kernel stays visible to ``--check`` (tests/runtime/test_check_catches.py).

    Returns:
        ``x``'s dtype [OH, OW, C], ``OH = (H + top + bottom - kh) // sh + 1`` (OW alike).
    """
    (kh, kw), (sh, sw), (t, left, b, r) = kernel, strides, pads
    h, w, c = x.shape
    xp = np.full((h + t + b, w + left + r, c), K.int_range(x.dtype)[0], x.dtype)
    xp[t:t + h, left:left + w] = x
    oh, ow = (h + t + b - kh) // sh + 1, (w + left + r - kw) // sw + 1
    y = None
    for i in range(kh):
        for j in range(kw):
            v = xp[i:i + (oh - 1) * sh + 1:sh, j:j + (ow - 1) * sw + 1:sw]
            y = v.copy() if y is None else np.maximum(y, v, out=y)
    return y


def conv_accumulator(node: Node, x: np.ndarray, prepared: tuple, repeat: bool = False):
    """The accumulator routine of conv/fc ``node`` (``prepared``: its :func:`prepare_conv`)
    for inputs of ``x``'s shape and dtype: the golden model's own
    (:func:`~tcc_compiler.quant.golden_gemm.accumulator`, not the executor's
    ``numerics/accumulator.py`` / ``conv_accumulate_f``, so a fault in those stays visible to
    ``--check``), chosen once so repeated runs skip the route choice; ``repeat``: a GEMM of
    few rows gets its weights packed once. The routine may give the unshifted sums
    (``.folded``): :func:`_conv_int` and :func:`conv_plain` then add
    :func:`~tcc_compiler.quant.golden_gemm.folded_bias`.

    Raises:
        ValueError: ``x`` does not fit the weights or the window."""
    cw, q = prepared[0], prepared[1]
    if node.op is Op.CONV:
        a = node.attrs
        return golden_gemm.accumulator(x.shape, x.dtype, q.zp_in, cw, a.strides, a.pads,
                                       a.dilations, repeat)
    return golden_gemm.accumulator(x.shape, x.dtype, q.zp_in, cw, repeat=repeat)


def _with_bias(q, acc_fn, cw):
    """``conv_quant`` ``q`` for the accumulators of ``acc_fn``: its bias
    :func:`~tcc_compiler.quant.golden_gemm.folded_bias` when they are unshifted sums."""
    if not acc_fn.folded:
        return q
    return dataclasses.replace(q, bias=golden_gemm.folded_bias(q.bias, q.zp_in, cw))


def conv_fused(node: Node, x: np.ndarray, prepared: tuple):
    """A depthwise conv ``node``'s accumulator, epilogue and per-channel clamp in one routine
    ``f(x) -> y`` for int8 inputs of ``x``'s shape (``prepared``: its :func:`prepare_conv`):
    the golden model's own kernel (:func:`~tcc_compiler.quant.golden_conv.own_depthwise`, not
    the executor's ``accumulator.depthwise_epilogue``, which it once fell back to: a fault
    there stayed invisible to ``--check`` where the own kernel declined); the bytes
    :func:`_conv_int` gives. None for any other conv (not depthwise, a shortcut input, int32
    or two-slope output, int16 weights or input) or when the own kernel declines (no
    compiled kernels, parameters outside its domain)."""
    cw, q, _, jit_params = prepared
    if (node.op is not Op.CONV or not cw.dw or x.dtype != np.int8 or x.ndim != 3
            or q.out_int32 or q.two_slope or q.wide_w or jit_params is None
            or (len(node.inputs) > 3 and node.inputs[3] is not None)):
        return None
    return _own_depthwise(node, x, prepared)   # None: _conv_int's own numpy epilogue


def conv_plain(node: Node, prepared: tuple, acc_fn):
    """A conv/fc ``node``'s accumulator routine ``acc_fn`` (:func:`conv_accumulator`) and its
    epilogue and per-channel clamp: the golden model's own kernel (:func:`~tcc_compiler.quant.
    golden_conv.own_epilogue`; not the executor's ``jit.epilogue_into`` nor ``jit.epilogue``,
    which shares its compiled kernel and which it once fell back to, so a fault there stays
    visible to ``--check``): a routine
    ``f(x, sc) -> y`` giving the bytes :func:`_conv_int` gives for an int8 NHWC ``x`` of the
    shape ``acc_fn`` was made for and the shortcut ``sc`` (int8/int16 broadcasting to the
    accumulator's [OH, OW, O], or None; present exactly when the node has one), int8/int16
    [OH, OW, O] as the output value, without ``_conv_int``'s per-call route choice; None when
    ``_conv_int`` would take another route (no ``acc_fn``, int32 / two-slope / 64-bit
    accumulator output, no compiled kernels or epilogue parameters, the own kernel declines).

    Why: part of the golden model's Python time per image (EfficientNet-Lite0: 33 such convs
    an image; with the run plan of :class:`GoldenModel`, 4.97 -> 4.72 ms of CPU per image,
    median of 40 alternating runs in one process, loaded), time the GIL is held beside the
    executor in ``tccc run --check``."""
    cw, q, _, params = prepared
    if (acc_fn is None or q.out_int32 or q.two_slope or q.wide_w or params is None
            or not jit.available() or params[0].size != cw.w.shape[0]):
        return None
    return _own_plain(node, prepared, acc_fn)   # None: _conv_int's own numpy epilogue


def _own_depthwise(node: Node, x: np.ndarray, prepared: tuple):
    """:func:`~tcc_compiler.quant.golden_conv.own_depthwise` for depthwise conv ``node``
    (``prepared``: its :func:`prepare_conv`) on inputs of ``x``'s shape."""
    a = node.attrs
    return golden_conv.own_depthwise(prepared[1], prepared[0], x.shape[2], a.strides, a.pads,
                                     a.dilations, npu_hwc(node.output.shape))


def _own_plain(node: Node, prepared: tuple, acc_fn):
    """:func:`conv_plain`'s routine with :func:`~tcc_compiler.quant.golden_conv.own_epilogue`
    after ``acc_fn``, or None (no kernels, parameters outside their domain). The caller has
    checked the route (``acc_fn`` given, a plain int32 accumulator)."""
    has_sc = len(node.inputs) > 3 and node.inputs[3] is not None
    tail = golden_conv.own_epilogue(_with_bias(prepared[1], acc_fn, prepared[0]), has_sc)
    if tail is None:
        return None

    def plain(x: np.ndarray, sc: np.ndarray | None) -> np.ndarray:
        return tail(acc_fn(x), sc)
    return plain


def _conv_int(node: Node, args: list[np.ndarray], prepared: tuple, acc_fn=None,
              fused=None, q=None) -> np.ndarray:
    """A conv/fc node on its NHWC integer operands (:func:`eval_int_node`; ``prepared``:
    :func:`prepare_conv` of the node; ``acc_fn``: its :func:`conv_accumulator` for this
    input shape, or None; ``fused``: its :func:`conv_fused`, used without a shortcut
    operand, or None; ``q``: ``_with_bias(prepared[1], acc_fn, prepared[0])`` when the
    caller made it once for ``acc_fn`` (:func:`_conv_route`), or None: made here)."""
    x = args[0]
    if fused is not None and (len(args) < 4 or args[3] is None):
        return fused(x)
    if acc_fn is None:
        acc_fn, q = conv_accumulator(node, x, prepared), None
    if q is None:
        q = _with_bias(prepared[1], acc_fn, prepared[0])
    acc = acc_fn(x)
    # the golden model's own numpy epilogues (quant/golden_epi.py), not numerics' executor ones
    if q.out_int32:   # 32-bit wrap of acc + bias (an int16 input's acc may pass 2**31)
        return golden_epi.raw_int32(acc, q.bias)
    if q.two_slope:
        return golden_epi.conv_epilogue(acc, q, None, two_slope=True)
    return golden_epi.conv_epilogue(acc, q, args[3] if len(args) > 3 else None)


def _resize_int(node: Node, x: np.ndarray) -> np.ndarray:
    """A resize of the NHWC int8 map ``x``: the golden model's own bilinear or nearest
    (quant/golden_resize.py, not numerics/resize.py)."""
    a = node.attrs
    if a.mode is ResizeMode.BILINEAR:
        return golden_resize.bilinear(x, a.scale_h, a.scale_w, a.coord.value)
    return golden_resize.nearest(x, a.scale_h, a.scale_w)


def _conv_route(node: Node, prepared: tuple, acc_fn, fused, plain, has_sc: bool):
    """The routine ``run(args) -> y`` a conv/fc ``node`` takes for operands ``args`` with a
    shortcut (``has_sc``) or without: its fused routine (no shortcut), its plain routine
    (the shortcut as the node's own inputs have it), else :func:`_conv_int` (the numpy
    epilogues: raw int32, two-slope, a kernel declining) with the bias for ``acc_fn``'s sums
    (:func:`_with_bias`) made here once, not on every call (an O-length int64 operation and a
    ``dataclasses.replace``: 5.5 of EfficientNet-Lite0's classifier's 29.6 us an image, loaded);
    the bytes :func:`eval_int_node` gives. Chosen once per input shape, so a run does not
    repeat the choice."""
    if fused is not None and not has_sc:
        return lambda args: fused(args[0])
    if plain is not None and has_sc == (len(node.inputs) > 3 and node.inputs[3] is not None):
        if has_sc:
            return lambda args: plain(args[0], args[3])
        return lambda args: plain(args[0], None)
    q = _with_bias(prepared[1], acc_fn, prepared[0]) if acc_fn is not None else None
    return lambda args: _conv_int(node, args, prepared, acc_fn, fused, q)


class GoldenModel:
    """The golden integer model of one quantized graph, prepared once for many inputs.

    Conv/fc weights are converted for the exact GEMM and their epilogue parameters derived once
    (:func:`prepare_conv`), so repeated runs (``tccc run --check``, ``eval``, reports) do not
    redo them. The graph must not change afterwards (bias correction edits biases: it calls
    :func:`eval_int_node` directly).

    Args:
        graph: quantized graph IR.
        weights: {conv/fc node name: its prepared weights} already made for these very
            weights (:func:`prepare_conv`'s first element; bias correction's trial models
            differ only in biases), or None; the nodes not in it are prepared here.
        prepared: {conv/fc node name: its whole :func:`prepare_conv`} already made from the
            graph's present constants (bias correction prepares them for its error pass), or
            None; used as they are, ``weights`` then serves the other nodes.
        repeat: the model will run on many inputs (``tccc run --check``): each integer GEMM
            of at most :data:`~tcc_compiler.quant.golden_gemm.PACKED_ROWS` rows gets an
            ONNX Runtime session of its own holding its weights packed
            (:func:`~tcc_compiler.quant.golden_gemm.accumulator`'s ``repeat``, the same exact
            sums), made on its first run (a few ms of CPU a conv, which a model run once or
            a few times, as bias correction's, would not win back).

    Why ``repeat``: packing the weights on every call was most of a small GEMM's time.
    EfficientNet-Lite0's 7x7 convs (49 rows), one ONNX Runtime call, CPU us per call
    (median of 200, loaded), per call vs packed: 49x192x1152 33.4 vs 27.3, 49x1152x192 32.1
    vs 26.0, 49x320x1280 59.8 vs 47.6, its classifier 1x1280x1000 45.3 vs 16.4; from 196 rows
    on within 5 %.
    """

    def __init__(self, graph: Graph,
                 weights: Mapping[str, golden_gemm.GoldWeights] | None = None,
                 prepared: Mapping[str, tuple] | None = None, repeat: bool = False):
        self.graph = graph
        self._repeat = repeat
        weights, prepared = weights or {}, prepared or {}
        self._prepared = {id(n): prepared[n.name] if n.name in prepared
                          else prepare_conv(n, weights.get(n.name)) for n in graph.nodes
                          if n.op in (Op.CONV, Op.FC)}
        # id(conv/fc node) -> (input shape, dtype and kernel set, its conv_accumulator,
        # conv_fused and conv_plain): chosen on the first run
        self._acc: dict[int, tuple] = {}
        # id(conv/fc node) -> (the same key, the routine run(args) _conv takes with a
        # shortcut operand, and without one): chosen on the first run
        self._routes: dict[int, tuple] = {}
        # per node: (node, ids of its non-constant inputs (None for a constant), id of its
        # output, its prepare_conv or None), the lookups each run would repeat
        self._plan = [(n, tuple(id(v) if v is not None and not v.is_const else None
                                for v in n.inputs), id(n.output), self._prepared.get(id(n)))
                      for n in graph.nodes]

    def _acc_fn(self, node: Node, x: np.ndarray) -> tuple:
        """``node``'s (accumulator routine, fused routine, plain routine) for ``x``
        (:func:`conv_accumulator`, :func:`conv_fused`, :func:`conv_plain`), made once per
        node, input shape and dtype, and kernel set (:func:`~tcc_compiler.numerics.jit.
        available`: switching the compiled kernels off makes them anew)."""
        key = (x.shape, x.dtype, jit.available())
        hit = self._acc.get(id(node))
        if hit is None or hit[0] != key:
            prepared = self._prepared[id(node)]
            acc = conv_accumulator(node, x, prepared, self._repeat)
            plain = conv_plain(node, prepared, acc) if x.dtype == np.int8 else None
            hit = self._acc[id(node)] = (key, acc, conv_fused(node, x, prepared), plain)
        return hit[1:]

    def _conv(self, node: Node, args: list, prepared: tuple) -> np.ndarray:
        """A conv/fc node on its operands (:func:`eval_int_node`'s bytes), through its
        fused or plain routine when one applies (:func:`_conv_route`, chosen once per input
        shape from :meth:`_acc_fn`'s routines)."""
        x = args[0]
        key = (x.shape, x.dtype, jit.available())
        hit = self._routes.get(id(node))
        if hit is None or hit[0] != key:
            acc_fn, fused, plain = self._acc_fn(node, x)
            hit = self._routes[id(node)] = (key, *(
                _conv_route(node, prepared, acc_fn, fused, plain, sc) for sc in (True, False)))
        return hit[1 if len(args) > 3 and args[3] is not None else 2](args)

    def conv(self, node: Node, args: list) -> np.ndarray:
        """Conv/fc ``node`` of the graph on its integer NHWC operands ``args`` (None for the
        constants), through its routines for that input shape as :meth:`run` takes them: the
        bytes :func:`eval_int_node` gives (bias correction's isolated layer errors). Safe to
        call from several threads (a routine made twice is made the same)."""
        return self._conv(node, args, self._prepared[id(node)])

    def run(self, x, keep: bool = False) -> dict[str, np.ndarray]:
        """Run on one input; see :func:`run_golden` (same arguments and result)."""
        graph = self.graph
        env: dict[int, np.ndarray] = {}
        given = x if isinstance(x, Mapping) else {graph.inputs[0].name: x}
        for inp in graph.inputs:
            a = given.get(inp.name)
            if a is None:
                raise InputError(f"golden model: no array for graph input '{inp.name}'")
            a = np.asarray(a)
            env[id(inp)] = np.ascontiguousarray(a) if a.dtype.kind == "i" else \
                quantize_input(a, inp)
        floats: dict[int, np.ndarray] = {}
        result: dict[str, np.ndarray] = {}
        for node, ids, out, prepared in self._plan:
            if node.op in HOST_OPS:
                src = node.inputs[0]
                f = floats.get(id(src))
                if f is None:
                    f = dequantize_output(env[id(src)], src)
                    result["int:" + src.name] = env[id(src)]
                floats[out] = eval_node(node, [f])
                continue
            args = [None if i is None else env[i] for i in ids]
            if node.op in VIEW_OPS:  # legalize guarantees the NHWC bytes are unchanged
                env[out] = args[0].reshape(npu_hwc(node.output.shape))
            elif prepared is not None:
                env[out] = self._conv(node, args, prepared)
            else:
                env[out] = eval_int_node(node, args)
        for o in graph.outputs:
            if id(o) in floats:
                result[o.name] = floats[id(o)]
            else:
                result[o.name] = dequantize_output(env[id(o)], o)
                result["int:" + o.name] = env[id(o)]
        if keep:
            for node in graph.nodes:
                if id(node.output) in env:
                    result.setdefault("int:" + node.output.name, env[id(node.output)])
        return result


def run_golden(graph: Graph, x, keep: bool = False) -> dict[str, np.ndarray]:
    """Run the quantized graph on one input (prepares the weights each call; use
    :class:`GoldenModel` for several inputs).

    Args:
        graph: quantized graph IR.
        x: float32 NCHW [1, C, H, W] input (as the ONNX model takes it, after preprocessing),
            or, for a graph with several inputs (an NPU segment), {graph input name: array}:
            each float32 NCHW, quantized with its value's parameters, or already quantized
            (an integer array, NHWC [H, W, C] as the NPU holds it: an earlier NPU segment's
            output handed over as it is).

    Raises:
        InputError: a graph input without an array.
        keep: also return every intermediate integer array under its value name.

    Returns:
        {output name: float32 array} (dequantized, host ops applied) plus, under
        ``"int:" + name``, the raw integer NHWC array of each NPU output.
    """
    return GoldenModel(graph).run(x, keep)
