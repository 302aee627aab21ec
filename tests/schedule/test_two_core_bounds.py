"""The two-core bounds (schedule/coretime.two_core_bounds) and how tools/bench.py sets issue
17's targets beside them."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tcc_compiler.schedule.coretime import two_core_bounds
from tcc_compiler.target import load_target

T = load_target()
BW = T.dram_bytes_per_cycle


def test_compute_bound_halves_the_roofline_compute():
    b = two_core_bounds(1_000_000, 1280, 1280, T, 0)
    assert b["latency_cycles"] == 500_000 and b["bound_by"] == "compute"


def test_loads_and_stores_overlap_so_they_are_not_summed():
    """Loads (weights + input) and stores (outputs) run on different queues at the full rate
    each: the DRAM term is the larger of the two, not their sum (that would not be a bound)."""
    b = two_core_bounds(0, 12_800_000, 6_400_000, T, 12_000_000)
    assert b["latency_cycles"] == 1_000_000 and b["bound_by"] == "DRAM loads"
    assert b["stream_cycles_per_image"] == b["latency_cycles"]


def test_batched_stream_shares_the_weight_reads():
    w, inp = 12_000_000, 800_000
    b = two_core_bounds(200_000, w + inp, 1000, T, w, batch=3)
    assert b["batched_stream_cycles_per_image"] == pytest.approx((w / 3 + inp) / BW, abs=1)
    assert b["batched_stream_cycles_per_image"] < b["latency_cycles"]


def _bench():
    path = Path(__file__).resolve().parents[2] / "tools" / "bench.py"
    spec = importlib.util.spec_from_file_location("tccc_bench", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bench_says_when_a_target_is_above_the_bound():
    bench = _bench()
    cores = {"one_core_ms": 2.85, "latency_speedup": 1.0, "stream_speedup": 1.55,
             "bound_speedup": 1.55, "two_core_bound_ms": 1.83, "bound_by": ["DRAM loads"],
             "stream_bound_speedup": 2.85, "stream_bound_ms": 1.0, "bound_batch": 3}
    lines = bench.target_lines({"model": "resnet50", "input": "224x224x3", "cores": cores})
    lat, stream = lines
    assert "latency x1.6" in lat and "ABOVE the model's bound x1.55" in lat
    assert "1.83 ms vs 1.78 ms needed" in lat
    assert "stream x1.8" in stream and "not met" in stream and "ABOVE" not in stream
