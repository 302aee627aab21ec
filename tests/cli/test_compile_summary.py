"""The compile summary's latency: milliseconds, or microseconds below 0.1 ms.
"""

from __future__ import annotations


def test_small_latency_in_microseconds():
    from tcc_compiler.emit.report import format_latency

    assert format_latency(0.0042) == "4.2 µs"
    assert format_latency(12.345) == "12.35 ms"



def test_a_saving_prints_one_sign(capsys):
    """int16 can make a layer faster (a fused table, fewer stores): the summary printed
    ``cost +-0.4 µs latency`` and ``-2000.0 µs`` for -2 ms (a new-user attack)."""
    from tcc_compiler.cli.commands.compile import _print_precision
    from tcc_compiler.emit.report import format_latency

    assert format_latency(-2.5) == "-2.50 ms"
    p = {"mode": "file", "int16_layers": ["c"], "kept_int8": [],
         "cost": {"estimated_latency_ms": {"added": -0.0004},
                  "dram_bytes_per_image": {"added": 917}}}
    _print_precision(p)
    out = capsys.readouterr().out
    assert "cost -0.4 µs latency, +917 B DRAM" in out, out
