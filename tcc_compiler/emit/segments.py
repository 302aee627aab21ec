"""The top-level manifest, report and folder of a segmented model (NPU and host segments).

Layout and fields: specs/manifest.md, "Segmented models". The inputs are duck-typed so this
layer-5 module needs no later stage: ``plan`` has ``prepared`` (the folded ONNX model and its
input), ``segments`` (index, device, nodes, inputs, outputs) and ``labels()``; each part is
an NPU segment's compile artifacts (``manifest``, ``report``, ``cmd_bin``, ``weight_bin``,
``graph``, ``calib_table``, ``trace``) or a host segment's ``onnx.ModelProto``.
"""

from __future__ import annotations

import hashlib
import os
import zlib
from pathlib import Path

import numpy as np
import onnx

from tcc_compiler.emit.files import (CALIB_TABLE_FILE, MANIFEST_FILE, MANIFEST_VERSION,
                                     REPORT_CSV_FILE, REPORT_FILE, segment_entry)
from tcc_compiler.emit.jsonfmt import json_text
from tcc_compiler.emit.package import write_files
from tcc_compiler.frontend.host_prefix import JOIN_KEY, PREFIX_KEY
from tcc_compiler.fsutil import atomic_dir
from tcc_compiler.quant.calib_table import write_table
from tcc_compiler.schedule import report as perf_report
from tcc_compiler.target.host import VIEW_OPS
from tcc_compiler.version import __version__

#: Channel counts of an image input (greyscale, RGB): quantized from 8-bit pixels.
IMAGE_CHANNELS = (1, 3)

#: ONNX element type -> numpy dtype name, for tensor sizes (bytes) in the report.
_DTYPES = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.INT64: "int64",
           onnx.TensorProto.INT32: "int32", onnx.TensorProto.INT8: "int8",
           onnx.TensorProto.UINT8: "uint8", onnx.TensorProto.BOOL: "bool",
           onnx.TensorProto.FLOAT16: "float16", onnx.TensorProto.DOUBLE: "float64"}


def _tensor_info(proto: onnx.ModelProto) -> dict[str, tuple[list[int], str]]:
    """{tensor: (dims, dtype name)} of every typed tensor and initializer of ``proto``."""
    out = {}
    for vi in list(proto.graph.input) + list(proto.graph.value_info) + list(proto.graph.output):
        tt = vi.type.tensor_type
        out[vi.name] = ([d.dim_value for d in tt.shape.dim],
                        _DTYPES.get(tt.elem_type, "float32"))
    for t in proto.graph.initializer:
        out[t.name] = (list(t.dims), _DTYPES.get(t.data_type, "float32"))
    return out


def _nbytes(info: tuple[list[int], str] | None) -> int:
    """Bytes of a tensor from :func:`_tensor_info` (0 when unknown)."""
    if info is None:
        return 0
    return int(np.prod(info[0], dtype=np.int64)) * np.dtype(info[1]).itemsize


def _node_macs(node: onnx.NodeProto, info: dict) -> int:
    """Multiply-accumulates of a Conv, ConvTranspose, MatMul or Gemm node (0 for others):
    output elements x reduction length (Conv: weight [M, C/g, kh, kw] -> C/g*kh*kw;
    ConvTranspose: input elements x weight [C, M/g, kh, kw] -> M/g*kh*kw; MatMul/Gemm: K)."""
    def elems(name):
        return int(np.prod(info[name][0], dtype=np.int64)) if name in info else 0
    w = info.get(node.input[1])[0] if len(node.input) > 1 and node.input[1] in info else None
    if not w:
        return 0
    if node.op_type == "Conv":
        return elems(node.output[0]) * int(np.prod(w[1:], dtype=np.int64))
    if node.op_type == "ConvTranspose":
        return elems(node.input[0]) * int(np.prod(w[1:], dtype=np.int64))
    if node.op_type in ("MatMul", "Gemm"):
        a = info.get(node.input[0], ([0], ""))[0]
        trans_a = any(at.name == "transA" and at.i for at in node.attribute)
        k = a[-2] if trans_a and len(a) >= 2 else (a[-1] if a else 0)
        return elems(node.output[0]) * int(k)
    return 0


