"""INFO lines (``tccc -v``) on what each stage of the driver did, logged as soon as the stage
ends so a long compile shows its progress live; quiet at the default WARNING level.
"""

from __future__ import annotations

import logging
import os

from tcc_compiler.driver.records import Calibration
from tcc_compiler.ir.graph import Graph
from tcc_compiler.passes import PassManager

log = logging.getLogger(__name__)


# compile shows its progress live; quiet at the default WARNING level.

def log_import(model, graph: Graph, seconds: float) -> None:
    """The ``import:`` line: source, opset, input name and NCHW shape, wall time (s)."""
    if not log.isEnabledFor(logging.INFO):
        return
    src = model if isinstance(model, (str, os.PathLike)) else graph.name
    log.info("import: %s: opset %s, input %s %s (%.2f s)", src, graph.meta.get("opset"),
             graph.inputs[0].name, list(graph.inputs[0].shape), seconds)


def log_passes(pm: PassManager, fusion: dict, seconds: float) -> None:
    """The ``passes:`` line: rewrites fired, compute nodes -> NPU ops, wall time (s)."""
    if not log.isEnabledFor(logging.INFO):
        return
    fired = ", ".join(f"{k} {v}" for k, v in pm.stats.fired.items() if v) or "none"
    fused = ", ".join(f"{v} {k}" for k, v in sorted(fusion.get("fused_away", {}).items()))
    log.info("passes: rewrites fired: %s; %s compute nodes -> %s NPU ops (fused away: %s; "
             "%.2f s)", fired, fusion.get("compute_nodes", "?"), fusion.get("npu_ops", "?"),
             fused or "nothing", seconds)


def log_quantize(calib: Calibration, timings: dict) -> None:
    """The ``quantize:`` line: method, calibration inputs and their source, wall time (s)."""
    if log.isEnabledFor(logging.INFO):
        log.info("quantize: method %s, %d calibration input(s) from %s (%.2f s)", calib.method,
                 len(calib.inputs), calib.source,
                 timings.get("calibration_s", 0.0) + timings["quantize_s"])


def log_schedule_emit(report: dict, timings: dict, weight_bytes: int) -> None:
    """The ``schedule:`` and ``emit:`` lines (tiles, SRAM bytes, latency, container sizes)."""
    if not log.isEnabledFor(logging.INFO):
        return
    layers = report.get("layers", [])
    log.info("schedule: %d layers, %d tiles, SRAM used %s B, estimated %.3f ms "
             "(%s cycles; %.2f s)", len(layers), sum(int(x.get("tiles", 0)) for x in layers),
             f"{report.get('sram_peak_bytes', 0):,}", report.get("estimated_latency_ms", 0.0),
             f"{report.get('estimated_cycles', 0):,}", timings.get("schedule_emit_s", 0.0))
    log.info("emit: npu_cmd.bin %s B (%s commands), quantized_network.bin %s B",
             f"{report.get('command_bytes', 0):,}", report.get("commands", "?"),
             f"{weight_bytes:,}")
