"""A model with a fixed batch dimension above 1 imports with batch 1 and a warning.
"""

from __future__ import annotations

from conftest import conv_gap_fc_net_impl


def test_fixed_batch_warns(tmp_path, caplog):
    import logging

    from tcc_compiler.frontend import import_onnx

    m = conv_gap_fc_net_impl(3, 16, seed=3, name="ux3")
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 4
    m.graph.output[0].type.tensor_type.shape.dim[0].dim_value = 4
    with caplog.at_level(logging.WARNING):
        g = import_onnx(m)
    assert g.inputs[0].shape[0] == 1
    assert any("fixed batch of 4" in r.getMessage() for r in caplog.records)