def _graph_output_records(plan, info) -> list[dict]:
    """The model's graph outputs: name, ONNX shape, dtype, producing segment."""
    made_by = {t: s.index for s in plan.segments for t in s.outputs}
    out = []
    for o in plan.prepared.proto.graph.output:
        dims, dtype = info.get(o.name, ([], "float32"))
        out.append({"name": o.name, "shape": dims, "dtype": dtype,
                    "segment": made_by.get(o.name)})
    return out


def _segment_record(seg, part, plan) -> dict:
    """One entry of the manifest's ``segments`` list."""
    rec = {"index": seg.index, "device": seg.device, "inputs": list(seg.inputs),
           "outputs": list(seg.outputs), "nodes": plan.labels(seg.nodes)}
    entry = segment_entry(seg.device, seg.index)
    if isinstance(part, onnx.ModelProto):
        data = part.SerializeToString()
        rec.update({"file": entry, "bytes": len(data), "crc32": zlib.crc32(data)})
    else:
        rec["folder"] = entry
    return rec


def build_segment_manifest(plan, parts: list, tgt, model, preprocess, input_nchw,
                           calibration: tuple[str, int, str]) -> dict:
    """The top-level manifest of a segmented model (specs/manifest.md).

    Args:
        plan, parts: see the module docstring. tgt: the Target. model: the source model
            (path or ModelProto: name and sha256). preprocess: the model input's
            :class:`Preprocess`. input_nchw: its NCHW shape. calibration: (method, number of
            inputs, source description); ``calibration.bias_correction`` is true when any
            NPU segment's biases were corrected (each ``npu_<k>/manifest.json`` says which;
            no key when no segment was quantized here).
    """
    p = plan.prepared
    if isinstance(model, (str, os.PathLike)):
        from tcc_compiler.fsutil import file_sha256

        source, sha = str(model), file_sha256(model)
    else:
        source, sha = p.where, hashlib.sha256(model.SerializeToString()).hexdigest()
    info = _tensor_info(p.proto)
    method, n_calib, calib_source = calibration
    bias = [part.manifest.get("calibration", {}).get("bias_correction")
            for part in parts if not isinstance(part, onnx.ModelProto)]
    bias = [b for b in bias if b is not None]
    return {
        "format": "tccc-manifest", "manifest_version": MANIFEST_VERSION, "tool": "tccc",
        "tool_version": __version__, "layout": "segmented",
        "model": {"source": source, "sha256": sha, "opset": p.opset},
        "target": tgt.to_dict(),
        "input": {"name": p.in_name, "onnx_name": p.in_name, "shape": list(input_nchw),
                  "onnx_layout": p.layout, "dtype": "float32"},
        "outputs": _graph_output_records(plan, info),
        "graph_outputs": [o.name for o in p.proto.graph.output],
        "segments": [_segment_record(s, part, plan) for s, part in zip(plan.segments, parts)],
        "preprocess": preprocess.to_dict(),
        "calibration": {"method": method, "inputs": n_calib, "source": calib_source,
                        **({"bias_correction": any(bias)} if bias else {})},
    }


