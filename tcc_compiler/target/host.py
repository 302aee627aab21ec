"""The host CPU's cost model: estimated time of host segments and NPU <-> host boundaries.

The numbers are the ``[host]`` section of the target file (specs/target.md, modelled
assumptions used only for the report; tccc never runs on that CPU). Formulas:

* one host node: ``node_overhead_ns * 1e-9 + (bytes read + bytes written) / bandwidth_bytes_per_s
  + macs / macs_per_s`` seconds, bytes of its float32 (or other typed) inputs and outputs,
  ``macs`` counted for Conv / ConvTranspose / MatMul / Gemm only (every other op streams);
  a node of :data:`VIEW_OPS` moves no bytes (``node_overhead_ns`` only): ONNX Runtime runs
  Reshape, Flatten, Squeeze, Unsqueeze and Identity in place on a contiguous input (its
  allocation planner gives the output the input's buffer), measured at 8-31 us per node on
  YOLOv8n's head where a copy of the same 0.2-4 MB would take 0.05-1 ms;
* one boundary conversion (dequantize an NPU output, quantize an NPU input):
  ``node_overhead_ns * 1e-9 + (NPU-side bytes + host-side bytes) / bandwidth_bytes_per_s``
  seconds; the host side is float32, the NPU's integers themselves for an int8 hand-off (an
  NPU output a host graph takes as int8 and dequantizes itself,
  :mod:`tcc_compiler.frontend.host_int8`: a reorder from NHWC to ONNX order), 8-bit pixels
  for the model's image input (:func:`tcc_compiler.emit.segments.boundaries`).
"""

from __future__ import annotations

import logging
import tomllib
from dataclasses import dataclass
from pathlib import Path

from tcc_compiler.errors import InputError

log = logging.getLogger(__name__)

#: Keys of the ``[host]`` section, all positive integers.
HOST_KEYS = ("bandwidth_bytes_per_s", "macs_per_s", "node_overhead_ns")

#: ONNX ops that only relabel a tensor's shape: run in place, no bytes moved (module docstring).
VIEW_OPS = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"})


@dataclass(frozen=True)
class HostModel:
    """The modelled host CPU (``[host]`` of the target file).

    Attributes:
        bandwidth_bytes_per_s: effective memory bandwidth streaming tensors (bytes/s).
        macs_per_s: float32 multiply-accumulates per second.
        node_overhead_ns: fixed cost of one node or boundary conversion (ns).
    """

    bandwidth_bytes_per_s: int
    macs_per_s: int
    node_overhead_ns: int

    def node_seconds(self, bytes_moved: int, macs: int = 0) -> float:
        """Estimated seconds of one host node moving ``bytes_moved`` bytes (read + written)
        and computing ``macs`` multiply-accumulates (module docstring)."""
        return (self.node_overhead_ns * 1e-9 + bytes_moved / self.bandwidth_bytes_per_s
                + macs / self.macs_per_s)

    def op_seconds(self, op_type: str, bytes_moved: int, macs: int = 0) -> float:
        """Estimated seconds of one host node of ONNX type ``op_type``: :meth:`node_seconds`,
        with no bytes moved for a :data:`VIEW_OPS` node (it runs in place)."""
        if op_type in VIEW_OPS:
            return self.node_seconds(0, 0)
        return self.node_seconds(bytes_moved, macs)

    def boundary_seconds(self, int_bytes: int, float_bytes: int) -> float:
        """Estimated seconds of one (de)quantization of a boundary tensor: ``int_bytes`` on
        the NPU side, ``float_bytes`` on the host side (float32; the integers or pixels
        themselves for an int8 hand-off or an image input: module docstring)."""
        return self.node_overhead_ns * 1e-9 + (int_bytes + float_bytes) / \
            self.bandwidth_bytes_per_s

    def to_dict(self) -> dict:
        """JSON-ready dict of the three fields (the segmented manifest's ``host_model``)."""
        return {k: getattr(self, k) for k in HOST_KEYS}


def load_host_model(source: str | None = None) -> HostModel:
    """The ``[host]`` section of a target file.

    Args:
        source: the target's .toml path (``Target.source``); None or "" = the packaged
            default target (a target rebuilt from a manifest has no file).

    Raises:
        InputError: the section is missing or a key is not a positive integer (naming the
            file and key).
    """
    from tcc_compiler.target.target import DEFAULT_TARGET

    path = Path(source) if source else (Path(__file__).resolve().parent / "targets"
                                        / f"{DEFAULT_TARGET}.toml")
    try:
        data = tomllib.loads(path.read_text()).get("host")
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read the [host] section ({exc})") from None
    if data is None and source:  # a target file written before host segments existed
        log.warning("%s: no [host] section; host-time estimates use the default target's",
                    path)
        return load_host_model(None)
    if not isinstance(data, dict):
        raise InputError(f"{path}: [host] must be a table of {', '.join(HOST_KEYS)} "
                         "(see specs/target.md)")
    for key in HOST_KEYS:
        v = data.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise InputError(f"{path}: [host] {key}: expected a positive integer, got {v!r}")
    return HostModel(**{k: data[k] for k in HOST_KEYS})
