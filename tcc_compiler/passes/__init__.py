"""Graph passes and the default float pipeline.

Order (see :func:`default_pipeline`): canonicalize -> x * sigmoid(x) to silu -> fold affines (BatchNorm) into producers,
merge affines, fold into consumers where exact -> fuse residual adds -> fold affines into
residual convs (positive scales) -> fuse activations -> legalize.
"""

from __future__ import annotations

from tcc_compiler.passes.canonicalize import Canonicalize
from tcc_compiler.passes.fold_affine import (FoldAffineIntoConsumers, FoldAffineIntoProducer,
                                             FoldAffineIntoResidual, MergeAffines)
from tcc_compiler.passes.fuse import FuseActivation, FuseResidualAdd
from tcc_compiler.passes.fuse_silu import FuseSilu
from tcc_compiler.passes.legalize import Legalize
from tcc_compiler.passes.manager import Pass, PassManager, PassStats  # noqa: F401


def default_pipeline() -> list:
    """The float pass pipeline, in order."""
    return [Canonicalize(), FuseSilu(), FoldAffineIntoProducer(), MergeAffines(),
            FoldAffineIntoConsumers(), FuseResidualAdd(), FoldAffineIntoResidual(),
            FuseActivation(), Legalize()]


PASS_NAMES = [p.name for p in default_pipeline()]