def boundaries(plan, parts: list, host) -> list[dict]:
    """Every tensor crossing between the NPU and the host, with its cost per image.

    A ``dequantize`` boundary is an NPU segment output read in float32 by another segment
    or the caller (int8/int32 NHWC -> float32 NCHW, once); an ``int8`` boundary one a host
    graph takes as int8 (:mod:`tcc_compiler.frontend.host_int8`: NHWC -> NCHW int8, once;
    the host graph's DequantizeLinear nodes are costed with its nodes); a ``quantize``
    boundary an NPU segment input (float32 -> int8, once per NPU segment reading it), an
    ``npu_int8`` boundary an NPU segment input that an earlier NPU segment made as int8
    (:func:`npu_int8_outputs`: int8 -> int8 by a 256-entry table, no float32). The
    model's image input (1 or 3 channels) is a ``pixels`` boundary: a deployment quantizes
    the camera's 8-bit pixels, at the input's size, straight to int8, the preprocessing
    folded into one 256-entry table per channel (``q = clamp(rint(((p * scale - mean) /
    std) / s) + zp)`` depends on the pixel ``p`` and its channel only), so 1 byte is read
    and 1 written per element, not a float32 image (whole-model estimates count no input
    conversion at all). ``bytes`` = what the host reads and writes, ``estimated_host_ms`` by
    :meth:`HostModel.boundary_seconds`. An NPU output read only by boundary prefixes
    (:mod:`tcc_compiler.frontend.host_prefix`) is converted by their gathers, one call per
    value a prefix hands on: its record counts its bytes, and each host segment with a
    prefix has one ``gather`` record counting the calls' fixed cost (``node_overhead_ns``
    per value handed on; no bytes: the sources' records count them).
    """
    int8_in, float_in = _readers_by_type(plan, parts)
    handed, gathered = _prefix_reads(parts)
    npu_int8 = npu_int8_outputs(parts)
    gathered -= {t for s in plan.segments if s.device != "host" for t in s.inputs
                 if t not in npu_int8}
    gathered -= {o.name for o in plan.prepared.proto.graph.output}
    out = []
    for seg, part in zip(plan.segments, parts):
        if isinstance(part, onnx.ModelProto):
            if handed.get(seg.index):
                out.append({"tensor": ", ".join(handed[seg.index]), "segment": seg.index,
                            "kind": "gather", "shape": [], "npu_bytes": 0, "float_bytes": 0,
                            "bytes": 0, "scale": None, "zero_point": None,
                            "estimated_host_ms": round(
                                len(handed[seg.index]) * host.node_overhead_ns * 1e-6, 6)})
            continue
        ios = [(_input_kind(rec, plan.prepared.in_name, npu_int8), rec)
               for rec in part.manifest.get("inputs") or [part.manifest["input"]]]
        for o in part.manifest["outputs"]:
            if o["name"] not in seg.outputs:
                continue
            ios += [("int8", o)] if o["name"] in int8_in else []
            ios += [("dequantize", o)] if o["name"] in float_in else []
        out += [_boundary(seg.index, kind, io, host,
                          overhead=kind != "dequantize" or io["name"] not in gathered)
                for kind, io in ios]
    return out


def npu_int8_outputs(parts: list) -> set[str]:
    """The NPU outputs (of ``parts`` so far) a later NPU segment takes as they are, int8:
    those int8 with one scale per tensor (an ``npu_int8`` boundary: the runtime maps each
    value through one 256-entry table to the reader's quantization, a copy when the two
    agree; the table is the float round trip's, so the values are identical)."""
    return {o["name"] for p in parts if not isinstance(p, onnx.ModelProto)
            for o in p.manifest["outputs"] if npu_int8_handoff(o)}


def npu_int8_handoff(rec: dict) -> bool:
    """True for an NPU output record (manifest ``outputs[]``) an NPU segment reading it
    takes as int8 (:func:`npu_int8_outputs`): dtype int8, one scale and zero point."""
    s, z = rec.get("scale"), rec.get("zero_point")
    return rec.get("dtype") == "int8" and isinstance(s, list) and isinstance(z, list) \
        and len(s) == len(z) == 1


def _input_kind(rec: dict, model_input: str, npu_int8: set[str]) -> str:
    """The boundary kind of an NPU segment's input record: ``pixels`` (the model's image
    input), ``npu_int8`` (an earlier NPU segment's int8 output) or ``quantize``."""
    if rec["name"] == model_input and rec["npu_hwc"][2] in IMAGE_CHANNELS:
        return "pixels"
    return "npu_int8" if rec["name"] in npu_int8 else "quantize"


