"""A compiled folder as an ONNX model that ONNX Runtime runs, NPU segments as custom nodes.

Each NPU segment of the compiled program becomes one node ``TcccNpuProgram<k>`` of domain
``ai.onnx.contrib`` referencing the folder (:mod:`tcc_compiler.runtime.ort_ops` documents the
node and implements it); each host segment stays standard ONNX ops reading the segment
outputs it needs:

* softmax: ``Cast`` to float64, ``Softmax``, ``Cast`` to float32 (``tccc run`` computes it in
  float64 and rounds once, so the outputs agree bit for bit);
* argmax: ``ArgMax`` (``keepdims=0``, first index on ties, as numpy).

The segments come from the folder's manifest (:func:`segments`): one NPU program reading
the model input, then the host ops in the manifest's order; the exporter loops over them. A
segmented folder (NPU and host segments anywhere, specs/manifest.md) loops over its
``segments`` instead (:func:`_segmented_graph`): each NPU segment one custom node referencing
its ``npu_<k>`` folder, each host segment the nodes and initializers of its ``host_<k>.onnx``,
at the original model's opset.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tcc_compiler.errors import FormatError
from tcc_compiler.version import __version__

log = logging.getLogger(__name__)

#: Opset of the host ops (Softmax over one axis from 13).
OPSET = 17


@dataclass(frozen=True)
class Segment:
    """One part of a compiled model, run on one device.

    Attributes:
        device: "npu" or "host".
        inputs: tensor names it reads (the model input for the NPU program).
        outputs: tensor names it writes (manifest names).
        op: the host op record of the manifest (``{"op", "input", "output", "axis"}``), None
            for an NPU segment.
    """

    device: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    op: dict | None = None


def segments(manifest: dict) -> list[Segment]:
    """The segments of a compiled folder, in execution order, from its manifest.

    Raises:
        FormatError: a host op of unknown kind.
    """
    inp = manifest["input"].get("onnx_name", manifest["input"]["name"])
    out = [Segment("npu", (inp,), tuple(o["name"] for o in manifest["outputs"]))]
    for op in manifest["host_ops"]:
        if op["op"] not in ("softmax", "argmax"):
            raise FormatError(f"manifest: unknown host op {op['op']!r}")
        out.append(Segment("host", (op["input"],), (op["output"],), op))
    return out


def _host_nodes(seg: Segment) -> list[onnx.NodeProto]:
    op, x, y = seg.op, seg.inputs[0], seg.outputs[0]
    if op["op"] == "argmax":
        return [helper.make_node("ArgMax", [x], [y], name=f"{y}_ArgMax", axis=op["axis"],
                                 keepdims=0)]
    return [helper.make_node("Cast", [x], [f"{y}__f64"], name=f"{y}_Cast64",
                             to=TensorProto.DOUBLE),
            helper.make_node("Softmax", [f"{y}__f64"], [f"{y}__sm"], name=f"{y}_Softmax",
                             axis=op["axis"]),
            helper.make_node("Cast", [f"{y}__sm"], [y], name=f"{y}_Cast32",
                             to=TensorProto.FLOAT)]


def _shapes(man: dict) -> dict[str, list[int]]:
    """Shapes of every segment output: NPU outputs from the manifest, host outputs derived
    (softmax keeps the shape, argmax drops its axis)."""
    shapes = {o["name"]: list(o["shape"]) for o in man["outputs"]}
    for op in man["host_ops"]:
        shp = list(shapes[op["input"]])
        if op["op"] == "argmax":
            del shp[op["axis"]]
        shapes[op["output"]] = shp
    return shapes


def export_ort(folder: str | os.PathLike) -> onnx.ModelProto:
    """Build the ONNX Runtime model of a compiled folder (validated as ``tccc run`` does).

    Returns:
        A checked ModelProto: input float32 shaped as the ONNX model's input (NCHW, or NHWC
        when the model took NHWC), outputs the graph outputs (float32; int64 for an argmax).

    Raises:
        InputError, FormatError: the folder is missing or invalid.
    """
    from tcc_compiler.runtime import load_program
    from tcc_compiler.runtime.ort_ops import DOMAIN, op_type

    prog = load_program(folder)
    man = prog.manifest
    if man.get("layout") == "segmented":
        return _finish(*_segmented_graph(Path(folder).resolve(), man, prog))
    absolute = str(Path(folder).resolve())
    nodes = []
    for i, seg in enumerate(segments(man)):
        if seg.device == "npu":
            node = helper.make_node(op_type(len(seg.outputs)), list(seg.inputs),
                                    list(seg.outputs), name=f"npu_segment_{i}", domain=DOMAIN,
                                    folder=absolute)
            node.attribute.append(helper.make_attribute("outputs",
                                                        json.dumps(list(seg.outputs))))
            nodes.append(node)
        else:
            nodes.extend(_host_nodes(seg))
    shapes = _shapes(man)
    argmax_outs = {op["output"] for op in man["host_ops"] if op["op"] == "argmax"}
    ins = _nhwc_input(nodes, man, prog)
    outs = [helper.make_tensor_value_info(
        o, TensorProto.INT64 if o in argmax_outs else TensorProto.FLOAT, shapes[o])
        for o in man["graph_outputs"]]
    return _finish(helper.make_graph(nodes, "tccc_npu", ins, outs), OPSET, 8)


def _nhwc_input(nodes: list[onnx.NodeProto], man: dict, prog) -> list[onnx.ValueInfoProto]:
    """The graph input (float32, the ONNX model's shape and layout). For a model that took
    NHWC (manifest ``input.onnx_layout``), a Transpose to NCHW is put first and the NPU
    program nodes reading the input read it (they take NCHW, :meth:`LoadedProgram.run`);
    host nodes keep reading the NHWC input as in the original model. Edits ``nodes``."""
    from tcc_compiler.runtime.loaded import input_layout
    from tcc_compiler.runtime.ort_ops import DOMAIN

    inp = man["input"]
    name = inp.get("onnx_name", inp["name"])
    shape = list(prog.input_shape)
    if input_layout(man) != "NHWC" or len(shape) != 4:
        return [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)]
    nchw = f"{name}__nchw"
    for node in nodes:
        if node.domain == DOMAIN:
            node.input[:] = [nchw if t == name else t for t in node.input]
    nodes.insert(0, helper.make_node("Transpose", [name], [nchw], name="input_nchw",
                                     perm=[0, 3, 1, 2]))
    n, c, h, w = shape
    return [helper.make_tensor_value_info(name, TensorProto.FLOAT, [n, h, w, c])]


def _finish(graph: onnx.GraphProto, opset: int, ir_version: int) -> onnx.ModelProto:
    """The checked model of ``graph``: default-domain ``opset`` plus the custom domain."""
    from tcc_compiler.runtime.ort_ops import DOMAIN

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset),
                                                    helper.make_opsetid(DOMAIN, 1)],
                              producer_name="tccc", producer_version=__version__)
    model.ir_version = ir_version
    onnx.checker.check_model(model)
    return model


def _segmented_graph(folder: Path, man: dict, prog) -> tuple[onnx.GraphProto, int, int]:
    """(graph, default opset, IR version) of a segmented folder: its segments in order, NPU
    segments as custom nodes on their ``npu_<k>`` folders, host segments inlined.

    Raises:
        FormatError: an NPU segment output its program does not produce, or host graphs of
            different opsets.
    """
    from tcc_compiler.runtime.ort_ops import DOMAIN, op_type

    nodes, inits, opsets, ir = [], [], set(), 8
    for k, seg in enumerate(man["segments"]):
        if seg["device"] == "npu":
            sub = prog.programs[k].manifest
            made = [o["name"] for o in sub["outputs"]] + [h["output"] for h in sub["host_ops"]]
            missing = [t for t in seg["outputs"] if t not in made]
            if missing:
                raise FormatError(f"{folder}: segment {k} lists outputs {missing} that "
                                  f"{seg['folder']} does not produce")
            node = helper.make_node(op_type(len(seg["outputs"]), len(seg["inputs"])),
                                    list(seg["inputs"]),
                                    list(seg["outputs"]), name=f"npu_segment_{k}",
                                    domain=DOMAIN, folder=str(folder / seg["folder"]))
            node.attribute.append(helper.make_attribute("outputs",
                                                        json.dumps(list(seg["outputs"]))))
            nodes.append(node)
            continue
        host = onnx.load(str(folder / seg["file"]))
        nodes.extend(_int8_feeds(host, prog, inits))
        nodes.extend(host.graph.node)
        inits.extend(host.graph.initializer)
        opsets |= {o.version for o in host.opset_import if o.domain in ("", "ai.onnx")}
        ir = max(ir, host.ir_version)
    if len(opsets) > 1:
        raise FormatError(f"{folder}: host graphs of different opsets {sorted(opsets)}")
    ins = _nhwc_input(nodes, man, prog)
    shapes = {o["name"]: o for o in man["outputs"]}
    outs = [helper.make_tensor_value_info(
        name, helper.np_dtype_to_tensor_dtype(np.dtype(shapes[name].get("dtype", "float32"))),
        list(shapes[name]["shape"])) for name in man["graph_outputs"]]
    graph = helper.make_graph(nodes, "tccc_npu", ins, outs, initializer=inits)
    return graph, max(opsets, default=OPSET), ir


def _int8_feeds(host: onnx.ModelProto, prog, inits: list) -> list[onnx.NodeProto]:
    """QuantizeLinear nodes giving a host graph the int8 inputs it takes
    (:mod:`tcc_compiler.frontend.host_int8`) from the float32 outputs of the NPU custom
    nodes: ``(q - zp) * scale`` divided by the scale rounds back to ``q`` exactly
    (``|q - zp| <= 255``). The host nodes are renamed to read them; scale and zero point
    initializers are appended to ``inits``."""
    recs = {o["name"]: o for p in prog.programs.values() for o in p.manifest["outputs"]}
    out = []
    for inp in host.graph.input:
        if inp.type.tensor_type.elem_type != TensorProto.INT8:
            continue
        t, rec = inp.name, recs[inp.name]
        q = t + "::export_int8"
        inits += [numpy_helper.from_array(np.array(rec["scale"][0], np.float32), q + "_scale"),
                  numpy_helper.from_array(np.array(rec["zero_point"][0], np.int8), q + "_zp")]
        out.append(helper.make_node("QuantizeLinear", [t, q + "_scale", q + "_zp"], [q],
                                    name=q))
        for n in host.graph.node:
            for k, name in enumerate(n.input):
                if name == t:
                    n.input[k] = q
    return out


def save_ort(folder: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Write :func:`export_ort` of ``folder`` to ``path`` (checked first, written atomically).

    Raises:
        InputError, FormatError: invalid folder or unwritable output.
    """
    from tcc_compiler.fsutil import check_output_file, write_output_file

    check_output_file(path, "-o", reads=folder)
    model = export_ort(folder)
    path = write_output_file(path, model.SerializeToString(), "-o")
    log.info("wrote %s (%d nodes)", path, len(model.graph.node))
    return path
