"""Summarise a compiled folder: both binaries (sections, sizes, checksums, per-layer weight
bytes), the estimated latency beside the roofline bound, and the per-layer performance table."""

from __future__ import annotations

import textwrap
import zlib
from collections import Counter
from pathlib import Path

from tcc_compiler.emit.jsonfmt import json_text

NAME = "inspect"
HELP = "summarise npu_cmd.bin, quantized_network.bin and the per-layer report"
ORDER = 55


def add_arguments(p) -> None:
    """Arguments of ``tccc inspect``."""
    p.add_argument("dir", help="compiled output folder")
    p.add_argument("--csv", metavar="FILE", help="also write the per-layer table as CSV")
    p.add_argument("--json", action="store_true",
                   help="print the summary as one JSON object (keys npu_cmd.bin, "
                        "quantized_network.bin with its per-layer entries, report)")


def run(args) -> int:
    """tccc inspect DIR [--csv FILE] [--json]"""
    from tcc_compiler.api.folders import load_program, read_report
    from tcc_compiler.fsutil import check_output_file, write_output_file
    from tcc_compiler.emit.report import cores_line
    from tcc_compiler.report.html import LATENCY_NOTE
    from tcc_compiler.schedule.report import format_table, to_csv

    if args.csv:  # refuse a bad path before printing anything
        check_output_file(args.csv, "--csv", reads=args.dir)
    d = Path(args.dir)
    prog = load_program(d)   # validates the folder (manifest, sizes, CRCs) with clear errors
    report = read_report(d)  # a corrupt report.json: one-line error before any output
    if getattr(prog, "segmented", False):
        return _inspect_segmented(args, prog, report or {})
    raw_c = (d / "npu_cmd.bin").read_bytes()
    raw_w = (d / "quantized_network.bin").read_bytes()
    cmd, wf = prog.cmd, prog.weights
    counts = Counter(c.name for c in cmd.commands)
    if args.json:
        print(json_text(summary_json(raw_c, raw_w, prog, counts, d), indent=1))
        return 0
    print(f"npu_cmd.bin: {len(raw_c)} bytes, format {cmd.version_major}.{cmd.version_minor}, "
          f"crc32 {zlib.crc32(raw_c):#010x}; header {cmd.header_bytes} B, stream "
          f"{len(raw_c) - cmd.header_bytes} B (crc32 {cmd.stream_crc32:#010x}), "
          f"{len(cmd.commands)} commands ({', '.join(f'{k} {v}' for k, v in counts.items())})")
    print(f"  SRAM {cmd.sram_peak_bytes} B; DRAM ACT {cmd.act_arena_bytes} B, INPUT "
          f"{cmd.input_bytes} B, OUTPUT {cmd.output_bytes} B")
    if "inputs" in prog.manifest:   # a segment reading several tensors: where each goes
        print("  INPUT holds " + ", ".join(
            f"'{r['name']}' {'x'.join(map(str, r['npu_hwc']))} @ {r['offset']:#x}"
            for r in prog.manifest["inputs"]))
    print(f"quantized_network.bin: {len(raw_w)} bytes, format {wf.version_major}."
          f"{wf.version_minor}, crc32 {zlib.crc32(raw_w):#010x}; data section {len(wf.data)} B "
          f"(crc32 {wf.data_crc32:#010x}), {len(wf.layers)} layers; weights + params "
          f"{wf.raw_bytes} B raw, {wf.stored_bytes} B stored (ratio {_ratio(wf):.4f})")
    report = read_report(d) or {}
    names = _names_by_hash(report)
    for i, e in enumerate(wf.layers):
        name = names.get(e.name_hash, f"#{e.name_hash:08x}")
        z = "z" if e.weights_compressed or e.params_compressed else " "
        if e.merged:   # one blob: each block's weights then its records (specs/weights.md)
            blobs = (f"weights+params {e.raw_bytes:>9} -> {e.weights_bytes:>9} B @ "
                     f"{e.weights_offset:#010x} (merged blocks)")
        else:
            blobs = (f"weights {e.weights_raw_bytes:>9} -> {e.weights_bytes:>9} B @ "
                     f"{e.weights_offset:#010x}  params {e.params_raw_bytes:>6} -> "
                     f"{e.params_bytes:>6} B")
        print(f"  layer {i:3d} {e.kind.name:<4} {blobs}  {z} "
              f"{e.stored_bytes / max(e.raw_bytes, 1):.3f}  {name}")
    if report:
        roof = report.get("roofline", {})
        print(f"estimated latency {report['estimated_latency_ms']:.3f} ms (documented cycle "
              f"model of the chip); roofline {roof.get('latency_ms', 0):.3f} ms "
              f"({roof.get('bound', '?')}-bound); MAC utilisation "
              f"{report.get('mac_utilisation', 0):.2f}; DRAM read "
              f"{report.get('dram_read_bytes', 0)} B, written {report.get('dram_write_bytes', 0)}"
              f" B, minimal {report.get('minimal_dram_bytes', 0)} B; peak DRAM activations "
              f"{report.get('dram_activation_bytes', 0)} B")
        print(_with_tiling(format_table(report["layers"], 1_000_000_000 if not roof else
                                        _clock(report, roof)), report["layers"]), end="")
        line = cores_line(report.get("cores"))
        if line:
            print(line)
        print(textwrap.fill(LATENCY_NOTE, 100))
        if args.csv:
            write_output_file(args.csv, to_csv(_with_weights(report["layers"], wf)), "--csv")
    return 0