def _prefix_reads(parts: list) -> tuple[dict[int, list[str]], set[str]]:
    """({host segment index: the values its boundary prefix hands on}, the tensors only
    boundary prefixes read among the host graphs)."""
    handed: dict[int, list[str]] = {}
    by_prefix: set[str] = set()
    direct: set[str] = set()
    for k, p in enumerate(parts):
        if not isinstance(p, onnx.ModelProto):
            continue
        n = int({m.key: m.value for m in p.metadata_props}.get(PREFIX_KEY, 0))
        nodes, ins = p.graph.node, {i.name for i in p.graph.input}
        outs = {o.name for o in p.graph.output}
        by_prefix |= {t for x in nodes[:n] for t in x.input if t in ins}
        direct |= {t for x in nodes[n:] for t in x.input if t in ins} | (ins & outs)
        later = {t for x in nodes[n:] for t in x.input} | outs
        if n:
            handed[k] = [o for x in nodes[:n] for o in x.output if o and o in later]
    return handed, by_prefix - direct


def _readers_by_type(plan, parts: list) -> tuple[set[str], set[str]]:
    """(tensors a host graph takes as int8, tensors read as float32: by a host graph, an NPU
    segment's input quantization or the caller as graph outputs)."""
    hosts = [i for p in parts if isinstance(p, onnx.ModelProto) for i in p.graph.input]
    is_int8 = [i.type.tensor_type.elem_type == onnx.TensorProto.INT8 for i in hosts]
    int8_in = {i.name for i, q in zip(hosts, is_int8) if q}
    float_in = {i.name for i, q in zip(hosts, is_int8) if not q}
    npu_int8 = npu_int8_outputs(parts)
    float_in |= {t for s in plan.segments if s.device != "host" for t in s.inputs
                 if t not in npu_int8}
    float_in |= {o.name for o in plan.prepared.proto.graph.output}
    return int8_in, float_in


def _boundary(segment: int, kind: str, io: dict, host, overhead: bool = True) -> dict:
    """One boundary record (see :func:`boundaries`): ``quantize``/``dequantize`` convert
    between int8 (or int16/int32) and float32; ``int8`` hands the NPU's integer values to a
    host graph that dequantizes them itself, a reorder from NHWC to ONNX order (integer
    bytes read and written); ``pixels`` quantizes the model's image input from its 8-bit
    pixels (one byte read, one written per element; see :func:`boundaries`); ``npu_int8``
    hands an earlier NPU segment's int8 output to an NPU segment's input through one
    256-entry table (one byte read, one written per element: :func:`npu_int8_outputs`)."""
    h, w, c = io["npu_hwc"]
    elems = h * w * c
    int_bytes = elems * np.dtype(io.get("dtype", "int8")).itemsize
    host_bytes = {"int8": int_bytes, "pixels": elems, "npu_int8": elems}.get(kind, 4 * elems)
    secs = host.boundary_seconds(int_bytes, host_bytes) - (
        0 if overhead else host.node_overhead_ns * 1e-9)   # (a gather's call: its record)
    return {"tensor": io["name"], "segment": segment, "kind": kind,
            "shape": list(io["shape"]), "npu_bytes": int_bytes,
            "float_bytes": 0 if kind in ("int8", "pixels", "npu_int8") else host_bytes,
            "bytes": int_bytes + host_bytes,
            "scale": io["scale"], "zero_point": io["zero_point"],
            "estimated_host_ms": round(secs * 1e3, 6)}


