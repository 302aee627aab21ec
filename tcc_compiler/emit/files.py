"""The names of the files in a compiled output folder (one place; see README "Walkthrough").

The host runtime (:mod:`tcc_compiler.runtime`) reads the same folder.
"""

from __future__ import annotations

from tcc_compiler.quant.calib_table import CALIB_TABLE_FILE

#: The command stream container (specs/isa.md).
CMD_FILE = "npu_cmd.bin"
#: The weight container (specs/weights.md).
WEIGHT_FILE = "quantized_network.bin"
#: Input/output quantization, layouts, host ops, target (:func:`emit.manifest.build_manifest`).
MANIFEST_FILE = "manifest.json"
#: The manifest's version. 2: ``target`` holds the whole target (:meth:`Target.to_dict`, SRAM
#: capacity as ``sram_capacity_bytes``); 1 held only its name, ``sram_bytes``,
#: ``macs_per_cycle`` and ``clock_hz``, too little to check a program against.
MANIFEST_VERSION = 2
#: Sizes, MACs, estimated cycles per layer (:func:`emit.report.build_report`).
REPORT_FILE = "report.json"
#: Per-layer table of report.json as CSV (:func:`tcc_compiler.schedule.report.to_csv`).
REPORT_CSV_FILE = "report.csv"
#: The estimated command timeline as a Chrome trace-event file (:mod:`tcc_compiler.emit.trace`;
#: opens in Perfetto / chrome://tracing).
TIMELINE_FILE = "timeline.json"
#: The quantized IR (specs/ir.lark), its constants in ``quantized.npz`` beside it.
IR_FILE = "quantized.tir"

__all__ = ["CALIB_TABLE_FILE", "CMD_FILE", "IR_FILE", "MANIFEST_FILE", "MANIFEST_VERSION",
           "REPORT_CSV_FILE",
           "REPORT_FILE", "TIMELINE_FILE", "WEIGHT_FILE"]
