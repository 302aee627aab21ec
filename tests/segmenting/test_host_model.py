"""The host CPU's cost model (tcc_compiler/target/host.py): view ops run in place."""

import pytest

from tcc_compiler.target.host import VIEW_OPS, load_host_model


@pytest.mark.parametrize("op", sorted(VIEW_OPS))
def test_view_op_costs_only_dispatch(op):
    host = load_host_model(None)
    moved = 4 * 1_000_000   # a 1 M-element float32 tensor, read + written
    assert host.op_seconds(op, moved) == pytest.approx(host.node_overhead_ns * 1e-9)
    # the same bytes through a copying op stream at the modelled bandwidth
    assert host.op_seconds("Transpose", moved) == pytest.approx(
        host.node_overhead_ns * 1e-9 + moved / host.bandwidth_bytes_per_s)


def test_macs_are_counted_for_compute_ops():
    host = load_host_model(None)
    assert host.op_seconds("Conv", 0, host.macs_per_s) == pytest.approx(
        host.node_overhead_ns * 1e-9 + 1.0)