def host_graph_cost(part: onnx.ModelProto, host) -> dict:
    """The estimated cost of running host graph ``part`` (a host segment's ONNX model, with
    shapes in ``value_info``): ``ops`` {op type: count}, ``bytes`` moved (a view op's, run
    in place, are 0: :data:`tcc_compiler.target.host.VIEW_OPS`), ``macs``,
    ``estimated_host_ms`` (:meth:`HostModel.op_seconds` per node, in the dtypes the graph
    runs them in); the boundary prefix's nodes
    (:mod:`tcc_compiler.frontend.host_prefix`) move no bytes: the dequantize boundaries
    write their outputs in place, also into a join's output, whose other inputs are copied
    (read + written)."""
    info = _tensor_info(part)
    ms, moved, macs, ops = 0.0, 0, 0, {}
    meta = {p.key: p.value for p in part.metadata_props}
    skip = int(meta.get(PREFIX_KEY, 0))   # moves the boundary conversion makes (no pass)
    nodes = part.graph.node
    joins = len(nodes) - int(meta.get(JOIN_KEY, 0))
    gathered = {o for n in nodes[:skip] for o in n.output}
    for at, n in enumerate(nodes):
        if at < skip:
            continue
        if at >= joins:   # a join: its gathered inputs are written in place, others copied
            b = 2 * sum(_nbytes(info.get(t)) for t in n.input if t not in gathered)
        else:
            b = 0 if n.op_type in VIEW_OPS else sum(
                _nbytes(info.get(t)) for t in list(n.input) + list(n.output) if t)
        m = _node_macs(n, info)
        ms += host.op_seconds(n.op_type, b, m) * 1e3
        moved, macs = moved + b, macs + m
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    return {"ops": ops, "bytes": moved, "macs": macs, "estimated_host_ms": round(ms, 6)}


def _host_segment_report(seg, part: onnx.ModelProto, host) -> dict:
    """A host segment's report row (:func:`host_graph_cost`) of the graph written to
    ``host_<k>.onnx`` (what ONNX Runtime runs, with the dtypes it runs them in)."""
    return {"index": seg.index, "device": "host", "nodes": len(seg.nodes),
            **host_graph_cost(part, host), "file": segment_entry("host", seg.index)}


def build_segment_report(plan, parts: list, tgt, host) -> dict:
    """The top-level report of a segmented model: totals, one row per segment, the
    boundaries with their cost, and every NPU layer (``segment`` added to each row).

    NPU time is the sum of the segments' estimated latencies; host time the sum of the host
    segments' and boundaries' estimates (:mod:`tcc_compiler.target.host`), run one after the
    other (``estimated_total_ms``: no overlap of NPU and host work is assumed).
    """
    rows, layers = [], []
    for seg, part in zip(plan.segments, parts):
        if isinstance(part, onnx.ModelProto):
            rows.append(_host_segment_report(seg, part, host))
            continue
        r = part.report
        rows.append({"index": seg.index, "device": "npu", "nodes": len(seg.nodes),
                     "folder": segment_entry("npu", seg.index),
                     **{k: r[k] for k in ("command_bytes", "weight_bytes", "commands", "macs",
                                          "estimated_cycles", "estimated_latency_ms",
                                          "sram_peak_bytes", "dram_read_bytes",
                                          "dram_write_bytes", "roofline")},
                     "cores": r.get("cores"),
                     **({"precision": r["precision"]} if r.get("precision") else {}),
                     **({"bias_correction": r["bias_correction"]}
                        if r.get("bias_correction") else {})})
        layers += [{**li, "segment": seg.index} for li in r["layers"]]
    bounds = boundaries(plan, parts, host)
    npu_rows = [r for r in rows if r["device"] == "npu"]

    def total(key):
        return sum(r[key] for r in npu_rows)

    host_ms = sum(r["estimated_host_ms"] for r in rows if r["device"] == "host")
    bound_ms = sum(b["estimated_host_ms"] for b in bounds)
    npu_ms = total("estimated_latency_ms")
    precision = segments_precision(npu_rows)
    return {
        "tool_version": __version__, "target": tgt.name, "layout": "segmented",
        "segments": rows, "boundaries": bounds, "host_model": host.to_dict(),
        "placement": {"npu_nodes": sum(r["nodes"] for r in npu_rows),
                      "host_nodes": sum(r["nodes"] for r in rows if r["device"] == "host"),
                      "npu_segments": len(npu_rows), "host_segments": len(rows) - len(npu_rows)},
        "command_bytes": total("command_bytes"), "weight_bytes": total("weight_bytes"),
        "commands": total("commands"), "macs": total("macs"),
        "estimated_cycles": total("estimated_cycles"), "estimated_latency_ms": npu_ms,
        "estimated_host_ms": round(host_ms, 6), "estimated_boundary_ms": round(bound_ms, 6),
        "boundary_bytes": sum(b["bytes"] for b in bounds),
        "estimated_total_ms": round(npu_ms + host_ms + bound_ms, 6),
        "sram_peak_bytes": max(r["sram_peak_bytes"] for r in npu_rows),
        "dram_read_bytes": total("dram_read_bytes"),
        "dram_write_bytes": total("dram_write_bytes"),
        "layers": layers,
        **({"precision": precision} if precision else {}),
    }


