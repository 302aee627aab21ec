"""One core running several images with only the weight-heavy tail of the network batched
(the stream program's ``images_per_core`` > 1, schedule/corestream.py; specs/manifest.md
"Stream program").

A network's early layers hold large activations and few weights, its late layers the
reverse (ResNet-50 224: the first 15 % of the weights are applied to 56x56 and 28x28 maps;
layer3, layer4 and the FC hold 23 MB of weights on 14x14 and 7x7 maps). Batching the whole
network (:func:`~tcc_compiler.schedule.batch.lower_batch`) reads every weight once per
``images`` images but leaves each image a fraction of the SRAM, so the early maps go through
DRAM; batching only the tail keeps both: the network is cut at one tensor (the *boundary*),
the head runs image after image with the whole SRAM for its resident zone, each image's
boundary tensor is stored to DRAM, and the tail runs all the images op by op, one weight
load per block for all of them, each with a resident zone of its own (its tensors are small).

Per core the DRAM layout is: INPUT and OUTPUT slots per image (as :func:`lower_batch`); the
ACT region holds the work area (the head's arena, reused by every image, and the tail's,
``images`` slots) followed by one boundary slot per image. The head's OUTPUT region is
mapped onto its image's boundary slot and the tail's INPUT region onto the boundary slots.
Each part starts after everything before it has finished (a *barrier*: the first command of
each queue in a part waits for every earlier command of all three queues, specs/isa.md
"Dependencies are explicit"), so the parts reuse SRAM and the work area safely; the
hazard checker verifies it as for any program.
"""

from __future__ import annotations

import dataclasses

from tcc_compiler.errors import ScheduleError
from tcc_compiler.ir.graph import Graph, Node, Value
from tcc_compiler.ir.ops import CHANNEL_OPS, HOST_OPS, VIEW_OPS
from tcc_compiler.isa import commands as C
from tcc_compiler.isa.spec import Queue, Region, dram_address, split_dram_address
from tcc_compiler.isa.wcodec import BlockCompressor
from tcc_compiler.isa.wlayout import WeightLayoutBuilder
from tcc_compiler.schedule.batch import lower_batch
from tcc_compiler.schedule.program import Program
from tcc_compiler.target import Target


@dataclasses.dataclass(frozen=True)
class Cut:
    """A place to cut ``graph`` in two: ``index`` (the head is ``graph.nodes[:index]``),
    ``boundary`` (the one value the head hands the tail) and ``tail_weight_elems`` (constant
    elements the tail's nodes read: the share of the weights batching the tail saves)."""

    index: int
    boundary: str
    tail_weight_elems: int


def cuts(graph: Graph) -> list[Cut]:
    """Every place ``graph`` can be cut into a head and a tail handing over one tensor: a
    value produced by a node of the head (not a view, channel or host op), read by the tail
    and no graph output, with no other head value nor the graph input read by the tail and
    every graph output computed by the tail. In graph order."""
    nodes = graph.nodes
    pos = {id(n): i for i, n in enumerate(nodes)}
    weights = [const_elems(n) for n in nodes]
    last_input_read, first_output = _limits(graph, pos)
    out: list[Cut] = []
    live: dict[int, tuple[Value, int]] = {}   # value id -> (value, last reader's index)
    for i, n in enumerate(nodes[:-1]):
        for v in n.outputs:
            readers = [pos[id(u)] for u, _ in v.uses if id(u) in pos]
            if readers:
                live[id(v)] = (v, max(readers))
        live = {k: x for k, x in live.items() if x[1] > i}
        if len(live) == 1 and last_input_read <= i < first_output:
            (v, _), = live.values()
            if _hands_over(graph, v):
                out.append(Cut(i + 1, v.name, sum(weights[i + 1:])))
    return out


def _limits(graph: Graph, pos: dict) -> tuple[int, int]:
    """(index of the last node reading a graph input, index of the first node computing a
    graph output; ``pos``: id(node) -> index): a cut's head ends between them."""
    inputs = {id(v) for v in graph.inputs}
    last = max((i for i, n in enumerate(graph.nodes)
                if any(v is not None and id(v) in inputs for v in n.inputs)), default=-1)
    first = min((pos[id(v.producer)] for v in graph.outputs
                 if v.producer is not None and id(v.producer) in pos),
                default=len(graph.nodes))
    return last, first


def const_elems(n: Node) -> int:
    """Elements of the constant inputs (weights, biases) node ``n`` reads."""
    return sum(v.const.size for v in n.inputs if v is not None and v.const is not None)


def _hands_over(graph: Graph, v: Value) -> bool:
    """Whether ``v`` may be the boundary of a cut: computed by an op of its own (not a view,
    channel or host op) and no graph output."""
    p = v.producer
    return not (p is None or p.op in VIEW_OPS or p.op in CHANNEL_OPS or p.op in HOST_OPS
                or graph.is_output(v))