def _names_by_hash(report: dict) -> dict[int, str]:
    """{crc32 of the layer name (a weight-file entry's ``name_hash``): name} of report.json."""
    from tcc_compiler.api.folders import name_hash

    return {name_hash(r["name"]): r["name"] for r in report.get("layers", [])}


def _with_tiling(table: str, layers: list[dict]) -> str:
    """``table`` (format_table: header, rule, one line per layer) with each layer's tiling
    text wrapped on indented lines under its row."""
    lines = table.splitlines()
    out = lines[:2]
    for line, r in zip(lines[2:], layers):
        out.append(line)
        if r.get("tiling"):
            out += textwrap.wrap(r["tiling"], 100, initial_indent="    tiling: ",
                                 subsequent_indent=" " * 12)
    return "\n".join(out) + "\n"


def _with_weights(layers: list[dict], wf) -> list[dict]:
    """Copies of the report rows with ``weight_raw_bytes`` and ``weight_ratio`` (stored /
    raw) from the matching quantized_network.bin entry (matched by name hash)."""
    from tcc_compiler.api.folders import name_hash

    entries = {e.name_hash: e for e in wf.layers}
    out = []
    for r in layers:
        e = entries.get(name_hash(r["name"]))
        r = dict(r)
        if e is not None:
            r["weight_raw_bytes"] = e.raw_bytes
            r["weight_ratio"] = round(e.stored_bytes / max(e.raw_bytes, 1), 4)
        out.append(r)
    return out


def _ratio(wf) -> float:
    """Stored / raw bytes of a weight file's layers (1.0 when empty)."""
    return wf.stored_bytes / wf.raw_bytes if wf.raw_bytes else 1.0


def _clock(report: dict, roof: dict) -> int:
    """Clock in Hz implied by the report (cycles / latency), for cycle -> time conversion."""
    cyc, ms = report.get("estimated_cycles", 0), report.get("estimated_latency_ms", 0)
    return int(round(cyc / (ms * 1e-3))) if cyc and ms else 1_000_000_000


