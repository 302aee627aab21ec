"""Per-layer report helpers: roofline and capacity bound (hand-computed), DRAM byte sums, CSV,
disasm sources."""

from __future__ import annotations

import csv
import io

import numpy as np
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
    # weights needed only by the last layer: S + 128,000 B. i=0: nothing on chip yet, all
    # 2,225,152 B cross the link: 173,840 cycles; i=1: T = 1000, at most 12,800 B loaded:
    # 1000 + 172,840 (the same); i=2: 1100
    b = R.capacity_bound(macs, [0, s + 128_000], t, ["a", "b"])
    assert (b["cycles"], b["layer_index"], b["layer"]) == (173_840, 0, "a")
    assert abs(b["latency_ms"] - 0.17384) < 1e-12
    # a long first layer: by T = 200,000 cycles the link has carried more than S, so only the
    # 128,000 B beyond the SRAM are left: 200,000 + max(100, 10,000)
    b = R.capacity_bound([2048 * 200_000, 2048 * 100], [0, s + 128_000], t, ["a", "b"])
    assert (b["cycles"], b["layer_index"], b["layer"]) == (210_000, 1, "b")
    # weights that fit the SRAM still cross the link once: S / 12.8 = 163,840 (i = 0)
    b = R.capacity_bound(macs, [s // 2, s // 2], t, ["a", "b"])
    assert (b["cycles"], b["layer_index"], b["layer"]) == (163_840, 0, "a")
    # no weights: the MAC term (i = n)
    b = R.capacity_bound(macs, [0, 0], t, ["a", "b"])
    assert (b["cycles"], b["layer_index"], b["layer"]) == (1100, 2, None)
    with pytest.raises(InternalError):
        R.capacity_bound(macs, [0], t)


def test_capacity_bound_charges_crossing_activations():
    """Activations live across a cut (``layer_live``) take SRAM the weights cannot use, or
    cross the link after it: a long first layer (T = 200,000 cycles, the link could have
    filled the SRAM) leaves 128,000 B of weights beyond S; 64,000 B of activations crossing
    the cut add 5,000 cycles: 200,000 + 192,000 / 12.8 = 215,000 in both forms. At a cut
    inside a cascaded chain (``cuts`` False) they are not charged; at i = 0 (nothing on
    chip) an input smaller than the SRAM changes nothing."""
    t = load_target(None)
    s = t.sram_capacity_bytes
    macs, w = [2048 * 200_000, 2048 * 100], [0, s + 128_000]
    b = R.capacity_bound(macs, w, t, ["a", "b"], layer_floor=[200_000.0, 100.0],
                         layer_live=[0, 64_000])
    assert (b["cycles"], b["layer_index"], b["floor_cycles"]) == (215_000, 1, 215_000)
    b = R.capacity_bound(macs, w, t, ["a", "b"], layer_floor=[200_000.0, 100.0],
                         cuts=[True, False], layer_live=[0, 64_000])
    assert (b["cycles"], b["floor_cycles"], b["floor_layer_index"]) == (210_000, 200_100, 2)
    b = R.capacity_bound([2048 * 1000, 2048 * 100], w, t, layer_live=[150_528, 0])
    assert b["cycles"] == 173_840 and b["layer_index"] == 0
    with pytest.raises(InternalError):
        R.capacity_bound(macs, w, t, layer_live=[0])


def test_capacity_bound_is_at_least_the_weight_traffic():
    """A lower bound on any schedule: never below the weights' own DRAM time (all must be
    loaded, nothing is on chip at the start), whatever the layer split."""
    t = load_target(None)
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(1, 8))
        macs = [int(x) for x in rng.integers(0, 2048 * 100_000, n)]
        w = [int(x) for x in rng.integers(0, 3 * t.sram_capacity_bytes // n, n)]
        b = R.capacity_bound(macs, w, t)
        assert b["cycles"] >= int(sum(w) / t.dram_bytes_per_cycle) - 1
        assert b["cycles"] >= int(sum(macs) / t.macs_per_cycle) - 1


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


def test_capacity_bound_floor_form_hand_computed():
    """With per-layer compute floors the same bound uses them for C: a first layer whose
    floor (5000 cycles: a conv leaving array lanes idle) exceeds its MACs at peak (1000)
    raises the bound by the difference; a cut inside a chain (``cuts`` False) is skipped."""
    t = load_target(None)
    s = t.sram_capacity_bytes
    macs = [2048 * 1000, 2048 * 100]
    w = [0, s + 128_000]
    b = R.capacity_bound(macs, w, t, ["a", "b"], layer_floor=[5000.0, 100.0])
    # i=1: T = 5000, 64,000 B on chip; 5000 + (2,225,152 - 64,000) / 12.8 = 173,840 + 0
    assert (b["cycles"], b["layer_index"]) == (173_840, 0)
    assert (b["floor_cycles"], b["floor_layer_index"], b["floor_layer"]) == (173_840, 0, "a")
    b = R.capacity_bound([2048 * 200_000, 2048 * 100], w, t, ["a", "b"],
                         layer_floor=[230_000.0, 100.0])
    assert (b["cycles"], b["floor_cycles"], b["floor_layer"]) == (210_000, 240_000, "b")
    b = R.capacity_bound([2048 * 200_000, 2048 * 100], w, t, ["a", "b"],
                         layer_floor=[230_000.0, 100.0], cuts=[True, False])
    assert (b["floor_cycles"], b["floor_layer_index"]) == (230_100, 2)
    with pytest.raises(InternalError):
        R.capacity_bound(macs, w, t, layer_floor=[1.0])


def test_floor_bound_holds_for_lowered_programs():
    """The floor form is a lower bound: a lowered program (convs leaving array lanes idle:
    32 and 48 output channels; small SRAMs) replays no faster than it, and it is at least
    the MAC-peak form; the per-layer floors sum to at most the compute commands' cycles."""
    from helpers.prefetch_net import quantized_prefetch_net

    from tcc_compiler.emit.report import compute_cuts
    from tcc_compiler.schedule.coretime import layer_floor_cycles
    from tcc_compiler.schedule.cost import replay
    from tcc_compiler.schedule.crossing import crossing_bytes
    from tcc_compiler.schedule.lowering import Lowering

    g, _ = quantized_prefetch_net(512, (256, 48))
    for kb in (96, 256):
        t = load_target(None).with_sram(kb * 1024)
        prog = Lowering(g, t, kb * 256).run()
        lay = prog.layers
        args = ([li.macs for li in lay], [li.weight_bytes for li in lay], t)
        b = R.capacity_bound(*args, layer_floor=layer_floor_cycles(g, lay, t),
                             cuts=compute_cuts(prog))
        total = max(e for _, e in replay(prog.commands, t))
        assert b["cycles"] <= b["floor_cycles"] <= total
        # with the activations crossing each cut: tighter, still below the program
        live = crossing_bytes(g, [li.name for li in lay], t)
        b2 = R.capacity_bound(*args, layer_floor=layer_floor_cycles(g, lay, t),
                              cuts=compute_cuts(prog), layer_live=live)
        assert b["cycles"] <= b2["cycles"] <= b2["floor_cycles"] <= total
        assert b["floor_cycles"] <= b2["floor_cycles"] and any(live)
        comp = [e - s for (s, e), c in zip(replay(prog.commands, t), prog.commands)
                if c.queue is C.Queue.COMPUTE]
        assert sum(layer_floor_cycles(g, lay, t)) <= sum(comp)