def split_graph(graph: Graph, cut: Cut) -> tuple[Graph, Graph]:
    """(head, tail): two graphs made of ``graph.nodes[:cut.index]`` and the rest; the head's
    only output and the tail's only input is the boundary value (same name, shape, dtype and
    quantization). ``graph`` is not changed.

    Raises:
        ScheduleError: ``cut`` is not one of :func:`cuts`' for this graph.
    """
    head = graph.clone()
    b = next((v for n in head.nodes[:cut.index] for v in n.outputs if v.name == cut.boundary),
             None)
    if b is None:
        raise ScheduleError(f"cut at {cut.boundary!r}: no such value before node {cut.index}")
    head.outputs = [b]
    for n in reversed(head.nodes[cut.index:]):
        head.remove_node(n)
    tail = graph.clone()
    old = next(v for n in tail.nodes[:cut.index] for v in n.outputs if v.name == cut.boundary)
    new = Value(old.name, old.shape, old.dtype, quant=old.quant)
    for node, idx in list(old.uses):
        tail.set_input(node, idx, new)
    for n in reversed(tail.nodes[:cut.index]):
        tail.remove_node(n)
    tail.inputs = [new]
    return head, tail


def _mapped(cmd: C.Command, to: dict[Region, tuple[Region, int]]) -> C.Command:
    """``cmd`` with a DRAM address of region ``r`` moved to ``to[r]`` = (region, bytes
    added)."""
    if not isinstance(cmd, (C.DmaLoad, C.DmaStore)):
        return cmd
    region, off = split_dram_address(cmd.dram)
    if region not in to:
        return cmd
    r, d = to[region]
    return dataclasses.replace(cmd, dram=dram_address(r, off + d))


def barrier(cmds: list[C.Command]) -> list[C.Command]:
    """``cmds`` whose first command on each queue waits for every earlier command of the
    LOAD, COMPUTE and STORE queues (wait fields 0): nothing of ``cmds`` starts before all
    that precedes it has finished."""
    out, seen = list(cmds), set()
    for i, c in enumerate(out):
        if c.queue is Queue.CONTROL or c.queue in seen:
            continue
        seen.add(c.queue)
        out[i] = dataclasses.replace(c, wait_load=0, wait_compute=0, wait_store=0)
        if len(seen) == 3:
            break
    return out


def _align(n: int, a: int) -> int:
    return -(-n // a) * a


def lower_tail_batch(graph: Graph, t: Target, images: int, cut: Cut,
                     compressor: BlockCompressor | None, head_zone_bytes: int,
                     tail_zone_bytes: int) -> tuple[Program, dict]:
    """A one-core program running ``images`` images: the head of ``graph`` (cut at ``cut``)
    image after image with a resident zone of ``head_zone_bytes``, then the tail of all of
    them op by op (:func:`~tcc_compiler.schedule.batch.lower_batch`, a zone of
    ``tail_zone_bytes`` per image); see the module docstring for the DRAM layout.

    Returns:
        (the program, its per-image strides by region, as :func:`lower_batch`'s): image
        ``k``'s input at ``k * strides[INPUT]``, outputs at ``k * strides[OUTPUT]``; the ACT
        region is ``images * strides[ACT]`` bytes.

    Raises:
        ScheduleError: an op of either part cannot be tiled; the head's output and the tail's
            input are laid out differently.
    """
    head_g, tail_g = split_graph(graph, cut)
    builder = WeightLayoutBuilder(compressor)
    head, hst = lower_batch(head_g, t, 1, compressor, head_zone_bytes, builder=builder)
    tail, tst = lower_batch(tail_g, t, images, compressor, tail_zone_bytes, builder=builder)
    ho, ti = head.outputs[0], tail.inputs[0]
    if (ho.offset, ho.hwc, ho.dtype) != (ti.offset, ti.hwc, ti.dtype) \
            or head.output_bytes > tst[Region.INPUT]:
        raise ScheduleError(f"cut at {cut.boundary!r}: head output and tail input differ")
    a = t.dram_align_bytes
    work = _align(max(head.act_arena_bytes, tail.act_arena_bytes), a)
    bslot = tst[Region.INPUT]
    cmds, comments, slots = [], [], []
    for k in range(images):
        part = [_mapped(c, {Region.INPUT: (Region.INPUT, k * hst[Region.INPUT]),
                            Region.OUTPUT: (Region.ACT, work + k * bslot)})
                for c in head.commands[:-1]]
        cmds += barrier(part) if k else part
        comments += [f"image {k}: {c}" for c in head.comments[:-1]]
        slots += list(head.slots[:-1])
    cmds += barrier([_mapped(c, {Region.INPUT: (Region.ACT, work)})
                     for c in tail.commands[:-1]])
    comments += tail.comments[:-1]
    slots += list(tail.slots[:-1])
    cmds.append(C.End())
    comments.append("end")
    slots.append(tail.slots[-1])
    act = _align(-(-(work + images * bslot) // images), a)
    st = {Region.INPUT: hst[Region.INPUT], Region.OUTPUT: tst[Region.OUTPUT], Region.ACT: act}
    prog = Program(cmds, comments, builder.build(), max(head.sram_peak_bytes,
                                                        tail.sram_peak_bytes),
                   images * act, images * st[Region.INPUT], images * st[Region.OUTPUT],
                   list(head.inputs), list(tail.outputs), [], slots)
    return prog, st
