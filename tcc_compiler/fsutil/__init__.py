"""File-system helpers of the output writers (layer 0).

=====================  ===================================================================
module                 holds
=====================  ===================================================================
``fsutil/folder.py``   :func:`atomic_dir` (build an output folder beside the target, swap it
                       in one step), :func:`check_output_folder`, stale staging clean-up
``fsutil/files.py``    :func:`atomic_write_bytes`, :func:`check_output_file`,
                       :func:`write_output_file` (one output file, never half-written)
``fsutil/entries.py``  what an output folder holds (:data:`OUTPUT_FILES`,
                       :func:`is_output_entry`, :func:`foreign_entries`)
``fsutil/paths.py``    :func:`check_path`, :func:`is_mount_point`, :func:`file_sha256`
=====================  ===================================================================
"""

from tcc_compiler.fsutil.entries import (OUTPUT_FILES, OUTPUT_MARKER, SEGMENT_DIR_RE,
                                         SEGMENT_FILE_RE, foreign_entries, is_output_entry)
from tcc_compiler.fsutil.files import atomic_write_bytes, check_output_file, write_output_file
from tcc_compiler.fsutil.folder import atomic_dir, check_output_folder, clean_stale_staging
from tcc_compiler.fsutil.paths import check_path, file_sha256, is_mount_point

__all__ = ["OUTPUT_FILES", "OUTPUT_MARKER", "SEGMENT_DIR_RE", "SEGMENT_FILE_RE", "atomic_dir",
           "atomic_write_bytes", "check_output_file", "check_output_folder", "check_path",
           "clean_stale_staging", "file_sha256", "foreign_entries", "is_mount_point",
           "is_output_entry", "write_output_file"]
