"""Per-layer accuracy analysis of a quantized graph against its float original.

For every NPU layer (conv, fc, add, pooling) and every input image, two errors of the layer's
dequantized output against the float output of the same value:

* **accumulated**: the quantized network run from the input (the golden integer model, which
  the reference executor matches bit for bit): the error every layer before it has added;
* **isolated**: the layer alone, fed the *float* values of its inputs quantized with the
  layer's input parameters: the error this layer adds by itself (its weight rounding, its
  output range and requantization).

Metrics over all elements of all inputs (float64): cosine similarity
``sum(f q) / sqrt(sum f^2 sum q^2)``, SQNR ``10 log10(sum f^2 / sum (f - q)^2)`` (dB; +inf
when exact) and the largest ``|f - q|`` (real units). Rows are sorted by isolated SQNR, worst
first, and carry each layer's source ONNX node names.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from typing import Iterable

import numpy as np

from tcc_compiler.errors import InputError
from tcc_compiler.interp import run_float
from tcc_compiler.ir.feeds import feeds
from tcc_compiler.ir.graph import Graph, Value
from tcc_compiler.ir.ops import HOST_OPS, VIEW_OPS
from tcc_compiler.quant.golden import eval_int_node, run_golden
from tcc_compiler.quant.params import dequantize_output, quantize_input

log = logging.getLogger(__name__)


class _Acc:
    """Running sums for cosine / SQNR / max-abs error over several inputs."""

    def __init__(self) -> None:
        self.ff = self.qq = self.fq = self.ee = 0.0
        self.max_abs = 0.0

    def add(self, f: np.ndarray, q: np.ndarray) -> None:
        f = np.asarray(f, np.float64).reshape(-1)
        q = np.asarray(q, np.float64).reshape(-1)
        e = f - q
        self.ff += float(f @ f)
        self.qq += float(q @ q)
        self.fq += float(f @ q)
        self.ee += float(e @ e)
        self.max_abs = max(self.max_abs, float(np.abs(e).max()) if e.size else 0.0)

    def metrics(self) -> "LayerError":
        den = math.sqrt(self.ff * self.qq)
        cos = self.fq / den if den > 0 else (1.0 if self.ee == 0 else 0.0)
        if self.ee == 0.0:
            sqnr = math.inf
        elif self.ff == 0.0:
            sqnr = -math.inf
        else:
            sqnr = 10.0 * math.log10(self.ff / self.ee)
        return LayerError(cos, sqnr, self.max_abs)


@dataclass(frozen=True)
class LayerError:
    """Error of one layer's output: cosine (1 = same direction), SQNR (dB), max |f - q|."""

    cosine: float
    sqnr_db: float
    max_abs: float


@dataclass
class LayerReport:
    """One NPU layer: node name, op, output value, source ONNX nodes and its two errors;
    ``segment``: the NPU segment's folder (``npu_<k>``) of a segmented model, else ""."""

    node: str
    op: str
    output: str
    source: list[str] = field(default_factory=list)
    accumulated: LayerError | None = None
    isolated: LayerError | None = None
    segment: str = ""

    def to_dict(self) -> dict:
        """JSON-ready dict. A non-finite SQNR is ``None`` (JSON ``null``; standard JSON has no
        Infinity): ``sqnr_db: null`` means the layer's int8 output equals the float one
        exactly (infinite SQNR) or the float output is all zero (``max_abs_err`` tells).
        ``segment`` only for a segmented model's rows."""
        d = asdict(self)
        if not d["segment"]:
            del d["segment"]   # a whole-NPU model's rows as before
        for k in ("accumulated", "isolated"):
            if d[k] is not None and not math.isfinite(d[k]["sqnr_db"]):
                d[k]["sqnr_db"] = None
        return d


def _to_nchw4(f: np.ndarray) -> np.ndarray:
    """A float value as NCHW rank 4 (a rank-2 [1, M] becomes [1, M, 1, 1]: same NHWC bytes)."""
    return f.reshape(1, -1, 1, 1) if f.ndim == 2 else f


def quantize_value(f: np.ndarray, v: Value) -> np.ndarray:
    """Float NCHW value -> the integer NHWC array the NPU holds for ``v`` (int8 per tensor)."""
    q = quantize_input(_to_nchw4(f), v)
    if len(v.shape) == 2:
        q = q.reshape(1, 1, -1)
    return q