def segments_precision(npu_rows: list[dict]) -> dict | None:
    """The top-level report's ``precision`` of a segmented model: every NPU segment's
    ``--precision`` choice (its report's ``precision``, README "Mixed precision") merged:
    ``mode`` (and auto's ``goal_db`` and ``target_db``), the int16 layers, tensors and weight
    layers of all segments, those kept int8 with why, ``cost``: the segments' estimated
    latency (ms), DRAM bytes per image and stored weight bytes summed (int8, mixed, added),
    and for ``auto`` / ``budget`` ``output_sqnr_db`` per segment folder (each segment's own,
    on its calibration inputs: they do not add). None when no segment has a choice (int8)."""
    ps = [(r["folder"], r["precision"]) for r in npu_rows if r.get("precision")]
    if not ps:
        return None
    out = {"mode": ps[0][1]["mode"],
           **{k: ps[0][1][k] for k in ("goal_db", "target_db") if k in ps[0][1]}}
    for key in ("int16_layers", "int16_tensors", "int16_weight_layers"):
        out[key] = [n for _, p in ps for n in p.get(key, ())]
    for key in ("kept_int8", "kept_int8_weights"):
        out[key] = {k: v for _, p in ps for k, v in p.get(key, {}).items()}
    sqnr = {f: p["output_sqnr_db"] for f, p in ps if p.get("output_sqnr_db")}
    if sqnr:
        out["output_sqnr_db"] = sqnr
    costs = [p["cost"] for _, p in ps if p.get("cost")]
    if costs:
        out["cost"] = _summed_costs(costs)
    return out


def _summed_costs(costs: list[dict]) -> dict:
    """The segments' precision ``cost`` records summed (int8, mixed, added; ms and bytes)."""
    return {key: {k: round(sum(c[key][k] for c in costs), 6) for k in ("int8", "mixed", "added")}
            for key in ("estimated_latency_ms", "dram_bytes_per_image", "layer_weight_bytes")}


def write_segmented_package(folder: str | os.PathLike, manifest: dict, report: dict,
                            parts: list, calib_table: dict | None) -> Path:
    """Write a segmented model's folder in one step (:func:`fsutil.atomic_dir`): manifest.json,
    report.json, report.csv, calib_table.json, one ``npu_<k>/`` folder per NPU segment (the
    files of a whole-model folder, :func:`write_files`) and one ``host_<k>.onnx`` per host
    segment.

    Raises:
        InputError: the folder cannot be written, or holds files tccc did not write.
    """
    with atomic_dir(folder) as tmp:
        for seg, part in zip(manifest["segments"], parts):
            if isinstance(part, onnx.ModelProto):
                (tmp / seg["file"]).write_bytes(part.SerializeToString())
                continue
            sub = tmp / seg["folder"]
            sub.mkdir()
            write_files(sub, part.cmd_bin, part.weight_bin, part.manifest, part.report,
                        part.graph, part.calib_table, part.trace, part.extra_files)
        (tmp / REPORT_FILE).write_text(json_text(report, indent=2, sort_keys=True) + "\n")
        (tmp / REPORT_CSV_FILE).write_text(perf_report.to_csv(report.get("layers", [])))
        if calib_table is not None:
            write_table(calib_table, tmp / CALIB_TABLE_FILE)
        (tmp / MANIFEST_FILE).write_text(json_text(manifest, indent=2, sort_keys=True) + "\n")
    return Path(folder)
