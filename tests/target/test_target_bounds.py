"""Odd target files a new user writes are refused by the target loader in one line naming the
file and the key, before any work: an SRAM beyond what tccc supports (a 10**20-byte SRAM
compiled to the end and then failed with exit 1 when an SRAM address did not fit its 32-bit
command field), an alignment larger than the SRAM (it said "no tile fits ... use more SRAM");
and DRAM alignments that push a region past its 2**30 bytes are a clean ScheduleError in the
memory planner (it was an InternalError, exit 1)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tcc_compiler.errors import InputError, ScheduleError
from tcc_compiler.frontend import import_onnx
from tcc_compiler.schedule.memory import plan_memory
from tcc_compiler.target import load_target
from tests.helpers.two_cores import conv_net

DEFAULT = (Path(__file__).parents[2] / "specs" / "targets" / "tcc750x.toml").read_text()


@pytest.mark.parametrize("old, new, message", [
    ("sram_capacity_bytes = 2_097_152", "sram_capacity_bytes = 99999999999999999999",
     r"\[memory\] sram_capacity_bytes: 99,999,999,999,999,999,999 exceeds the 1,073,741,824 "
     r"\(2\*\*30\) tccc supports"),
    ("sram_capacity_bytes = 2_097_152", "sram_capacity_bytes = 1_073_741_825",
     r"\[memory\] sram_capacity_bytes: 1,073,741,825 exceeds the 1,073,741,824 \(2\*\*30\) "
     r"tccc supports"),
    ("sram_align_bytes = 64", "sram_align_bytes = 4_194_304",
     r"\[memory\] sram_align_bytes: 4,194,304 exceeds sram_capacity_bytes \(2,097,152\)"),
])
def test_target_beyond_tccc_limits_refused(tmp_path, old, new, message):
    path = tmp_path / "t.toml"
    assert old in DEFAULT
    path.write_text(DEFAULT.replace(old, new))
    with pytest.raises(InputError, match=rf"^{re.escape(str(path))}: {message}$"):
        load_target(str(path))


def test_largest_sram_accepted(tmp_path):
    path = tmp_path / "t.toml"
    path.write_text(DEFAULT.replace("sram_capacity_bytes = 2_097_152",
                                    "sram_capacity_bytes = 1_073_741_824"))
    assert load_target(str(path)).sram_capacity_bytes == 1 << 30


def test_dram_region_past_2_30_bytes_is_a_schedule_error(run_pipeline):
    import dataclasses

    import numpy as np

    from tcc_compiler.quant import collect_ranges, quantize_graph

    g = run_pipeline(import_onnx(conv_net()))
    x = np.random.default_rng(0).uniform(-2, 2, (1, 16, 28, 28)).astype(np.float32)
    quantize_graph(g, collect_ranges(g, [x]))
    t = load_target()
    plan_memory(g, t, 0, False)   # fits
    with pytest.raises(ScheduleError, match=r"the (ACT|INPUT|OUTPUT) region needs [\d,]+ bytes "
                                            r"of DRAM, more than the 2\*\*30"):
        plan_memory(g, dataclasses.replace(t, dram_align_bytes=600_000_000), 0, False)
