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
#: ``--cores 2``: the stream program (several images per run, each core on its own;
#: specs/manifest.md "Stream program") and, when its weights are laid out differently from the
#: main program's, its own weight file.
STREAM_CMD_FILE = "npu_cmd_stream.bin"
STREAM_WEIGHT_FILE = "quantized_network_stream.bin"
#: The quantized IR (specs/ir.lark), its constants in ``quantized.npz`` beside it.
IR_FILE = "quantized.tir"

#: A segmented model's NPU segment folder and host segment file (specs/manifest.md).
NPU_SEGMENT_DIR = "npu_{index}"
HOST_SEGMENT_FILE = "host_{index}.onnx"


def segment_entry(device: str, index: int) -> str:
    """The folder (``"npu"``) or file (``"host"``) name of segment ``index`` in a segmented
    model's output folder."""
    return (NPU_SEGMENT_DIR if device == "npu" else HOST_SEGMENT_FILE).format(index=index)


__all__ = ["CALIB_TABLE_FILE", "HOST_SEGMENT_FILE", "NPU_SEGMENT_DIR", "segment_entry",
           "CMD_FILE", "IR_FILE", "MANIFEST_FILE", "MANIFEST_VERSION",
           "REPORT_CSV_FILE",
           "REPORT_FILE", "STREAM_CMD_FILE", "STREAM_WEIGHT_FILE", "TIMELINE_FILE",
           "WEIGHT_FILE"]
