"""``manifest.json``: everything a host runtime needs to feed and read the NPU program.

Built from the quantized graph, the lowered :class:`~tcc_compiler.schedule.Program` and the
target by :func:`build_manifest`; read back by :mod:`tcc_compiler.runtime.loaded`.
"""

from __future__ import annotations

import zlib

from tcc_compiler.version import __version__
from tcc_compiler.binfmt.weightfile import compression_summary
from tcc_compiler.emit.files import CMD_FILE, MANIFEST_VERSION, WEIGHT_FILE
from tcc_compiler.ir.graph import Graph
from tcc_compiler.ir.ops import HOST_OPS, Op
from tcc_compiler.quant.precision import INT16_PRODUCERS
from tcc_compiler.schedule import Program
from tcc_compiler.target import Target


def _host_ops(graph: Graph) -> list[dict]:
    """The host ops run after the NPU program (softmax, argmax), as manifest entries."""
    out = []
    for n in graph.nodes:
        if n.op in HOST_OPS:
            out.append({"op": n.op.value, "input": n.inputs[0].name, "output": n.output.name,
                        "axis": n.attrs.axis, "keepdims": n.attrs.keepdims,
                        "source": list(n.source)})
    return out


def _io_dict(io) -> dict:
    """One NPU input/output (a Program IO record) as a manifest entry."""
    return {"name": io.name, "shape": list(io.shape), "npu_hwc": list(io.hwc),
            "npu_layout": "NHWC", "dtype": io.dtype, "region": io.region.name,
            "offset": io.offset, "scale": io.scale, "zero_point": io.zero_point}


def _extra_input(io) -> dict:
    """A program input after the first (an NPU segment reading several tensors) as a manifest
    ``inputs`` entry: as ``input``, its ONNX tensor always NCHW."""
    rec = dict(_io_dict(io))
    rec.update(onnx_layout="NCHW", onnx_name=io.name,
               quantize="q = clamp(rint(x / scale) + zero_point, -128, 127), NHWC")
    return rec


def build_manifest(graph: Graph, program: Program, tgt: Target, cmd_bin: bytes, preprocess,
                   method: str, n_calib: int, calib_source: str, source, sha: str,
                   weight_bin: bytes, bias_correction: bool | None = None) -> dict:
    """The manifest: everything a host runtime needs to feed and read the NPU program.

    ``cmd_bin`` and ``weight_bin`` are the two binaries' bytes (sizes and CRC-32s recorded);
    ``bias_correction`` (whether the quantize stage corrected the biases; None: not
    quantized here, no key) is recorded as ``calibration.bias_correction``.
    """
    inp = dict(_io_dict(program.inputs[0]))
    inp["onnx_layout"] = graph.meta.get("input_layout", "NCHW")
    inp["onnx_name"] = graph.meta.get("onnx_input", inp["name"])
    inp["quantize"] = "q = clamp(rint(x / scale) + zero_point, -128, 127), NHWC"
    wide = sorted(v.name for v in graph.values() if v.dtype == "int16" and not v.is_const)
    wide_w = [n.name for n in graph.nodes if n.op in (Op.CONV, Op.FC)
              and n.inputs[1].dtype == "int16"]
    return {
        "format": "tccc-manifest",
        "manifest_version": MANIFEST_VERSION,
        "tool": "tccc",
        "tool_version": __version__,
        "model": {"source": str(source) if source else graph.name, "sha256": sha,
                  "opset": graph.meta.get("opset")},
        "target": tgt.to_dict(),
        "cores": program.cores,
        "files": {
            CMD_FILE: {"bytes": len(cmd_bin), "crc32": zlib.crc32(cmd_bin)},
            WEIGHT_FILE: {"bytes": len(weight_bin),
                          "crc32": zlib.crc32(weight_bin),
                          "compression": compression_summary(weight_bin)},
        },
        "dram": {"act_arena_bytes": program.act_arena_bytes,
                 "input_bytes": program.input_bytes, "output_bytes": program.output_bytes},
        "input": inp,
        **({"inputs": [inp] + [_extra_input(io) for io in program.inputs[1:]]}
           if len(program.inputs) > 1 else {}),
        "outputs": [_io_dict(o) for o in program.outputs],
        "graph_outputs": [o.name for o in graph.outputs],
        "host_ops": _host_ops(graph),
        "preprocess": preprocess.to_dict(),
        "calibration": {"method": method, "inputs": n_calib, "source": calib_source,
                        **({"bias_correction": bias_correction}
                           if bias_correction is not None else {})},
        "precision": {"activations": "int8" if not wide else "mixed",
                      "int16_layers": [n.name for n in graph.nodes
                                       if n.output.dtype == "int16" and n.op in INT16_PRODUCERS],
                      "int16_tensors": wide,
                      **({"int16_weight_layers": wide_w} if wide_w else {})},
    }
