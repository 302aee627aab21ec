"""Graph passes and the default float pipeline.

Order (see :func:`default_pipeline`): erf- and tanh-form GELU to one table -> canonicalize ->
fold affines (BatchNorm) into producers, merge affines, fold into consumers where exact -> fuse
residual adds -> fold affines into residual convs (positive scales) -> fuse activations ->
LeakyRelu into its conv (a two-slope epilogue) -> fold affines after a conv's relu/clip into it
(a per-channel clamp) -> x * sigmoid(x) to silu -> legalize.
"""

from __future__ import annotations

from tcc_compiler.passes.canonicalize import Canonicalize
from tcc_compiler.passes.fold_affine import (FoldAffineIntoConsumers, FoldAffineIntoProducer,
                                             FoldAffineIntoResidual, MergeAffines)
from tcc_compiler.passes.fold_after_act import FoldAffineAfterActivation
from tcc_compiler.passes.fuse import FuseActivation, FuseResidualAdd, FuseTwoSlope
from tcc_compiler.passes.fuse_gelu import FuseGelu
from tcc_compiler.passes.fuse_silu import FuseSilu
from tcc_compiler.passes.legalize import Legalize
from tcc_compiler.passes.manager import Pass, PassManager, PassStats  # noqa: F401


def default_pipeline() -> list:
    """The float pass pipeline, in order."""
    return [FuseGelu(), Canonicalize(), FoldAffineIntoProducer(), MergeAffines(),
            FoldAffineIntoConsumers(), FuseResidualAdd(), FoldAffineIntoResidual(),
            FuseActivation(), FuseTwoSlope(), FoldAffineAfterActivation(), FuseSilu(), Legalize()]


PASS_NAMES = [p.name for p in default_pipeline()]
