"""Channel concat and slice as views of one DRAM buffer (and the copies where a view is
impossible).

An NHWC tensor's channel range ``[c0, c0 + k)`` is a strided box of it: every pixel's ``k``
channels at byte ``c0`` of the pixel, pixels ``pitch`` bytes apart (the whole tensor's channels
times element bytes). The DMA engine moves such boxes (two-level strides, specs/isa.md), so a
producer can write its output straight into a channel slice of a concatenation, and a reader can
read a channel slice of a tensor, with no copy. This module decides, once per lowering, where
each value involved in a channel concat or slice lives:

* a slice output is a view of its input at channel ``start``;
* a concat input is placed inside the concat's buffer at its channel offset when it is a
  tensor of its own (written by an NPU op, not the network input or an NPU output, not
  placed elsewhere already -- a value listed twice is placed at its first place --, read by
  no reshape), or when it is a slice of such a
  tensor whose other slices fill the rest of that tensor's place (YOLO's C2f: the conv
  output split in two halves, both concatenated again in order);
* an interleave's phase (one conv of a transposed convolution) is placed at its pixels of
  the output (rows ``sh`` apart, pixels ``sw`` apart) when a conv writes it for nothing else;
* otherwise the input is copied (DMA load + store through SRAM, schedule/ops/copy.py),
  and likewise a slice whose output must be a tensor of its own (an NPU output, read by a
  reshape).

Placement is greedy in graph order, so the result is deterministic. Values tied to a view
(placed, or holding placed values) are never kept resident in SRAM nor cascade intermediates:
they live in DRAM, where the views are.
"""

from __future__ import annotations

from dataclasses import dataclass

from tcc_compiler.ir.graph import Graph, Node, Value
from tcc_compiler.ir.ops import HOST_OPS, VIEW_OPS, Op


@dataclass(frozen=True)
class ChannelViews:
    """Where the values of channel concats and slices live.

    Attributes:
        place: id(value) -> (value whose buffer holds it, view spec (c0, y0, x0, sy, sx)):
            the value's element (y, x, c) is the holder's (y0 + sy*y, x0 + sx*x, c0 + c)
            (resolve with :meth:`resolve`).
        copies: id(node) -> input indices copied at the node's place (concat: inputs copied
            into their channel range of the output; interleave: phases copied into their
            pixels; slice: (0,) when the slice is a copy).
        tied: ids of values that must stay in DRAM (placed values, their buffers, copy
            sources and destinations, and the operands of the DMA-only resize).
    """

    place: dict
    copies: dict
    tied: frozenset

    def resolve(self, v: Value) -> tuple[Value, tuple[int, int, int, int, int]]:
        """(the value owning ``v``'s buffer, ``v``'s view spec in it), views composed."""
        spec = IDENTITY
        while id(v) in self.place:
            v, outer = self.place[id(v)]
            spec = compose(outer, spec)
        return v, spec


#: The view spec of a value in its own buffer.
IDENTITY = (0, 0, 0, 1, 1)


def channel_spec(c0: int) -> tuple[int, int, int, int, int]:
    """The view spec of channels starting at ``c0``."""
    return (c0, 0, 0, 1, 1)


def compose(outer, inner) -> tuple[int, int, int, int, int]:
    """The spec of a view ``inner`` of a view ``outer``: (y, x, c) -> outer(inner(y, x, c))."""
    c0, y0, x0, sy, sx = outer
    d0, z0, w0, ty, tx = inner
    return (c0 + d0, y0 + sy * z0, x0 + sx * w0, sy * ty, sx * tx)


def npu_output_ids(graph: Graph) -> set[int]:
    """ids of the values the host reads: graph outputs and inputs of host ops."""
    out = {id(o) for o in graph.outputs}
    for n in graph.nodes:
        if n.op in HOST_OPS:
            out.update(id(v) for v in n.inputs if v is not None)
    return out


