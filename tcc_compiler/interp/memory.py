"""Peak memory of compiling a graph, estimated before calibration starts.

Calibration runs the float graph on one input at a time and keeps only the live activations
(:func:`tcc_compiler.interp.float_exec.run_float` with ``visit``; observers count each value in
chunks), so its peak is the largest, over the nodes, of the float32 values live while a node
runs plus that node's working memory (:func:`working_bytes`). On top come the model's
constants, held several times over (ONNX proto, IR, folded and quantized copies, weight
file), one decoded calibration image, and the interpreter's fixed cost.

The constants below were measured with ``/usr/bin/time -v`` on ``tccc compile`` (peak RSS,
2-core x86-64 Linux, numpy/OpenBLAS): see the module test tests/interp/test_compile_memory.py
and the figures in the issue #16 report. They are set so the estimate stays above every
measurement (an upper bound, not a guess).
"""

from __future__ import annotations

import numpy as np

from tcc_compiler.interp.float_exec import working_bytes
from tcc_compiler.interp.onnx_float import OVERLAP_BYTES, ORT_OUTPUT_BYTES, values_bytes
from tcc_compiler.ir.graph import Graph

#: Fixed cost of a compile (bytes): Python with numpy, onnx, onnxruntime and tccc imported, the
#: pass pipeline and the scheduler. A 1-conv model at 8x8 peaks at ~0.2 GB.
BASE_BYTES = 600 << 20
#: Copies of the float32 constants held at the peak (ONNX proto, IR constants, the float graph
#: kept for the report, quantized int8/int32 copies, compressed weight blocks): ResNet-50's
#: 102 MB of float32 weights peak with ~0.9 GB in all.
CONST_COPIES = 6
#: Working memory of decoding and preprocessing one calibration image, per float32 input byte
#: (the decoded uint8 image, a resized float copy and the normalized result).
IMAGE_FACTOR = 3
#: Observer scratch: float64 chunks of 2**22 values plus their int64 bin indices and masks.
OBSERVER_BYTES = 4 * 8 * (1 << 22)


def _elems(v) -> int:
    return int(np.prod(v.shape, dtype=np.int64))


def live_peak_bytes(graph: Graph) -> int:
    """Largest float32 bytes held while any one node runs: the graph input, the values still
    to be read (or graph outputs) and the node's own output, plus its :func:`working_bytes`."""
    outs = {id(o) for o in graph.outputs}
    last: dict[int, int] = {}
    for i, n in enumerate(graph.nodes):
        for v in n.inputs:
            if v is not None and not v.is_const:
                last[id(v)] = i
    live = {id(graph.inputs[0]): _elems(graph.inputs[0]) * 4}
    peak = 0
    for i, n in enumerate(graph.nodes):
        live[id(n.output)] = _elems(n.output) * 4
        peak = max(peak, sum(live.values()) + working_bytes(n))
        for v in n.inputs:
            if v is not None and id(v) in live and last.get(id(v)) == i and id(v) not in outs:
                del live[id(v)]
    return peak


def constant_bytes(graph: Graph) -> int:
    """Bytes of the float ``graph``'s constant inputs (weights, biases), each counted once per
    use as a node input."""
    return sum(v.const.nbytes for n in graph.nodes for v in n.inputs
               if v is not None and v.is_const and v.const is not None)


def estimate_compile_memory(graph: Graph) -> tuple[int, int]:
    """An upper bound of the peak memory (bytes) of compiling the float ``graph`` (after the
    float passes), and the float32 activation bytes of its largest live set it is based on.

    Returns:
        (bytes needed, bytes of float activations live at the calibration peak).
    """
    const = constant_bytes(graph)
    act = live_peak_bytes(graph)
    image = _elems(graph.inputs[0]) * 4 * IMAGE_FACTOR
    # calibrating in ONNX Runtime holds every value of one input (only below ORT_OUTPUT_BYTES;
    # beyond, the interpreter streams them), of two inputs below OVERLAP_BYTES (the next
    # input's run overlaps the observers), plus its own copy of the weights
    vals = values_bytes(graph)
    ort = vals * (2 if vals <= OVERLAP_BYTES else 1) + const if vals <= ORT_OUTPUT_BYTES else 0
    return BASE_BYTES + CONST_COPIES * const + act + image + OBSERVER_BYTES + ort, act
