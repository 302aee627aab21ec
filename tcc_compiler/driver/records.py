"""The records the driver's stages hand each other, and the instrument hook for the stages
that are not passes.

:class:`FloatGraph` (what :func:`~tcc_compiler.driver.run_float_passes` returns),
:class:`Calibration` (:func:`~tcc_compiler.driver.calibrate`), :class:`Quantized`
(:func:`~tcc_compiler.driver.quantize`) and :class:`CompiledArtifacts`
(:func:`~tcc_compiler.driver.compile_model`); :data:`Instrument` is a pass-manager instrument
and :func:`run_instruments` calls them around the import and quantize stages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from tcc_compiler.ir.graph import Graph
from tcc_compiler.passes import PassManager
from tcc_compiler.quant.auto_precision import PrecisionChoice
from tcc_compiler.quant.bias_correction import BiasCorrection
from tcc_compiler.quant.bias_refs import OutputRefs
from tcc_compiler.quant.weight_rounding import HessianSum
from tcc_compiler.schedule import Program
from tcc_compiler.target import Target

#: A pass-manager instrument: ``(stage, "before"|"after", index, graph) -> None``.
Instrument = Callable[[str, str, int, Graph], None]


@dataclass
class CompiledArtifacts:
    """Everything one compilation produces.

    Attributes:
        cmd_bin, weight_bin: the two NPU binaries (bytes).
        manifest, report: JSON-ready dicts.
        graph: the quantized graph IR. float_graph: the float graph after passes.
        program: the lowered program (commands with comments, layer table).
        target: the target compiled for. extra_files: more binaries by file name (``--cores
            2``: the stream program's, emit/stream.py).
    """

    cmd_bin: bytes
    weight_bin: bytes
    manifest: dict
    report: dict
    graph: Graph
    float_graph: Graph
    program: Program
    target: Target
    ir_dumps: dict = field(default_factory=dict)
    calib_table: dict | None = None     # tensor -> range table (quant/calib_table.py)
    trace: dict | None = None           # timeline.json (emit/trace.py)
    extra_files: dict = field(default_factory=dict)


@dataclass(frozen=True)
class FloatGraph:
    """What :func:`run_float_passes` returns.

    Attributes:
        graph: the float graph after the passes (NCHW input, the ops the NPU runs).
        pass_manager: the manager that ran them (``stats``: seconds and rewrites fired).
        fusion: the fusion summary (compute nodes -> NPU ops, what fused away).
    """

    graph: Graph
    pass_manager: PassManager
    fusion: dict


@dataclass(frozen=True)
class Calibration:
    """What :func:`calibrate` returns.

    Attributes:
        method: the calibration method used (the table's for ``calib_table``).
        inputs: the float32 NCHW calibration arrays, a sequence that may decode each image
            when read ([] with a table or a quantized graph).
        source: where they came from, for the manifest and the ``-v`` log.
        ranges: {value name: (lo, hi)} in real units; None when the graph is already
            quantized (nothing to quantize).
        table: the calibration table written as calib_table.json, or None.
        minmax: {value name: observed (min, max)} (the ranges of int16 tensors), or None
            (from a table).
        hessians: GPTQ's input second moments, gathered in the calibration pass when the
            weight rounding needs them, or None.
        outputs: the float network outputs of each input, kept in the calibration pass for
            bias correction's two-fold check (``auto``), or None.
    """

    method: str
    inputs: list
    source: str
    ranges: dict | None
    table: dict | None
    minmax: dict | None = None
    hessians: HessianSum | None = None
    outputs: OutputRefs | None = None
@dataclass(frozen=True)
class Quantized:
    """What :func:`quantize` returns: ``precision`` (the int16 layers chosen) and
    ``bias_correction`` (:class:`~tcc_compiler.quant.bias_correction.BiasCorrection`: mode,
    whether applied, the two-fold check's SQNRs)."""

    precision: PrecisionChoice
    bias_correction: BiasCorrection


def run_instruments(instruments, stage: str, when: str, index: int, graph: Graph) -> None:
    """Call the pass-manager instruments for a stage that is not a pass (import, quantize)."""
    for inst in instruments or []:
        inst(stage, when, index, graph)


# INFO lines (``tccc -v``) on what each stage did, logged as soon as the stage ends so a long
