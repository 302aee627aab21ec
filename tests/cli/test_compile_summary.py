"""The compile summary's latency: milliseconds, or microseconds below 0.1 ms.
"""

from __future__ import annotations


def test_small_latency_in_microseconds():
    from tcc_compiler.emit.report import format_latency

    assert format_latency(0.0042) == "4.2 µs"
    assert format_latency(12.345) == "12.35 ms"

