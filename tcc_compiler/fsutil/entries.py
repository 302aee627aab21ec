"""What a tccc output folder holds: the marker file, the files tccc writes, a segmented folder's
``npu_<k>/`` and ``host_<k>.onnx`` entries (specs/manifest.md), and the entries it does not
write (which make a recompile refuse instead of deleting them).
"""

from __future__ import annotations

import os
import re
from pathlib import Path


#: A folder holding this file is a tccc output folder that a new compile may replace.
OUTPUT_MARKER = "manifest.json"

#: Files tccc writes into an output folder (compile, ``analyze``'s default ``--out``, the
#: conventional ``report.html``). A recompile replaces the folder, so these go (the new output
#: has fresh ones); any other entry makes :func:`atomic_dir` refuse, so it never deletes a
#: user's files.
OUTPUT_FILES = frozenset({
    "npu_cmd.bin", "quantized_network.bin", "manifest.json", "report.json", "report.csv",
    "quantized.tir", "quantized.npz", "calib_table.json", "analysis.json", "report.html",
    "timeline.json", "npu_cmd_stream.bin", "quantized_network_stream.bin",
})


#: Entries of a segmented model's folder (specs/manifest.md): ``npu_<k>/`` sub-folders holding
#: :data:`OUTPUT_FILES` only, and ``host_<k>.onnx`` files.
SEGMENT_DIR_RE = re.compile(r"npu_[0-9]+")
SEGMENT_FILE_RE = re.compile(r"host_[0-9]+\.onnx")


def is_output_entry(entry: Path) -> bool:
    """True for an entry tccc writes into an output folder: a file of :data:`OUTPUT_FILES`, a
    ``host_<k>.onnx`` file, or an ``npu_<k>/`` folder holding only output files."""
    if entry.is_symlink():
        return False
    if entry.is_file():
        return entry.name in OUTPUT_FILES or bool(SEGMENT_FILE_RE.fullmatch(entry.name))
    if entry.is_dir() and SEGMENT_DIR_RE.fullmatch(entry.name):
        return all(e.is_file() and not e.is_symlink() and e.name in OUTPUT_FILES
                   for e in entry.iterdir())
    return False


def foreign_entries(folder: str | os.PathLike) -> list[str]:
    """Names in ``folder`` (sorted) that tccc does not write (:func:`is_output_entry`):
    other sub-folders and any other file. Empty when ``folder`` is missing."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(e.name + ("/" if e.is_dir() else "") for e in folder.iterdir()
                  if not is_output_entry(e))
