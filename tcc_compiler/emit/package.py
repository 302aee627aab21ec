"""Write a compiled output folder (the files of :mod:`tcc_compiler.emit.files`) atomically."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from tcc_compiler.emit.files import (
    CALIB_TABLE_FILE,
    CMD_FILE,
    IR_FILE,
    MANIFEST_FILE,
    REPORT_CSV_FILE,
    REPORT_FILE,
    TIMELINE_FILE,
    WEIGHT_FILE,
)
from tcc_compiler.emit.jsonfmt import json_text
from tcc_compiler.fsutil import atomic_dir
from tcc_compiler.ir import text as ir_text
from tcc_compiler.ir.graph import Graph
from tcc_compiler.quant.calib_table import write_table
from tcc_compiler.schedule import report as perf_report


def write_files(folder: Path, cmd_bin: bytes, weight_bin: bytes, manifest: dict,
                report: dict, graph: Graph, calib_table: dict | None = None,
                trace: dict | None = None, extra: dict[str, bytes] | None = None) -> None:
    """Write the files of one NPU program into the existing folder ``folder`` (no atomicity:
    :func:`write_package` calls it on a staging folder); ``trace`` is timeline.json's Chrome
    trace object (:func:`tcc_compiler.emit.trace.chrome_trace`), written compact; ``extra``
    more binaries by file name (the stream program's, :mod:`tcc_compiler.emit.stream`)."""
    (folder / CMD_FILE).write_bytes(cmd_bin)
    (folder / WEIGHT_FILE).write_bytes(weight_bin)
    (folder / MANIFEST_FILE).write_text(json_text(manifest, indent=2, sort_keys=True) + "\n")
    (folder / REPORT_FILE).write_text(json_text(report, indent=2, sort_keys=True) + "\n")
    (folder / REPORT_CSV_FILE).write_text(perf_report.to_csv(report.get("layers", [])))
    ir_text.save_ir(graph, folder / IR_FILE)  # looked up at call time (tests patch it)
    if calib_table is not None:
        write_table(calib_table, folder / CALIB_TABLE_FILE)
    if trace is not None:
        (folder / TIMELINE_FILE).write_text(json_text(trace, separators=(",", ":")) + "\n")
    for name, data in (extra or {}).items():
        (folder / name).write_bytes(data)


def write_package(folder: str | os.PathLike, cmd_bin: bytes, weight_bin: bytes, manifest: dict,
                  report: dict, graph: Graph, calib_table: dict | None = None,
                  trace: dict | None = None, extra: dict[str, bytes] | None = None) -> Path:
    """Write npu_cmd.bin, quantized_network.bin, manifest.json, report.json, report.csv (the
    per-layer table), the quantized IR (quantized.tir + .npz) and, when given, the
    calibration table and the timeline (timeline.json) into ``folder``, replacing it in one
    step (:func:`fsutil.atomic_dir`).

    Args:
        cmd_bin, weight_bin: the two NPU binaries (bytes). manifest, report: JSON-ready dicts
            (written sorted, indented by 2). graph: the quantized graph IR.
        calib_table: the tensor -> range table (quant/calib_table.py), or None.
        trace: the Chrome trace-event object (:func:`tcc_compiler.emit.trace.chrome_trace`),
            written compact, or None. extra: more binaries by file name (the stream
            program's), or None.

    Returns:
        The folder path.

    Raises:
        InputError: the folder cannot be written, or holds files tccc did not write.
    """
    with atomic_dir(folder) as tmp:
        write_files(tmp, cmd_bin, weight_bin, manifest, report, graph, calib_table, trace,
                    extra)
    return Path(folder)


def copy_package(src: str | os.PathLike, folder: str | os.PathLike) -> Path:
    """Copy the files of the output folder ``src`` and a segmented model's ``npu_<k>/``
    folders (no other sub-folder) into ``folder``, replacing it in one step
    (:func:`fsutil.atomic_dir`).

    Returns:
        The folder path.

    Raises:
        InputError: as :func:`write_package`.
    """
    from tcc_compiler.fsutil import is_output_entry

    with atomic_dir(folder) as tmp:
        for f in Path(src).iterdir():
            if f.is_file():
                shutil.copy2(f, tmp / f.name)
            elif is_output_entry(f):  # a segmented model's npu_<k>/ folder
                shutil.copytree(f, tmp / f.name)
    return Path(folder)
