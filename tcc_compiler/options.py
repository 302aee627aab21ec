"""The compile options: one frozen record from the CLI through the API to the driver.

Every compile setting and its default is written here once; ``tccc compile``'s argparse
defaults and help texts, :func:`tcc_compiler.api.compile`, the ONNX backend and
:func:`tcc_compiler.driver.compile_model` read them from :class:`CompileOptions`. The two
calibration defaults are named by the calibration module that defines the methods
(:data:`tcc_compiler.quant.calibrate.DEFAULT_METHOD`, ``DEFAULT_PERCENTILE``), the default
target by the target module (:data:`tcc_compiler.target.target.DEFAULT_TARGET`), because those
lower layers use them and cannot import this layer-9 module; this record takes them from there
instead of writing them again.

    >>> from tcc_compiler.options import CompileOptions
    >>> opts = CompileOptions(input_whc="640x320x3", method="percentile", percentile=99.9)
    >>> opts.with_(compress_weights=False).compress_weights
    False
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from typing import Any, Sequence

from tcc_compiler.datasets.raw import RawSpec
from tcc_compiler.errors import InputError
from tcc_compiler.quant.auto_precision import DEFAULT_GOAL_DB, DEFAULT_TARGET_DB
from tcc_compiler.quant.bias_correction import DEFAULT_BIAS_CORRECTION, bias_correction_mode
from tcc_compiler.quant.calibrate import DEFAULT_METHOD, DEFAULT_PERCENTILE
from tcc_compiler.quant.weight_rounding import DEFAULT_WEIGHT_ROUNDING
from tcc_compiler.target.target import DEFAULT_TARGET

__all__ = ["CompileOptions", "DEFAULTS", "DEFAULT_TARGET", "check_option_names",
           "make_options"]


@dataclass(frozen=True)
class CompileOptions:
    """Every setting of one compilation (frozen: derive variants with :meth:`with_`).

    Attributes:
        input_whc: the input size as ``"WxHxC"`` or ``(W, H, C)`` (width, height, channels;
            ``"640x320x3"`` is 640 wide and 320 high; the CLI's ``--input``); None = the
            model's fixed input dims. Batch is 1.
        target: target name, ``.toml`` path or :class:`tcc_compiler.target.Target`; None =
            :data:`DEFAULT_TARGET`.
        calibration: image paths, folders, ``.npy`` paths, raw uint8 files (with
            ``raw_size``) or float32 NCHW arrays shaped like the ONNX input (preprocessed);
            None = the photos bundled with the package.
        raw_size: ``"WxHxC"`` or ``(W, H, C)`` of raw uint8 calibration files (``.bin``,
            ``.raw``, ``.rgb``: :mod:`tcc_compiler.datasets.raw`, as ``tccc eval
            --raw-size`` reads them; the input size, never resized); None = such files are
            refused. Given without ``calibration`` inputs: InputError (it would read
            nothing).
        raw_layout: their byte order, "HWC" (pixel-interleaved, default) or "CHW" (planar).
        method: calibration method, one of :data:`tcc_compiler.quant.METHODS` ("mse": the
            clipping range minimising quantization MSE; "minmax"; "percentile"; "entropy": KL
            divergence, TensorRT style).
        percentile: p of the "percentile" method, in percent, in (50, 100].
        calib_table: a ``calib_table.json`` (of an earlier compile, maybe edited) whose ranges
            replace calibration.
        bias_correction: fold each conv/fc's mean per-channel INT8 error on the calibration
            inputs into its bias (:mod:`tcc_compiler.quant.bias_correction`): "auto"
            (default: only when the corrections from one half of the calibration inputs
            raise the network output SQNR on the other half, both ways; off without
            calibration inputs), "on" (needs calibration inputs: with only a
            ``calib_table`` the record refuses it, InputError) or "off"; True and False
            are "on" and "off".
        weight_rounding: how conv/fc weights are rounded to int8: "gptq" (default: levels
            chosen to minimise each layer's output error on the calibration inputs, GPTQ, on
            the layers whose cost is bounded, the others nearest:
            :mod:`tcc_compiler.quant.weight_rounding`), "gptq-all" (every conv/fc) or
            "nearest" (each weight to its nearest level). Same scales, only weight bytes
            change; without calibration inputs (a ``calib_table``) the default falls back to
            nearest with a warning.
        compress_weights: store weights and parameters DEFLATE-compressed per channel block
            (lossless, expanded by DMA_LOAD_Z, specs/weights.md); False stores them raw.
        preprocess: :class:`tcc_compiler.datasets.images.Preprocess` recorded in the manifest,
            or :class:`tcc_compiler.datasets.presets.PreprocessSettings` (preset and
            overrides, resolved at the model's input size); None = ImageNet mean/std at the
            input size, squashed (greyscale for 1 channel).
        verify_ir: run the IR verifier after every pass and after quantization.
        dump_ir: folder to write the IR after every stage to (``NN-<stage>.tir`` + ``.npz``).
        print_ir_before, print_ir_after: stage names (or ``"all"``) whose IR is printed to
            stderr before / after the stage.
        strict: refuse a model the NPU cannot run whole (exit 2, every refused node named)
            instead of running those nodes on the host between NPU segments
            (:mod:`tcc_compiler.segmenting`); False = fall back to host segments.
        precision: which layers get int16 activations (mixed precision,
            :mod:`tcc_compiler.quant.auto_precision`): "int8" (none), "auto" (the fewest,
            largest isolated-error gain first, that reach ``precision_target_db``, else
            ``precision_goal_db``, the costliest left out again where not needed; needs
            calibration inputs),
            "budget" (a few cheap ones from auto's ranking; needs calibration inputs), a
            JSON file ``{"int16": [layer names]}`` or a list of layer names (as
            ``tccc analyze`` lists them).
        precision_goal_db: ``auto``'s fallback goal (dB, >= 0): when ``precision_target_db``
            is out of int16's reach, the output SQNR vs float on the worst calibration input
            at most this far below all-int16's.
        precision_target_db: ``auto``'s target (dB): it promotes until the output SQNR vs
            float on the worst calibration input reaches this (``inf``: always as close to
            all-int16's as the goal allows).
        cores: NPU cores the program uses, 1 or 2 (at most the target's ``compute.cores``):
            with 2, each conv is split between the cores by rows or output channels as the
            cost model prices lowest (schedule/cores.py); 1 keeps the single-core program.
    """

    input_whc: str | tuple[int, int, int] | None = None
    target: Any = None
    calibration: Sequence[Any] | None = None
    raw_size: str | tuple[int, int, int] | None = None
    raw_layout: str = "HWC"
    method: str = DEFAULT_METHOD
    percentile: float = DEFAULT_PERCENTILE
    calib_table: str | os.PathLike | None = None
    bias_correction: str = DEFAULT_BIAS_CORRECTION
    weight_rounding: str = DEFAULT_WEIGHT_ROUNDING
    compress_weights: bool = True
    preprocess: Any = None
    verify_ir: bool = False
    dump_ir: str | os.PathLike | None = None
    print_ir_before: tuple[str, ...] | None = None
    print_ir_after: tuple[str, ...] | None = None
    strict: bool = False
    precision: Any = "int8"
    precision_goal_db: float = DEFAULT_GOAL_DB
    precision_target_db: float = DEFAULT_TARGET_DB
    cores: int = 1

    def __post_init__(self) -> None:
        # sequences are stored as tuples so that a frozen record cannot change under a caller
        for name in ("calibration", "print_ir_before", "print_ir_after", "precision"):
            v = getattr(self, name)
            if isinstance(v, list):
                object.__setattr__(self, name, tuple(v))
        # the old boolean spelling (True / False) is "on" / "off"
        object.__setattr__(self, "bias_correction", bias_correction_mode(self.bias_correction))
        self.raw_spec()   # a bad raw size or layout is refused before any work
        if self.raw_size is not None and not self.calibration:   # it would read nothing
            raise InputError("raw_size/--raw-size applies to --calib raw files only (without "
                             "calibration inputs the bundled photos calibrate); add --calib "
                             "DIR (calibration=[...])")
        if self.bias_correction == "on" and self.calib_table is not None \
                and self.calibration is None:   # refused before any work, not after quantizing
            raise InputError(f"{self.calib_table}: bias_correction/--bias-correction on needs "
                             "calibration inputs (calibration/--calib) to correct with, and "
                             "calib_table/--calib-table gives none; use --bias-correction auto "
                             "or off with a table")

    def raw_spec(self) -> RawSpec | None:
        """``raw_size`` and ``raw_layout`` as a :class:`~tcc_compiler.datasets.raw.RawSpec`;
        None without ``raw_size``.

        Raises:
            InputError: ``raw_size`` not ``WxHxC``, a layout other than HWC / CHW, or CHW
                without ``raw_size`` (it would read nothing).
        """
        return RawSpec.parse(self.raw_size, self.raw_layout, flag="raw_size/--raw-size",
                             layout_flag="raw_layout/--raw-layout")

    def with_(self, **changes: Any) -> CompileOptions:
        """A copy with ``changes`` applied (field names of this record).

        Raises:
            InputError: a name that is not a compile option.
        """
        check_option_names(changes)
        return replace(self, **changes)


#: The defaults, for help texts (``CompileOptions()`` with nothing set).
DEFAULTS = CompileOptions()


def check_option_names(settings: dict) -> None:
    """Refuse keyword arguments that are not :class:`CompileOptions` fields.

    Raises:
        InputError: naming the unknown options and listing the valid ones.
    """
    known = [f.name for f in fields(CompileOptions)]
    unknown = [k for k in settings if k not in known]
    if unknown:
        raise InputError(f"unknown compile option(s) {', '.join(unknown)} (options: "
                         f"{', '.join(known)})")


def make_options(options: CompileOptions | None = None, **settings: Any) -> CompileOptions:
    """``options`` (default: :data:`DEFAULTS`) with the keyword ``settings`` applied.

    Raises:
        InputError: a setting that is not a compile option.
    """
    return (options or DEFAULTS).with_(**settings)
