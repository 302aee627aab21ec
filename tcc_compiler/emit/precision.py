"""The report's ``precision`` object: which layers a ``--precision`` choice made int16 (outputs
and weights) and what they cost against the same model all int8 (specs/quantization.md,
"Mixed precision")."""

from __future__ import annotations

from tcc_compiler.ir.graph import Graph
from tcc_compiler.quant.auto_precision import PrecisionChoice, quantized_copy
from tcc_compiler.schedule import lower
from tcc_compiler.schedule.program import Program
from tcc_compiler.schedule.report import dram_bytes
from tcc_compiler.schedule.timeline import timeline
from tcc_compiler.target import Target


def _layer_costs(program: Program, spans) -> dict[str, list[int]]:
    """{layer: [compute cycles (its CONV/POOL/... tiles' busy cycles on the replay), stored
    weight bytes]} of a program."""
    out = {li.name: [0, li.weight_bytes] for li in program.layers}
    for s in spans:
        if s.layer in out and s.unit not in ("dma", "decompress", "config"):
            out[s.layer][0] += s.end - s.start
    return out


def precision_report(choice: PrecisionChoice, report: dict, float_graph: Graph,
                     ranges: dict, tgt: Target, compress_weights: bool,
                     program: Program | None = None) -> dict:
    """:meth:`PrecisionChoice.to_dict` plus, when layers are int16 (outputs or weights),
    ``cost``: the estimated latency (ms) and DRAM bytes moved per image of the compiled model
    (``report``, the compile's report.json) against the same float graph quantized all int8
    with ``ranges`` and scheduled again for ``tgt`` (``compress_weights`` as the compile), both
    DRAM activation arenas and stored weight-file bytes (bytes); with the compiled ``program``
    also ``layers``: per promoted layer its compute time (ms, the busy cycles of its compute
    tiles on the replay) and stored weight + parameter bytes, int8 and mixed."""
    d = choice.to_dict()
    if not choice.plan.layers and not choice.plan.weight_layers:
        return d
    base = lower(quantized_copy(float_graph, ranges), tgt, compress_weights=compress_weights)
    spans = timeline(base, tgt)
    ms8 = (spans[-1].end if spans else 0) / tgt.clock_hz * 1e3
    dram8 = sum(dram_bytes(base.commands))
    ms = report["estimated_latency_ms"]
    dram = report["dram_read_bytes"] + report["dram_write_bytes"]
    w8 = sum(li.weight_bytes for li in base.layers)
    wmix = sum(r["weight_bytes"] for r in report.get("layers", ()))
    d["cost"] = {"estimated_latency_ms": {"int8": round(ms8, 4), "mixed": round(ms, 4),
                                          "added": round(ms - ms8, 4)},
                 "dram_bytes_per_image": {"int8": dram8, "mixed": dram, "added": dram - dram8},
                 "dram_activation_bytes": {"int8": base.act_arena_bytes,
                                           "mixed": report["dram_activation_bytes"]},
                 "layer_weight_bytes": {"int8": w8, "mixed": wmix, "added": wmix - w8}}
    if program is not None:
        c8, cm = _layer_costs(base, spans), _layer_costs(program, timeline(program, tgt))
        ms_of = 1e3 / tgt.clock_hz
        promoted = dict.fromkeys(list(choice.plan.layers) + list(choice.plan.weight_layers))
        d["cost"]["layers"] = {
            name: {"compute_ms": {"int8": round(c8[name][0] * ms_of, 5),
                                  "mixed": round(cm[name][0] * ms_of, 5)},
                   "weight_bytes": {"int8": c8[name][1], "mixed": cm[name][1]}}
            for name in promoted if name in c8 and name in cm}
    return d
