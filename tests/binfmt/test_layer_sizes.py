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



def test_layer_record_fields_have_one_definition():
    """``LayerEntry`` listed the same kind/channel/offset/size fields as ``LayerWeights`` a
    second time: both now are ``wlayout.LayerRecord``, every record field is a layer table
    field by its name (the three flag booleans packed in ``flags``), and an entry written
    from a layout's record reads back as that record."""
    from dataclasses import fields

    from tcc_compiler.binfmt.weight_table import (LAYER_ENTRY_FIELDS, decode_entry,
                                                  encode_entry)
    from tcc_compiler.isa.wcodec import LayerKind

    assert issubclass(LayerEntry, wlayout.LayerRecord)
    assert issubclass(wlayout.LayerWeights, wlayout.LayerRecord)
    own = {f.name for f in fields(wlayout.LayerRecord)}
    assert {f.name for f in fields(LayerEntry)} - own == {"layer_index", "name_hash"}
    assert {f.name for f in fields(wlayout.LayerWeights)} - own == {"name"}
    table = {name for name, _, _ in LAYER_ENTRY_FIELDS}
    assert own - table == {"weights_compressed", "params_compressed", "merged"}
    b = wlayout.WeightLayoutBuilder()
    b.add_layer("a", LayerKind.CONV, bytes(range(32)), bytes(64), block_channels=2)
    b.add_layer("b", LayerKind.CONV, bytes(32), bytes(64), merged=True)
    layout = b.build()
    for i, rec in enumerate(layout.layers):
        entry = decode_entry(encode_entry(i, rec, 77), 0, i, layout.data, "t.bin")
        assert (entry.layer_index, entry.name_hash) == (i, 77)
        assert all(getattr(entry, n) == getattr(rec, n) for n in own), (entry, rec)
    assert layout.layers[1].merged and not layout.layers[0].merged
