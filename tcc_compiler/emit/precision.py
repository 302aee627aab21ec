"""The report's ``precision`` object: which layers a ``--precision`` choice made int16 and
what they cost against the same model all int8 (specs/quantization.md, "Mixed precision")."""

from __future__ import annotations

from tcc_compiler.ir.graph import Graph
from tcc_compiler.quant.auto_precision import PrecisionChoice, quantized_copy
from tcc_compiler.schedule import lower
from tcc_compiler.schedule.report import dram_bytes
from tcc_compiler.schedule.timeline import timeline
from tcc_compiler.target import Target


def precision_report(choice: PrecisionChoice, report: dict, float_graph: Graph,
                     ranges: dict, tgt: Target, compress_weights: bool) -> dict:
    """:meth:`PrecisionChoice.to_dict` plus, when layers are int16, ``cost``: the estimated
    latency (ms) and DRAM bytes moved per image of the compiled model (``report``, the
    compile's report.json) against the same float graph quantized all int8 with ``ranges``
    and scheduled again for ``tgt`` (``compress_weights`` as the compile), and both DRAM
    activation arenas (bytes)."""
    d = choice.to_dict()
    if not choice.plan.layers:
        return d
    base = lower(quantized_copy(float_graph, ranges), tgt, compress_weights=compress_weights)
    spans = timeline(base, tgt)
    ms8 = (spans[-1].end if spans else 0) / tgt.clock_hz * 1e3
    dram8 = sum(dram_bytes(base.commands))
    ms = report["estimated_latency_ms"]
    dram = report["dram_read_bytes"] + report["dram_write_bytes"]
    d["cost"] = {"estimated_latency_ms": {"int8": round(ms8, 4), "mixed": round(ms, 4),
                                          "added": round(ms - ms8, 4)},
                 "dram_bytes_per_image": {"int8": dram8, "mixed": dram, "added": dram - dram8},
                 "dram_activation_bytes": {"int8": base.act_arena_bytes,
                                           "mixed": report["dram_activation_bytes"]}}
    return d
