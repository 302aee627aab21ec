"""A weighted layer's raw / stored byte counts are defined once (``isa/wlayout.LayerSizes``,
``LayersSizes``): the layout's ``LayerWeights`` and the weight file's ``LayerEntry`` (and their
totals, ``WeightLayout`` and ``WeightFile``) used to repeat the same sums."""

from __future__ import annotations

from tcc_compiler.binfmt.weight_table import LayerEntry
from tcc_compiler.binfmt.weightfile import WeightFile
from tcc_compiler.isa import wlayout


def test_layer_sizes_have_one_definition():
    for name in ("raw_bytes", "stored_bytes"):
        assert getattr(LayerEntry, name) is getattr(wlayout.LayerWeights, name)
        assert getattr(WeightFile, name) is getattr(wlayout.WeightLayout, name)

