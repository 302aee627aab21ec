"""Write a self-contained HTML report of a compiled output folder (tables and charts)."""

from __future__ import annotations

from tcc_compiler.emit.jsonfmt import json_text

NAME = "report"
HELP = "write an HTML report (per-layer table, latency/DRAM/SRAM charts)"
ORDER = 65


def add_arguments(p) -> None:
    """Arguments of ``tccc report``."""
    p.add_argument("dir", help="compiled output folder")
    p.add_argument("-o", "--output", required=True, help="output .html file")
    p.add_argument("--histograms", nargs="*", metavar="IMAGE", default=None,
                   help="add activation histograms with the clipping ranges, from the golden "
                        "integer model on these images/.npy (none given: 4 bundled photos)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def run(args) -> int:
    """tccc report DIR -o report.html [--histograms [IMAGE ...]] [--json]"""
    from tcc_compiler.api.folders import write_html_report
    from tcc_compiler.cli.main import progress
    from tcc_compiler.fsutil import check_output_file

    check_output_file(args.output, "-o", reads=args.dir,   # before the histograms
                      own=("report.html",))
    path = write_html_report(args.dir, args.output, args.histograms,
                             progress(args.quiet, "histograms"))
    size = path.stat().st_size
    if args.json:
        print(json_text({"output": str(path), "bytes": size}))
    else:
        print(f"wrote {path} ({size:,} B)")
    return 0