def analyze(float_graph: Graph, qgraph: Graph, inputs: Iterable[np.ndarray],
            progress=None) -> list[LayerReport]:
    """Per-layer accumulated and isolated errors, worst isolated SQNR first.

    Args:
        float_graph: the float graph after the float passes (same node and value names as
            ``qgraph``: what the driver quantized).
        qgraph: the quantized graph (e.g. loaded from an output folder's quantized.tir).
        inputs: float32 NCHW inputs shaped like the graph input.
        progress: optional iterable wrapper (tqdm).

    Returns:
        One :class:`LayerReport` per NPU node (views and host ops are not layers).

    Raises:
        InputError: no inputs, or the float graph does not match the quantized one (a value
            of the quantized graph missing from the float run: wrong model for this folder).
    """
    inputs = list(inputs)
    if not inputs:
        raise InputError("analyze: give at least one input")
    layers = [n for n in qgraph.nodes if n.op not in HOST_OPS and n.op not in VIEW_OPS]
    acc = {n.name: _Acc() for n in layers}
    iso = {n.name: _Acc() for n in layers}
    it = progress(inputs) if progress else inputs
    for x in it:
        x = feeds(float_graph, x)   # {graph input: array}
        fl = run_float(float_graph, x, keep=True)
        fl.update(x)
        gold = run_golden(qgraph, x, keep=True)
        for n in layers:
            out = n.output
            if out.name not in fl:
                raise InputError(f"analyze: value '{out.name}' of node '{n.name}' is not in the "
                                 "float model: is this the model the folder was compiled from?")
            f = fl[out.name]
            q = dequantize_output(gold["int:" + out.name], out)
            acc[n.name].add(f, q)
            args = []
            for v in n.inputs:
                if v is None or v.is_const:
                    args.append(None)
                elif v.name not in fl:
                    raise InputError(f"analyze: input '{v.name}' of node '{n.name}' is not in "
                                     "the float model")
                else:
                    args.append(quantize_value(fl[v.name], v))
            iq = eval_int_node(n, args)
            iso[n.name].add(f, dequantize_output(iq.reshape(gold["int:" + out.name].shape),
                                                 out))
    rows = [LayerReport(n.name, n.op.value, n.output.name, list(n.source),
                        acc[n.name].metrics(), iso[n.name].metrics()) for n in layers]
    rows.sort(key=lambda r: (r.isolated.sqnr_db, r.accumulated.sqnr_db))
    return rows


def isolated_errors(float_graph: Graph, qgraphs: list[Graph],
                    inputs: Iterable[np.ndarray]) -> list[dict[str, float]]:
    """The isolated SQNR (dB, as :func:`analyze`'s ``isolated``) of every NPU layer of each
    quantized graph in ``qgraphs`` (all quantized from ``float_graph``, same names), the float
    network run once per input for all of them (no golden runs).

    Returns:
        One {layer name: isolated SQNR dB} per graph, in ``qgraphs`` order.

    Raises:
        InputError: no inputs, or a value missing from the float run.
    """
    inputs = list(inputs)
    if not inputs:
        raise InputError("analyze: give at least one input")
    layers = [[n for n in g.nodes if n.op not in HOST_OPS and n.op not in VIEW_OPS]
              for g in qgraphs]
    iso = [{n.name: _Acc() for n in ls} for ls in layers]
    for x in inputs:
        x = feeds(float_graph, x)   # {graph input: array}
        fl = run_float(float_graph, x, keep=True)
        fl.update(x)
        for ls, acc in zip(layers, iso):
            for n in ls:
                q = _isolated_output(n, fl)
                acc[n.name].add(fl[n.output.name], q)
    return [{k: a.metrics().sqnr_db for k, a in acc.items()} for acc in iso]


def _isolated_output(n, fl: dict) -> np.ndarray:
    """Node ``n`` alone on its float inputs ``fl`` quantized with its input parameters,
    dequantized (NCHW like its float output).

    Raises:
        InputError: a value of ``n`` missing from ``fl``.
    """
    if any(v is not None and not v.is_const and v.name not in fl for v in n.inputs) \
            or n.output.name not in fl:
        raise InputError(f"analyze: a value of node '{n.name}' is not in the float model")
    args = [None if v is None or v.is_const else quantize_value(fl[v.name], v)
            for v in n.inputs]
    f = _to_nchw4(fl[n.output.name])
    q = eval_int_node(n, args).reshape(f.shape[2], f.shape[3], f.shape[1])
    return dequantize_output(q, n.output)


def format_table(rows: list[LayerReport], limit: int | None = None) -> str:
    """A fixed-width text table of the rows (worst first), one line per layer, each layer
    name whole (the names a ``--precision`` file takes); a segmented model's rows start with
    their NPU segment's folder."""
    shown = rows[:limit] if limit else rows
    seg = any(r.segment for r in rows)
    wid = max([28] + [len(r.node) for r in shown])
    first = f"{'segment':<8} " if seg else ""
    head = (f"{first}{'layer':<{wid}} {'op':<8} {'iso SQNR':>9} {'iso cos':>9} {'iso max':>9} "
            f"{'acc SQNR':>9} {'acc cos':>9} {'acc max':>9}  source ONNX nodes")
    lines = [head, "-" * len(head)]
    for r in shown:
        a, i = r.accumulated, r.isolated
        first = f"{r.segment:<8} " if seg else ""
        lines.append(f"{first}{r.node:<{wid}} {r.op:<8} {i.sqnr_db:9.2f} {i.cosine:9.6f} "
                     f"{i.max_abs:9.4g} {a.sqnr_db:9.2f} {a.cosine:9.6f} {a.max_abs:9.4g}  "
                     + ", ".join(r.source))
    return "\n".join(lines)
