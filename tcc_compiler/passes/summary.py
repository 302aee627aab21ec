"""Fusion summary: what the float passes saved, per model (lands in ``report.json["fusion"]``).

Accounting model. Without fusion every compute node of the imported graph (conv, fc, batchnorm,
add, mul, relu, clip, maxpool, avgpool, gap) would run as one NPU op that writes its output
tensor to DRAM and has the next op read it back: one *DRAM round trip* per node. Views
(reshape, transpose) move no data and host ops (softmax, argmax) run after the NPU program, so
neither is counted.

After the passes each NPU op carries the ONNX node names it came from (``Node.source``). One of
them is its *anchor*, the node it "is": the first source whose imported op kind equals the NPU
op's kind (a conv that absorbed a BatchNorm, a Relu and an Add is anchored at the Conv), or the
first source when none matches (a BatchNorm kept as a depthwise 1x1 affine conv is anchored at
the BatchNorm). Every other source was *fused away*: its output tensor is never written to DRAM.

So ``dram_round_trips_avoided``, the sum of ``fused_away`` over kinds, equals
``compute_nodes - npu_ops`` whenever provenance is complete (every NPU op names its nodes).
``dram_bytes_avoided`` adds, for every fused-away node, its output tensor once as a write and
once as a read at one byte per element (int8 activations).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from tcc_compiler.ir.graph import Graph
from tcc_compiler.ir.ops import HOST_OPS, NPU_OPS, VIEW_OPS, Op

#: Imported op kinds that are neither data movement nor host-side work.
_NOT_COMPUTE = VIEW_OPS | HOST_OPS | {Op.TRANSPOSE}


@dataclass(frozen=True)
class SourceEntry:
    """One imported compute node: its IR op kind and its output size in elements."""

    kind: Op
    out_elems: int


def source_table(imported: Graph) -> dict[str, list[SourceEntry]]:
    """Snapshot of the imported graph, taken before the passes mutate it.

    Args:
        imported: the graph straight from :func:`tcc_compiler.frontend.import_onnx`.

    Returns:
        ONNX node name -> the compute nodes imported from it (usually one; an n-ary ``Sum``
        imports as several adds). Views and host ops are left out.
    """
    table: dict[str, list[SourceEntry]] = {}
    for node in imported.nodes:
        if node.op in _NOT_COMPUTE:
            continue
        elems = int(np.prod(node.output.shape))
        for name in node.source[:1]:
            table.setdefault(name, []).append(SourceEntry(node.op, elems))
    return table


def _anchor(node, table: dict[str, list[SourceEntry]]) -> str | None:
    known = [s for s in node.source if s in table]
    for s in known:
        if any(e.kind is node.op for e in table[s]):
            return s
    return known[0] if known else None


def fusion_summary(table: dict[str, list[SourceEntry]], final: Graph) -> dict:
    """Count NPU ops, fused-away nodes by imported op kind and DRAM round trips avoided.

    Args:
        table: :func:`source_table` of the imported graph.
        final: the graph after the float passes (NPU ops, views, host ops).

    Returns:
        JSON-ready dict: ``npu_ops`` (int), ``npu_ops_by_kind`` ({kind: n}),
        ``compute_nodes`` (imported compute nodes), ``fused_away`` ({imported kind: n}, e.g.
        ``{"batchnorm": 53, "relu": 49, "add": 16}``), ``dram_round_trips_avoided`` (int),
        ``dram_bytes_avoided`` (int8 bytes written + read, see the module docstring) and
        ``unattributed_npu_ops`` (NPU ops whose provenance names no imported node; 0 when
        provenance is complete).
    """
    npu = [n for n in final.nodes if n.op in NPU_OPS]
    anchors: Counter[str] = Counter()
    unattributed = 0
    for n in npu:
        a = _anchor(n, table)
        if a is None:
            unattributed += 1
        else:
            anchors[a] += 1
    fused: Counter[str] = Counter()
    bytes_avoided = 0
    for name, entries in table.items():
        for e in entries[anchors.get(name, 0):]:
            fused[e.kind.value] += 1
            bytes_avoided += 2 * e.out_elems
    compute = sum(len(v) for v in table.values())
    return {
        "npu_ops": len(npu),
        "npu_ops_by_kind": dict(sorted(Counter(n.op.value for n in npu).items())),
        "compute_nodes": compute,
        "fused_away": dict(sorted(fused.items())),
        "dram_round_trips_avoided": sum(fused.values()),
        "dram_bytes_avoided": bytes_avoided,
        "unattributed_npu_ops": unattributed,
    }


def format_pass_report(report: dict, times: bool = True, stats: bool = True) -> str:
    """Human-readable pass timings / rewrite counts / fusion summary from a compile report.

    Args:
        report: the dict of ``report.json`` (keys ``passes`` = {"seconds": {pass: s},
            "fired": {pass: n}} and, for ``stats``, ``fusion`` from :func:`fusion_summary`).
        times: include the per-pass seconds (``--time-passes``).
        stats: include how often each pass's rewrites fired and the fusion summary
            (``--pass-stats``).

    Returns:
        Lines without a trailing newline, passes in pipeline order.
    """
    p = report.get("passes", {})
    seconds, fired = p.get("seconds", {}), p.get("fired", {})
    names = list(dict.fromkeys(list(seconds) + list(fired)))
    width = max([len(n) for n in names] + [4])
    head = f"{'pass':<{width}}" + ("  time [ms]" if times else "") + ("  fired" if stats else "")
    lines = [head]
    for n in names:
        row = f"{n:<{width}}"
        if times:
            row += f"  {seconds.get(n, 0.0) * 1e3:9.2f}"
        if stats:
            row += f"  {fired.get(n, 0):5d}"
        lines.append(row)
    if times:
        lines.append(f"{'total':<{width}}  {sum(seconds.values()) * 1e3:9.2f}")
    f = report.get("fusion")
    if stats and f:
        fused = ", ".join(f"{v} {k}" for k, v in f["fused_away"].items()) or "none"
        lines.append(f"fusion: {f['npu_ops']} NPU ops from {f['compute_nodes']} compute nodes; "
                     f"fused away: {fused}; {f['dram_round_trips_avoided']} DRAM round trips "
                     f"({f['dram_bytes_avoided']:,} B) avoided")
    return "\n".join(lines)
