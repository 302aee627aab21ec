"""Compile a model, save it, load it back, run it: :func:`compile`, :func:`load` and
:class:`CompiledModel` (re-exported by :mod:`tcc_compiler.api` and :mod:`tcc_compiler`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import onnx

import onnx_graphsurgeon as gs

from tcc_compiler.driver import CompiledArtifacts, compile_model
from tcc_compiler.emit.files import IR_FILE
from tcc_compiler.emit.package import copy_package, write_package
from tcc_compiler.errors import InputError, TccError
from tcc_compiler.ir.graph import Graph
from tcc_compiler.options import CompileOptions, make_options
from tcc_compiler.runtime import LoadedProgram, load_program


class _IrRecorder:
    """Pass-manager instrument keeping a structural copy of the graph after every stage.

    The copies share constant arrays with the pipeline (passes replace constants, they never
    mutate them), so recording costs nodes and values only; text is printed on demand.
    """

    def __init__(self) -> None:
        self.graphs: dict[str, Graph] = {}

    def __call__(self, name: str, when: str, index: int, graph: Graph) -> None:
        if when == "after":
            self.graphs[name] = graph.clone()


class IrStages(dict):
    """``CompiledModel.ir``: stage name -> IR text, a dict whose missing-key error lists the
    stages it holds (and says why a loaded folder holds only ``"quantize"``)."""

    def __init__(self, stages: dict[str, str], loaded: bool = False):
        super().__init__(stages)
        self.loaded = loaded

    def __missing__(self, key: str) -> str:
        why = (" (a folder loaded with tc.load() stores only the quantized IR; compile again "
               "for the earlier stages)" if self.loaded else "")
        raise KeyError(f"no IR stage {key!r}; available: {', '.join(self)}{why}")


class CompiledModel:
    """A compiled network: binaries, manifest, report, textual IR; runnable on the reference
    executor.

    Obtained from :func:`compile` (in memory) or :func:`load` (from an output folder).

    Attributes:
        report: the report dict (sizes in bytes, MACs, estimated cycles and latency in ms,
            per-layer table ``layers``; see ``report.json``).
        manifest: the manifest dict (input/output quantization, layouts, host ops).
        artifacts: the raw :class:`CompiledArtifacts`; None when loaded from a folder.
        folder: the output folder once saved or loaded, else None.
    """

    def __init__(self, artifacts: CompiledArtifacts | None = None, *,
                 folder: str | os.PathLike | None = None,
                 stages: dict[str, Graph] | None = None):
        if artifacts is None and folder is None:
            raise InputError("CompiledModel needs compiled artifacts or an output folder")
        self.artifacts = artifacts
        self.folder: Path | None = Path(folder) if folder is not None else None
        self._stages = dict(stages or {})
        self._ir_text: dict[str, str] | None = None
        self._loaded: LoadedProgram | None = None
        self._tmp = None
        if artifacts is not None:
            self.report = artifacts.report
            self.manifest = artifacts.manifest
        else:
            self._loaded = load_program(self.folder)
            self.manifest = self._loaded.manifest
            from tcc_compiler.runtime.loaded import read_report

            self.report = read_report(self.folder) or {}

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The float input shape the ONNX model takes, e.g. NCHW ``(1, 3, H, W)``."""
        return tuple(self.manifest["input"]["shape"])

    @property
    def quantized_graph(self) -> Graph:
        """The quantized graph IR (from memory, or ``quantized.tir`` + ``.npz`` of a folder).

        Raises:
            InputError, FormatError: a loaded folder without a readable quantized.tir.
        """
        if self.segmented:
            raise InputError("a segmented model has one quantized graph per NPU segment: "
                             "read .ir['npu_<k>:quantize'] or the npu_<k>/quantized.tir files")
        if self.artifacts is not None:
            return self.artifacts.graph
        from tcc_compiler.ir.text import load_ir

        return load_ir(self.folder / IR_FILE)

    @property
    def segmented(self) -> bool:
        """True when the model runs as several segments (NPU programs and host ONNX graphs,
        manifest ``layout: "segmented"``; specs/manifest.md)."""
        return self.manifest.get("layout") == "segmented"

    @property
    def ir(self) -> dict[str, str]:
        """Textual IR (the ``specs/ir.lark`` grammar) after each stage, in pipeline order:
        ``"import"``, then one entry per pass (``"canonicalize"``, ..., ``"legalize"``), then
        ``"quantize"``. Constants larger than 16 elements are shown as ``@key`` references.
        A model loaded from a folder has only ``"quantize"`` (read from quantized.tir; the
        earlier stages are not stored: recompile, or ``tccc compile --dump-ir DIR``, for them).

        Raises:
            KeyError: (on lookup) a stage this model does not hold; the message lists those
                it does.
        """
        if self._ir_text is None:
            from tcc_compiler.ir.printer import print_graph

            if self.segmented:
                self._ir_text = IrStages(self._segment_ir(), loaded=self.artifacts is None)
            elif self.artifacts is not None:
                stages = dict(self._stages)
                stages.setdefault("quantize", self.artifacts.graph)
                self._ir_text = IrStages({k: print_graph(g) for k, g in stages.items()})
            else:
                self._ir_text = IrStages({"quantize": (self.folder / IR_FILE).read_text()},
                                         loaded=True)
        return self._ir_text

    def _segment_ir(self) -> dict[str, str]:
        """{"npu_<k>:quantize": quantized IR text} of every NPU segment."""
        from tcc_compiler.ir.printer import print_graph

        out = {}
        for k, seg in enumerate(self.manifest["segments"]):
            if seg["device"] != "npu":
                continue
            key = f"{seg['folder']}:quantize"
            if self.artifacts is not None:
                out[key] = print_graph(self.artifacts.parts[k].graph)
            else:
                out[key] = (self.folder / seg["folder"] / IR_FILE).read_text()
        return out

    def save(self, folder: str | os.PathLike) -> Path:
        """Write npu_cmd.bin, quantized_network.bin, manifest.json, report.json, report.csv
        (the per-layer table) and the quantized IR (quantized.tir + .npz) into ``folder``
        atomically; a segmented model writes one ``npu_<k>/`` folder of those per NPU
        segment and one ``host_<k>.onnx`` per host segment (specs/manifest.md).

        Returns:
            The folder path.

        Raises:
            InputError: the folder cannot be written.
        """
        if self.artifacts is None:
            return copy_package(self.folder, folder)
        art = self.artifacts
        if self.segmented:
            from tcc_compiler.emit.segments import write_segmented_package

            write_segmented_package(folder, art.manifest, art.report, art.parts,
                                    art.calib_table)
            self.folder = Path(folder)
            return Path(folder)
        write_package(folder, art.cmd_bin, art.weight_bin, self.manifest, self.report, art.graph,
                      art.calib_table, art.trace, art.extra_files)
        self.folder = Path(folder)
        return Path(folder)

    @property
    def program(self) -> LoadedProgram:
        """The host-runtime view (:class:`LoadedProgram`): the binaries decoded by the
        reference executor. An unsaved model is saved to a private temporary folder first."""
        if self._loaded is None:
            import tempfile

            if self.folder is None:
                self._tmp = tempfile.TemporaryDirectory(prefix="tccc-")
                self.save(Path(self._tmp.name) / "model")
            self._loaded = load_program(self.folder)
        return self._loaded

    def run_all(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Run one input and return every graph output by its ONNX name, in graph order.

        Args:
            x: float32 array shaped like the ONNX input (``input_shape``, NCHW for image
                models), already preprocessed; or an image or ``.npy`` path.

        Returns:
            {output name: array}: float32 dequantized NPU outputs (NCHW), host ops applied
            (softmax float32, argmax int64).

        Raises:
            InputError: wrong shape or non-finite values. ExecutionError: executor fault.
        """
        res = self.program.run(x)
        return {name: res[name] for name in self.manifest["graph_outputs"]}

    def run(self, x: np.ndarray) -> np.ndarray:
        """Run one preprocessed float input (float32, shape ``input_shape``) through the NPU
        program on the reference executor (INT8 inside) and return the first graph output
        (float32 logits or probabilities, dequantized; int64 for an argmax output). ``x`` may
        also be an image or ``.npy`` path, loaded with the compiled preprocessing.

        Raises:
            InputError: wrong shape or non-finite values, or ``x`` neither an array nor a
            path. ExecutionError: executor fault.
        """
        prog = self.program
        return prog.final_output(prog.run(x))


def as_model(model: str | os.PathLike | onnx.ModelProto | gs.Graph
             ) -> str | os.PathLike | onnx.ModelProto:
    """A model the driver takes: a path or ModelProto as given, an onnx-graphsurgeon Graph
    exported to a ModelProto.

    Raises:
        InputError: the graph cannot be exported, or ``model`` is none of these types.
    """
    if isinstance(model, gs.Graph):
        try:
            return gs.export_onnx(model)
        except Exception as exc:  # onnx-graphsurgeon raises assorted errors
            raise InputError(f"graph '{model.name}': onnx-graphsurgeon cannot export it "
                             f"({type(exc).__name__}: {exc})") from None
    if isinstance(model, (str, os.PathLike, onnx.ModelProto)):
        return model
    raise InputError(f"model: expected a path, onnx.ModelProto or onnx_graphsurgeon.Graph, "
                     f"got {type(model).__name__}")


def compile(model: str | os.PathLike | onnx.ModelProto | gs.Graph,  # noqa: A001 - public API
            input_whc: str | tuple[int, int, int] | None = None,
            calibration: Sequence[str | os.PathLike | np.ndarray] | None = None, *,
            options: CompileOptions | None = None, progress: Callable | None = None,
            instruments: Sequence[Callable] | None = None, **settings: Any) -> CompiledModel:
    """Compile an ONNX model for the TCC750x NPU.

    Args:
        model: .onnx path, ``onnx.ModelProto`` or ``onnx_graphsurgeon.Graph`` (exported with
            ``gs.export_onnx``; give it an opset); a ``.tir`` dump resumes after its stage.
        input_whc: ``"WxHxC"`` or ``(W, H, C)`` (width, height, channels, as on the command
            line: ``"640x320x3"`` is 640 wide); None = the model's fixed dims. Batch is 1.
        calibration: image paths, folders, ``.npy`` paths or float32 arrays shaped like the
            ONNX input (NCHW ``[1, C, H, W]``, preprocessed), or one such path or array; None =
            the photos bundled with tccc (models taking 1 or 3 channels: greyscale or RGB).
        options: a :class:`~tcc_compiler.options.CompileOptions` holding every setting (None =
            the defaults); ``input_whc``, ``calibration`` and ``settings`` override it.
        progress: optional iterable wrapper shown during calibration (e.g. ``tqdm``).
        instruments: extra pass-manager instruments (IR printing/dumps, see
            :mod:`tcc_compiler.passes.instruments`).
        settings: any other :class:`~tcc_compiler.options.CompileOptions` field by name:
            ``method`` ("mse", "minmax", "percentile", "entropy"), ``percentile``,
            ``target``, ``calib_table``, ``bias_correction``, ``compress_weights`` (the ratio
            is in ``report["weight_compression"]``), ``verify_ir``, ``dump_ir``, ...

    Returns:
        :class:`CompiledModel` (``.ir`` holds the IR text after every stage).

    Raises:
        TccError subclasses with a one-line message (see tcc_compiler.errors): InputError for
        bad arguments (an unknown setting included), ModelError for a malformed model,
        UnsupportedError listing every unsupported node at once, ScheduleError when an op
        cannot be tiled.
    """
    if input_whc is not None:
        settings["input_whc"] = input_whc
    if calibration is not None:
        settings["calibration"] = calibration
    opts = make_options(options, **settings)
    rec = _IrRecorder()
    try:
        art = compile_model(as_model(model), opts, instruments=[rec] + list(instruments or []),
                            progress=progress)
    except TccError as exc:
        _name_model(exc, model)
        raise
    return CompiledModel(art, stages=rec.graphs)


def _name_model(exc: TccError, model) -> None:
    """Prefix ``exc``'s message with the model file when it does not name it yet (the later
    stages' errors name the node only: "node 'conv' (conv, clip): requantization scale ...")."""
    if not isinstance(model, (str, os.PathLike)) or not exc.args:
        return
    where = str(model)
    if where not in str(exc.args[0]):
        exc.args = (f"{where}: {exc.args[0]}",) + tuple(exc.args[1:])


def load(folder: str | os.PathLike) -> CompiledModel:
    """Load a compiled output folder (written by :meth:`CompiledModel.save` or
    ``tccc compile``) as a :class:`CompiledModel` (``.run``, ``.report``, ``.ir``;
    ``.program`` is the host-runtime :class:`LoadedProgram`).

    Raises:
        InputError: missing folder/files. FormatError: manifest, report or binaries fail
        validation.
    """
    return CompiledModel(folder=folder)
