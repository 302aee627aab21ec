"""Emission: assemble the compiled package from the lowered program (layer 5, beside binfmt).

* :mod:`~tcc_compiler.emit.files`: the names of the output folder's files;
* :mod:`~tcc_compiler.emit.manifest`: :func:`build_manifest` (what a host runtime needs);
* :mod:`~tcc_compiler.emit.report`: :func:`build_report` (sizes, MACs, cycle estimates);
* :mod:`~tcc_compiler.emit.trace`: :func:`chrome_trace` (the estimated timeline as a Chrome
  trace-event file);
* :mod:`~tcc_compiler.emit.package`: :func:`write_package`, :func:`copy_package` (the output
  folder, atomically).

:mod:`tcc_compiler.binfmt` encodes the two binaries themselves. The package re-exports only
the file names (cheap to import for readers of a folder); import the builders from their
modules.
"""

from tcc_compiler.emit.files import (  # noqa: F401
                                     CALIB_TABLE_FILE,
                                     CMD_FILE,
                                     IR_FILE,
                                     MANIFEST_FILE,
                                     REPORT_CSV_FILE,
                                     REPORT_FILE,
                                     TIMELINE_FILE,
                                     WEIGHT_FILE,
)
