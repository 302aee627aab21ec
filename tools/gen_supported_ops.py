#!/usr/bin/env python3
"""Regenerate SUPPORTED_OPS.md from the frontend's converter table and support records.

The single source is ``tcc_compiler/frontend/converters.py`` (CONVERTERS, REFUSED_OPS) plus
``tcc_compiler/frontend/support.py`` (one OpSupport per converter); the opset revisions come
from the installed onnx schemas. tests/frontend/test_opsets.py regenerates in memory and fails
when the file differs, so the document cannot drift from the importer.

Usage: python3 tools/gen_supported_ops.py [--check]   (--check: exit 1 if out of date)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tcc_compiler.frontend.support import render_markdown  # noqa: E402

TARGET = ROOT / "SUPPORTED_OPS.md"


def main(argv: list[str] | None = None) -> int:
    """Write SUPPORTED_OPS.md, or with --check report whether it is up to date."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if the file is out of date")
    args = ap.parse_args(argv)
    text = render_markdown()
    if args.check:
        ok = TARGET.is_file() and TARGET.read_text() == text
        print(f"{TARGET.name}: {'up to date' if ok else 'OUT OF DATE (run this tool)'}")
        return 0 if ok else 1
    TARGET.write_text(text)
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
