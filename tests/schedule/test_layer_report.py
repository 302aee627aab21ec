"""Per-layer report helpers: roofline and capacity bound (hand-computed), DRAM byte sums, CSV,
disasm sources."""

from __future__ import annotations

import csv
import io

import pytest

from tcc_compiler.cli.commands.disasm import command_sources
from tcc_compiler.errors import InternalError
from tcc_compiler.isa import commands as C
from tcc_compiler.schedule import report as R
from tcc_compiler.target import load_target


def test_roofline_hand_computed():
    t = load_target(None)        # 2048 MAC/cycle, 12.8 GB/s at 1 GHz = 12.8 B/cycle
    r = R.roofline(2048 * 1000, 12800, t)
    assert r["compute_cycles"] == 1000 and r["dram_cycles"] == 1000 and r["bound"] == "compute"
    r = R.roofline(2048 * 10, 128_000, t)
    assert r["cycles"] == 10_000 and r["bound"] == "dram"
    assert abs(r["latency_ms"] - 0.01) < 1e-12
    assert R.utilisation(2048 * 50, 100, t) == 0.5 and R.utilisation(5, 0, t) == 0.0


def test_dram_bytes_sums_dma_only():
    cmds = [C.DmaLoad(0, 0, 8, 3, 2, 8, 24, 8, 24), C.DmaStore(0, 0, 100, 1, 1, 0, 0, 0, 0),
            C.AddTile(0, 0, 0, 64), C.End()]
    assert R.dram_bytes(cmds) == (48, 100)


def test_csv_columns_and_cells():
    row = {"name": "c1", "op": "conv", "source": ["a", "b"], "input_shape": [1, 3, 4, 4],
           "output_shape": [1, 8, 4, 4], "tiles": 2, "tiling": "t", "macs": 10,
           "estimated_cycles": 5, "mac_utilisation": 0.25, "dram_read_bytes": 1,
           "dram_write_bytes": 2, "sram_peak_bytes": 3}
    rows = list(csv.reader(io.StringIO(R.to_csv([row]))))
    assert rows[0] == list(R.COLUMNS)
    assert rows[1][:5] == ["c1", "conv", "a;b", "1x3x4x4", "1x8x4x4"]
    assert rows[1][9] == "0.250"
    text = R.format_table([row], 1_000_000_000)
    assert len(text.splitlines()) == 3 and "c1" in text.splitlines()[2]


def test_command_sources_follow_layer_ranges():
    rep = {"layers": [{"name": "x", "source": ["n1"], "commands": 2},
                      {"name": "y", "source": ["n2", "n3"], "commands": 1}]}
    assert command_sources(rep, 4) == ["x [n1]", "x [n1]", "y [n2,n3]", None]


def test_capacity_bound_hand_computed():
    t = load_target(None)        # S = 2 MiB = 2,097,152 B; 12.8 B/cycle; 2048 MAC/cycle
    s = t.sram_capacity_bytes
    macs = [2048 * 1000, 2048 * 100]   # 1000 + 100 MAC cycles
    # weights needed only by the last layer: S + 128,000 B -> 10,000 cycles after it starts
    # i=0: 0 + max(1100, 10000); i=1: 1000 + max(100, 10000) = 11000; i=2: 1100
    b = R.capacity_bound(macs, [0, s + 128_000], t, ["a", "b"])
    assert (b["cycles"], b["layer_index"], b["layer"]) == (11_000, 1, "b")
    assert abs(b["latency_ms"] - 0.011) < 1e-12
    # the same weights needed by the first layer: prefetch cannot overlap layer a's compute
    b = R.capacity_bound(macs, [s + 128_000, 0], t)
    assert (b["cycles"], b["layer_index"], b["layer"]) == (10_000, 0, None)
    # weights that fit the SRAM: the MAC term (i = n)
    b = R.capacity_bound(macs, [s // 2, s // 2], t, ["a", "b"])
    assert (b["cycles"], b["layer_index"], b["layer"]) == (1100, 2, None)
    with pytest.raises(InternalError):
        R.capacity_bound(macs, [0], t)


def test_command_sources_follow_interleaved_layers():
    """A hoisted weight prefetch puts the last conv's loads among the previous conv's commands:
    the report's ``command_ranges`` give each command to the layer whose provenance comment
    (written by the emitter as it emitted the command) names it, and ``tccc disasm``'s labels
    follow them. Per-layer counts read as contiguous ranges would mislabel the hoisted loads
    and every command after them up to the consumer."""
    from helpers.prefetch_net import quantized_prefetch_net

    from tcc_compiler.binfmt.weightfile import write_weight_file
    from tcc_compiler.emit.report import build_report
    from tcc_compiler.isa.codec import encode_commands
    from tcc_compiler.passes import PassManager, default_pipeline
    from tcc_compiler.schedule.cost import replay
    from tcc_compiler.schedule.lowering import Lowering
    from tcc_compiler.schedule.prefetch import plan_hoist
    from tcc_compiler.target import load_target as load

    g, _ = quantized_prefetch_net()
    t = load().with_sram(512 * 1024)
    lw = Lowering(g, t, 0)
    plain = lw.run()
    hoist = plan_hoist(g, lw.mem, plain, replay(plain.commands, t), t, eager=True,
                       consumer=len(plain.layers) - 1)
    prog = Lowering(g, t, 0, hoist=(hoist,)).run()
    rep = build_report(g, prog, t, encode_commands(prog.commands),
                       PassManager(default_pipeline()), {},
                       write_weight_file(prog.weights, "t"))
    n = len(prog.commands)
    assert any(len(row["command_ranges"]) > 1 for row in rep["layers"])   # interleaved
    labels = command_sources(rep, n)
    assert labels[-1] is None and prog.commands[-1].name == "END"
    assert [lab.split()[0] for lab in labels[:-1]] == \
        [c.split()[0] for c in prog.comments[:-1]]
    counts_only = {"layers": [{k: v for k, v in row.items() if k != "command_ranges"}
                              for row in rep["layers"]]}
    assert command_sources(counts_only, n) != labels   # what the old reading got wrong


@pytest.mark.parametrize("ranges,why", [([[0, 10**30]], "is past the program's 4 commands"),
                                        ([[0, 2], [1, 3]], "overlaps another layer's")])
def test_command_sources_refuse_impossible_ranges(ranges, why):
    """A range past the stream or two layers claiming one command is a damaged report:
    refused (``tccc disasm`` warns and prints no names) instead of mislabelling commands."""
    rep = {"layers": [{"name": "x", "source": [], "command_ranges": ranges}]}
    with pytest.raises(ValueError, match=why):
        command_sources(rep, 4)