def summary_json(raw_c: bytes, raw_w: bytes, prog, counts: Counter, d: Path) -> dict:
    """``tccc inspect --json``: the figures of the text summary as one JSON object.

    Sizes in bytes, CRC-32s as integers; ``quantized_network.bin.layers`` lists the weight-file
    entries (layer name from report.json, or null when absent; kind, weights/params stored and
    raw bytes, offset, compression); ``report`` is report.json as written (null if absent).
    """
    from tcc_compiler.api.folders import read_report

    cmd, wf = prog.cmd, prog.weights
    report = read_report(d)
    names = _names_by_hash(report or {})
    return {
        "npu_cmd.bin": {"bytes": len(raw_c), "crc32": zlib.crc32(raw_c),
                        "format": f"{cmd.version_major}.{cmd.version_minor}",
                        "header_bytes": cmd.header_bytes, "commands": len(cmd.commands),
                        "command_counts": dict(counts), "sram_peak_bytes": cmd.sram_peak_bytes,
                        "act_arena_bytes": cmd.act_arena_bytes,
                        "input_bytes": cmd.input_bytes, "output_bytes": cmd.output_bytes,
                        "inputs": [{k: r[k] for k in ("name", "npu_hwc", "offset")}
                                   for r in prog.input_records]},
        "quantized_network.bin": {
            "bytes": len(raw_w), "crc32": zlib.crc32(raw_w),
            "format": f"{wf.version_major}.{wf.version_minor}", "data_bytes": len(wf.data),
            "raw_bytes": wf.raw_bytes, "stored_bytes": wf.stored_bytes,
            "ratio": round(_ratio(wf), 4),
            "layers": [{"name": names.get(e.name_hash), "kind": e.kind.name,
                        "weights_bytes": e.weights_bytes,
                        "weights_raw_bytes": e.weights_raw_bytes,
                        "weights_offset": e.weights_offset, "params_bytes": e.params_bytes,
                        "params_raw_bytes": e.params_raw_bytes,
                        "compressed": e.weights_compressed or e.params_compressed,
                        "merged": e.merged, "block_channels": e.block_channels}
                       for e in wf.layers]},
        "report": report,
    }


def _inspect_segmented(args, prog, report: dict) -> int:
    """``tccc inspect`` of a segmented folder: each segment (device, nodes, sizes, estimated
    time) and each NPU <-> host boundary (bytes converted per image, estimated host time);
    ``tccc inspect DIR/npu_<k>`` shows one NPU program in full."""
    from tcc_compiler.emit.report import cores_line
    from tcc_compiler.schedule.report import to_csv

    if args.csv:
        from tcc_compiler.fsutil import write_output_file

        write_output_file(args.csv, to_csv(report.get("layers", [])))
    if args.json:
        print(json_text({"manifest": prog.manifest, "report": report}, indent=1))
        return 0
    for seg in report.get("segments", []):
        if seg["device"] == "npu":
            print(f"segment {seg['index']:>3} npu   {seg['folder']:<12} {seg['nodes']:>4} nodes "
                  f"npu_cmd.bin {seg['command_bytes']:,} B, quantized_network.bin "
                  f"{seg['weight_bytes']:,} B, est. {seg['estimated_latency_ms']:.3f} ms (NPU)")
            line = cores_line(seg.get("cores"), f"  {seg['folder']}: ")
            if line:
                print(line)
        else:
            ops = ", ".join(f"{v} {k}" for k, v in sorted(seg["ops"].items()))
            print(f"segment {seg['index']:>3} host  {seg['file']:<12} {seg['nodes']:>4} nodes "
                  f"({ops}), {seg['bytes']:,} B moved, est. {seg['estimated_host_ms']:.3f} ms "
                  "(host, assumed)")
    for b in report.get("boundaries", []):
        print(f"boundary {b['kind']:<10} {b['tensor']} (segment {b['segment']}): "
              f"{b['npu_bytes']:,} B int <-> {b['float_bytes']:,} B float32, est. "
              f"{b['estimated_host_ms']:.4f} ms")
    pl = report.get("placement", {})
    print(f"{pl.get('npu_nodes', '?')} node(s) in {pl.get('npu_segments', '?')} NPU segment(s), "
          f"{pl.get('host_nodes', '?')} in {pl.get('host_segments', '?')} host segment(s); "
          f"estimated {report.get('estimated_latency_ms', 0):.3f} ms NPU + "
          f"{report.get('estimated_host_ms', 0):.3f} ms host + "
          f"{report.get('estimated_boundary_ms', 0):.3f} ms boundaries = "
          f"{report.get('estimated_total_ms', 0):.3f} ms (host figures: target [host] "
          "assumptions)")
    return 0
