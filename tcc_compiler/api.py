"""Python API: compile a model, save it, load it back, run it.

    >>> import tcc_compiler as tc
    >>> m = tc.compile("resnet50.onnx", "224x224x3")
    >>> m.save("out/")
    >>> top1 = int(m.run(x).argmax())

The CLI (:mod:`tcc_compiler.cli`) is a thin layer over these functions.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx

from tcc_compiler.driver import (CMD_FILE, IR_FILE, MANIFEST_FILE, REPORT_FILE, WEIGHT_FILE,
                                 CompiledArtifacts, compile_model)
from tcc_compiler.fsutil import atomic_dir
from tcc_compiler.runtime import LoadedProgram, load_program


class CompiledModel:
    """A compiled network: binaries, manifest, report, quantized IR.

    Attributes:
        artifacts: the raw :class:`CompiledArtifacts`.
        report: the report dict (sizes, MACs, cycles, per-layer table).
        manifest: the manifest dict.
    """

    def __init__(self, artifacts: CompiledArtifacts):
        self.artifacts = artifacts
        self.report = artifacts.report
        self.manifest = artifacts.manifest
        self._loaded: LoadedProgram | None = None

    def save(self, folder: str | os.PathLike) -> Path:
        """Write npu_cmd.bin, quantized_network.bin, manifest.json, report.json and the
        quantized IR (quantized.tir + .npz) into ``folder`` atomically.

        Returns:
            The folder path.

        Raises:
            InputError: the folder cannot be written.
        """
        from tcc_compiler.ir.text import save_ir

        with atomic_dir(folder) as tmp:
            (tmp / CMD_FILE).write_bytes(self.artifacts.cmd_bin)
            (tmp / WEIGHT_FILE).write_bytes(self.artifacts.weight_bin)
            (tmp / MANIFEST_FILE).write_text(json.dumps(self.manifest, indent=2,
                                                        sort_keys=True) + "\n")
            (tmp / REPORT_FILE).write_text(json.dumps(self.report, indent=2,
                                                      sort_keys=True) + "\n")
            save_ir(self.artifacts.graph, tmp / IR_FILE)
        self._folder = Path(folder)
        return Path(folder)

    def run(self, x: np.ndarray) -> np.ndarray:
        """Run one preprocessed float input (shape of the ONNX input) on the reference
        executor; returns the first graph output (float32: logits or probabilities)."""
        if self._loaded is None:
            import tempfile

            tmp = Path(tempfile.mkdtemp(prefix="tccc-"))
            self.save(tmp / "model")
            self._loaded = load_program(tmp / "model")
        res = self._loaded.run(x)
        return self._loaded.final_output(res)


def compile(model: str | os.PathLike | onnx.ModelProto,  # noqa: A001 - public API name
            input_shape: str | tuple[int, int, int] | None = None,
            calibration: Sequence[str | os.PathLike | np.ndarray] | None = None,
            method: str = "mse", target: str | None = None,
            verify: bool = False) -> CompiledModel:
    """Compile an ONNX model for the TCC750x NPU.

    Args:
        model: .onnx path or onnx.ModelProto.
        input_shape: "WxHxC" or (W, H, C) (width, height, channels); None = model's dims.
        calibration: image paths, folders, .npy paths or float32 NCHW arrays; None = the
            photos bundled with tccc.
        method: calibration method: "mse" (default: the clipping range minimising
            quantization MSE), "minmax", "percentile".
        target: target name or .toml path (default tcc750x).
        verify: run the IR verifier after every pass.

    Returns:
        :class:`CompiledModel`.

    Raises:
        TccError subclasses with a one-line message (see tcc_compiler.errors).
    """
    art = compile_model(model, input_shape, calibration=calibration, method=method,
                        target=target, verify_ir=verify)
    return CompiledModel(art)


def load(folder: str | os.PathLike) -> LoadedProgram:
    """Load a compiled output folder for running (see :class:`LoadedProgram`)."""
    return load_program(folder)
