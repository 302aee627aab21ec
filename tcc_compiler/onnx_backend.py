"""ONNX backend interface (``onnx.backend.base.Backend``) running models on tccc.

Toolkits written against ONNX's backend API can run a model INT8 on the TCC750x reference
executor and get dequantized float outputs::

    >>> import tcc_compiler.onnx_backend as tb
    >>> rep = tb.prepare(model, "CPU")          # or tb.TcccBackend.prepare(...)
    >>> (y,) = rep.run([x])                      # x: float32 NCHW [1, C, H, W]

How the ONNX interface maps onto an ahead-of-time INT8 compiler:

* **Inputs.** tccc compiles for one float32 image input (NCHW, batch 1). The first graph input
  (that is not an initializer) is the image. Any further graph inputs (ONNX's node tests feed
  weights this way) are frozen as constants to the values given at the first :meth:`run`;
  a later run with different values for them recompiles.
* **Calibration.** ``prepare(model, calibration=[...])`` takes what :func:`tcc_compiler.compile`
  takes. Without it, the program is compiled at the first :meth:`run` and calibrated on that
  run's image input (best case for the activation ranges; give real calibration data for
  honest accuracy).
* **Outputs.** One array per graph output, in graph order: float32 dequantized NPU outputs,
  host ops applied (Softmax float32, ArgMax int64).
* **Device.** The NPU is simulated on the host, so the device string is ``"CPU"``.
* **Tolerance.** Outputs are INT8-quantized: :func:`int8_close` is the documented
  comparison (see :data:`INT8_TOLERANCE_LSB`).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Sequence

import numpy as np
import onnx
from onnx.backend.base import Backend, BackendRep, Device, DeviceType

from tcc_compiler.errors import InputError
from tcc_compiler.frontend.onnx_import import is_nhwc_input
from tcc_compiler.options import DEFAULTS

log = logging.getLogger(__name__)

#: Documented INT8 tolerance for comparing tccc outputs with a float reference: every element
#: within this many LSBs of an 8-bit code spanning the reference output's range widened to 0,
#: i.e. ``|y - ref| <= INT8_TOLERANCE_LSB * (max(ref, 0) - min(ref, 0)) / 255`` (plus 1e-6
#: absolute for constant outputs). 4 LSB covers the input quantization step, the per-layer
#: rounding of a few fused layers and the output rounding (see specs/quantization.md).
INT8_TOLERANCE_LSB = 4.0


def int8_tolerance(ref: np.ndarray) -> float:
    """Absolute tolerance for an INT8 result against float ``ref`` (any shape, float dtype):
    ``INT8_TOLERANCE_LSB * (max(ref, 0) - min(ref, 0)) / 255 + 1e-6`` (tccc widens every
    activation range to include 0, so one LSB is that span / 255)."""
    ref = np.asarray(ref, np.float64)
    if ref.size == 0:
        return 1e-6
    span = max(float(ref.max()), 0.0) - min(float(ref.min()), 0.0)
    return INT8_TOLERANCE_LSB * span / 255.0 + 1e-6


def int8_close(out: np.ndarray, ref: np.ndarray) -> bool:
    """True when ``out`` matches ``ref`` in shape and, for floats, within
    :func:`int8_tolerance`; integer outputs (ArgMax) must match exactly."""
    out, ref = np.asarray(out), np.asarray(ref)
    if out.shape != ref.shape:
        return False
    if not np.issubdtype(ref.dtype, np.floating):
        return bool(np.array_equal(out, ref))
    return bool(np.all(np.abs(out.astype(np.float64) - ref) <= int8_tolerance(ref)))


def _graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    inits = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


class TcccRep(BackendRep):
    """A model prepared for tccc (:class:`onnx.backend.base.BackendRep`).

    Attributes:
        model: the ONNX model as given to ``prepare``.
        compiled: the current :class:`tcc_compiler.api.CompiledModel` (None until compiled).
    """

    def __init__(self, model: onnx.ModelProto, calibration: Sequence[Any] | None = None,
                 method: str = DEFAULTS.method, target: str | None = None):
        super().__init__()
        self.model = model
        self.calibration = list(calibration) if calibration is not None else None
        self.method = method
        self.target = target
        self.compiled = None
        self._frozen: list[np.ndarray] | None = None
        self._inputs = _graph_inputs(model)
        if not self._inputs:
            raise InputError(f"{model.graph.name or '<model>'}: no graph input to feed")
        if self.calibration is not None and len(self._inputs) == 1:
            self._compile([])

    def _freeze(self, extra: list[np.ndarray]) -> onnx.ModelProto:
        m = onnx.ModelProto()
        m.CopyFrom(self.model)
        keep = [self._inputs[0].name]
        for vi, arr in zip(self._inputs[1:], extra):
            m.graph.initializer.append(onnx.numpy_helper.from_array(np.asarray(arr), vi.name))
        inits = {i.name for i in m.graph.initializer}
        del m.graph.input[:]
        m.graph.input.extend([i for i in self.model.graph.input
                              if i.name in keep or i.name in inits])
        return m

    def _compile(self, extra: list[np.ndarray], x: np.ndarray | None = None) -> None:
        from tcc_compiler import api

        calib = self.calibration if self.calibration is not None else [x]
        self.compiled = api.compile(self._freeze(extra), None, calibration=calib,
                                    method=self.method, target=self.target)
        self._frozen = [np.asarray(a).copy() for a in extra]

    def _input_list(self, inputs: Any) -> list[np.ndarray]:
        """``inputs`` (a list in graph-input order, a dict by name, or one array) as a list of
        arrays in graph-input order. Raises InputError: a missing input or a wrong count."""
        if isinstance(inputs, dict):
            try:
                inputs = [inputs[i.name] for i in self._inputs]
            except KeyError as exc:
                raise InputError(f"missing input {exc}") from None
        elif isinstance(inputs, np.ndarray):
            inputs = [inputs]
        inputs = [np.asarray(a) for a in inputs]
        if len(inputs) != len(self._inputs):
            raise InputError(f"expected {len(self._inputs)} inputs "
                             f"({', '.join(i.name for i in self._inputs)}), got {len(inputs)}")
        return inputs

    def run(self, inputs: Any, **kwargs: Any) -> tuple[np.ndarray, ...]:
        """Run one batch-1 input set.

        Args:
            inputs: a list of arrays in graph-input order (or a dict by name, or one array):
                the first is the float32 image (the model's input shape: NCHW, or NHWC
                ``[1, H, W, C]`` when the model takes NHWC), the rest are frozen as constants
                (see the module docstring).

        Returns:
            Tuple of outputs in graph order (float32 dequantized; int64 for ArgMax).

        Raises:
            InputError: missing inputs, wrong shapes. UnsupportedError, ModelError: the model
            cannot be compiled (lists every unsupported node).
        """
        inputs = self._input_list(inputs)
        x = np.asarray(inputs[0], np.float32)
        if x.ndim == 0 or x.shape[0] != 1:
            raise InputError(f"{self.model.graph.name or '<model>'}: input "
                             f"'{self._inputs[0].name}' has shape {x.shape}; tccc compiles "
                             "batch 1 (run the images one at a time)")
        if x.ndim == 4 and is_nhwc_input(self.model, self._inputs[0].name):
            x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))   # tccc's runtime takes NCHW
        extra = inputs[1:]
        stale = self._frozen is None or len(extra) != len(self._frozen) or any(
            a.shape != b.shape or not np.array_equal(a, b) for a, b in zip(extra, self._frozen))
        if self.compiled is None or stale:
            if self.compiled is not None:
                log.info("inputs beyond the first changed: recompiling")
            self._compile(extra, x)
        res = self.compiled.run_all(x)
        return tuple(res[o.name] for o in self.model.graph.output)


class TcccBackend(Backend):
    """tccc as an ONNX backend (:class:`onnx.backend.base.Backend`)."""

    @classmethod
    def is_compatible(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> bool:
        """True when every graph input is float32 (tccc's only input type); whether the
        nodes are supported is answered by :func:`tcc_compiler.partition`."""
        return all(i.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
                   for i in _graph_inputs(model))

    @classmethod
    def prepare(cls, model: onnx.ModelProto | str | os.PathLike, device: str = "CPU",
                **kwargs: Any) -> TcccRep:
        """Prepare ``model`` for running.

        Args:
            model: the ONNX model, or the path of an ``.onnx`` file (loaded with
                ``onnx.load``). device: ``"CPU"`` (the simulated NPU runs on the host).
            kwargs: ``calibration`` (as for :func:`tcc_compiler.compile`), ``method``,
                ``target``; other keys (e.g. the test runner's rtol/atol) are ignored.

        Raises:
            InputError: unsupported device, a missing or unreadable model file, or a model
                without inputs.
            TypeError: ``model`` is neither a ModelProto nor a path.
        """
        if not cls.supports_device(device):
            raise InputError(f"device {device!r}: tccc runs on 'CPU' (the simulated NPU)")
        if isinstance(model, (str, os.PathLike)):
            path = os.fspath(model)
            if not os.path.isfile(path):
                raise InputError(f"{path}: no such model file")
            try:
                model = onnx.load(path)
            except Exception as exc:  # noqa: BLE001 - protobuf/onnx raise assorted types
                raise InputError(f"{path}: not a readable ONNX model ({exc})") from None
        elif not isinstance(model, onnx.ModelProto):
            raise TypeError(f"prepare: model must be an onnx.ModelProto or a path to an .onnx "
                            f"file, got {type(model).__name__}")
        super().prepare(model, device, **kwargs)
        return TcccRep(model, kwargs.get("calibration"), kwargs.get("method", DEFAULTS.method),
                       kwargs.get("target"))

    @classmethod
    def run_model(cls, model: onnx.ModelProto, inputs: Any, device: str = "CPU",
                  **kwargs: Any) -> tuple[np.ndarray, ...]:
        """``prepare(model, device, **kwargs).run(inputs)``."""
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(cls, node: onnx.NodeProto, inputs: Any, device: str = "CPU",
                 outputs_info: Any = None, **kwargs: Any) -> tuple[np.ndarray, ...]:
        """Run a single node: wrapped in a one-node model (opset of this onnx release)."""
        arrs = [np.asarray(a) for a in inputs]
        ins = [onnx.helper.make_tensor_value_info(
            n, onnx.helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
            for n, a in zip(node.input, arrs)]
        outs = [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.UNDEFINED, None)
                for n in node.output]
        graph = onnx.helper.make_graph([node], "run_node", ins, outs)
        model = onnx.helper.make_model(graph)
        return cls.run_model(model, arrs, device, **kwargs)

    @classmethod
    def supports_device(cls, device: str) -> bool:
        """Only ``"CPU"``: the NPU program runs on the host's reference executor."""
        try:
            return Device(device).type == DeviceType.CPU
        except Exception:  # onnx raises on unknown device strings
            return False


prepare = TcccBackend.prepare
run_model = TcccBackend.run_model
run_node = TcccBackend.run_node
supports_device = TcccBackend.supports_device