class _Planner:
    def __init__(self, graph: Graph):
        self.g = graph
        self.outs = npu_output_ids(graph)
        self.place: dict[int, tuple[Value, int]] = {}
        self.copies: dict[int, tuple[int, ...]] = {}
        self.tied: set[int] = set()

    def own_tensor(self, v: Value) -> bool:
        """True when ``v`` may become a view: it has no place yet, the host does not read it,
        no reshape reads it, and an NPU op writes it."""
        p = v.producer
        return (id(v) not in self.place and id(v) not in self.outs and p is not None
                and p.op not in VIEW_OPS and p.op not in HOST_OPS
                and all(u.op not in VIEW_OPS for u, _ in v.uses))

    def slice_(self, n: Node) -> None:
        x, out = n.inputs[0], n.output
        self.tied.update((id(x), id(out)))
        if id(out) in self.outs or any(u.op in VIEW_OPS for u, _ in out.uses):
            self.copies[id(n)] = (0,)
        else:
            self.place[id(out)] = (x, channel_spec(n.attrs.start))

    def _slices_fill(self, n: Node, x: Value, base: int, pos: list[int]) -> bool:
        """True when every concat input overlapping [base, base + C_x) is a slice of ``x``
        at its offset and none crosses the range's ends."""
        cx = x.shape[1]
        for v, p in zip(n.inputs, pos):
            end = p + v.shape[1]
            if end <= base or p >= base + cx:
                continue
            pr = v.producer
            if p < base or end > base + cx or pr is None or pr.op is not Op.SLICE \
                    or pr.inputs[0] is not x or pr.attrs.start != p - base \
                    or self.place.get(id(v), (None,))[0] is not x:
                return False
        return True

    def _try_slice_source(self, n: Node, v: Value, p: int, pos: list[int]) -> bool:
        """Place the tensor ``v`` is a slice of inside the concat (see module doc)."""
        pr = v.producer
        if pr is None or pr.op is not Op.SLICE or self.place.get(id(v), (None,))[0] \
                is not pr.inputs[0]:
            return False
        x = pr.inputs[0]
        base = p - pr.attrs.start
        if base < 0 or base + x.shape[1] > n.output.shape[1] or not self.own_tensor(x) \
                or any(x is u for u in n.inputs):
            return False
        if not self._slices_fill(n, x, base, pos):
            return False
        self.place[id(x)] = (n.output, channel_spec(base))
        self.tied.add(id(x))
        return True

    def concat(self, n: Node) -> None:
        out = n.output
        self.tied.add(id(out))
        pos, p = [], 0
        for v in n.inputs:
            pos.append(p)
            p += v.shape[1]
        copied = []
        for i, (v, p) in enumerate(zip(n.inputs, pos)):
            self.tied.add(id(v))
            r, spec = self.resolve(v)
            if r is out and spec == channel_spec(p):
                continue   # placed with the tensor it is a slice of
            if self.own_tensor(v):   # (a value listed twice is placed once, then copied)
                self.place[id(v)] = (out, channel_spec(p))
            elif not self._try_slice_source(n, v, p, pos):
                copied.append(i)
        if copied:
            self.copies[id(n)] = tuple(copied)

    def resolve(self, v: Value):
        return ChannelViews(self.place, {}, frozenset()).resolve(v)

    def interleave(self, n: Node) -> None:
        """Place each phase (a conv output read by nothing else) at its pixels of the
        output; copy the others."""
        out = n.output
        self.tied.add(id(out))
        copied = []
        for k, v in enumerate(n.inputs):
            self.tied.add(id(v))
            p = v.producer
            if self.own_tensor(v) and p.op is Op.CONV and len(v.uses) == 1:
                self.place[id(v)] = (out, (0, k // n.attrs.sw, k % n.attrs.sw, n.attrs.sh,
                                           n.attrs.sw))
            else:
                copied.append(k)
        if copied:
            self.copies[id(n)] = tuple(copied)

    def run(self) -> ChannelViews:
        for n in self.g.nodes:
            if n.op in (Op.RESIZE, Op.SHUFFLE):   # row-band ops: operands stay in DRAM
                self.tied.update((id(n.inputs[0]), id(n.output)))
            elif n.op is Op.SLICE:
                self.slice_(n)
            elif n.op is Op.CONCAT:
                self.concat(n)
            elif n.op is Op.INTERLEAVE:
                self.interleave(n)
        return ChannelViews(dict(self.place), dict(self.copies), frozenset(self.tied))


def plan_views(graph: Graph) -> ChannelViews:
    """Decide which channel concat/slice values are views and which are copied (see the
    module docstring); deterministic for a given graph."""
    return _Planner(graph).run()
