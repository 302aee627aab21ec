"""``report.json``: the compile report (sizes, MACs, estimated cycles per layer and in total).

Cycle figures come from replaying the command stream on the target's cost model
(:func:`tcc_compiler.schedule.replay`); the bounds (roofline, SRAM capacity) from
:mod:`tcc_compiler.schedule.report`.
"""

from __future__ import annotations

from tcc_compiler.version import __version__
from tcc_compiler.binfmt.weightfile import compression_summary
from tcc_compiler.ir.graph import Graph
from tcc_compiler.isa.spec import Queue
from tcc_compiler.passes import PassManager
from tcc_compiler.schedule import Program
from tcc_compiler.schedule.crossing import crossing_bytes
from tcc_compiler.schedule.coretime import (compute_floor_cycles, layer_floor_cycles,
                                            two_core_bounds)
from tcc_compiler.schedule.timeline import Span, summary as timeline_summary
from tcc_compiler.schedule.timeline import per_core
from tcc_compiler.schedule.timeline import timeline as make_timeline
from tcc_compiler.schedule import report as perf_report
from tcc_compiler.target import Target


def _weight_raw(li) -> dict:
    """``weight_raw_bytes`` (weights + params before compression, bytes) and ``weight_ratio``
    (bytes in quantized_network.bin / raw, as ``tccc inspect --csv`` gives) of a layer with
    weights (a LayerInfo); {} without."""
    if not li.weight_raw_bytes:
        return {}
    return {"weight_raw_bytes": li.weight_raw_bytes,
            "weight_ratio": round(li.weight_file_bytes / li.weight_raw_bytes, 4)}


def command_ranges(indices) -> list[list[int]]:
    """Sorted command indices (ints into the program's stream) as ``[start, end)`` runs, e.g.
    ``[0, 1, 2, 7]`` -> ``[[0, 3], [7, 8]]``: the report's per-layer ``command_ranges``, which
    say exactly which commands a layer owns when the scheduler interleaves layers (prefetches,
    cascades, two cores)."""
    runs: list[list[int]] = []
    for i in sorted(indices):
        if runs and runs[-1][1] == i:
            runs[-1][1] = i + 1
        else:
            runs.append([i, i + 1])
    return runs


def cores_report(program: Program, tgt: Target, timeline: list[Span], total: int,
                 roof: dict | None = None, weight_bytes: int = 0,
                 compute_floor: int = 0) -> dict:
    """The report's ``cores`` object: cores used, single-image latency (cycles, ms), stream
    throughput (the better of the emitted program run image after image and, with
    ``--cores 2``, the emitted stream program, npu_cmd_stream.bin: its replay over its
    images, schedule/corestream.py), per core its COMPUTE-queue busy cycles, utilisation and
    DRAM bytes and, given the network's ``roof`` (:func:`~tcc_compiler.schedule.report.
    roofline`), stored ``weight_bytes`` and ``compute_floor``
    (:func:`~tcc_compiler.schedule.coretime.compute_floor_cycles`), ``two_core_bounds``
    (:func:`~tcc_compiler.schedule.coretime.two_core_bounds`: latency, stream with one weight
    read per image and per four images, the limiting term) and ``two_core_bound_cycles``
    (its latency bound)."""
    period, how = total, "the emitted program, one image after another"
    est = program.estimates
    bounds = two_core_bounds(max(roof["compute_cycles"], compute_floor),
                             weight_bytes + program.input_bytes,
                             program.output_bytes, tgt, weight_bytes) if roof and est else None
    sp = est.get("stream_period_cycles")
    if sp is not None and sp < period:
        period = sp
        how = (f"npu_cmd_stream.bin: {est['stream_images']} images per run, "
               f"{est['stream_batch']} per core"
               + _batched(est))
    return {"cores": program.cores, "requested": 2 if est else 1,
            "kept": est.get("kept", "one core"), "estimates": est,
            "latency_cycles": total,
            "latency_ms": total / tgt.clock_hz * 1e3,
            "stream_period_cycles": period,
            "stream_images_per_s": tgt.clock_hz / period if period else None,
            "stream_schedule": how,
            "two_core_bound_cycles": bounds["latency_cycles"] if bounds else None,
            "two_core_bounds": bounds,
            "per_core": per_core(timeline)}


def _batched(est: dict) -> str:
    """How the stream program shares its weight reads, for the report's ``stream_schedule``."""
    b = est["stream_batch"]
    if b <= 1:
        return ""
    share = est.get("stream_tail_weight_share")
    if est.get("stream_tail_from") and share is not None:
        return (f", the tail after {est['stream_tail_from']} ({share:.0%} of the weights) "
                f"with one weight load per {b} images")
    return f", one weight load per {b} images"


def format_latency(ms: float) -> str:
    """A latency in milliseconds for humans: ``"1.23 ms"``, or ``"45.6 µs"`` below 1 ms (small
    models used to print ``0.00 ms``); a negative one (a difference) by its magnitude:
    ``"-2.50 ms"``, ``"-0.4 µs"``."""
    return f"{ms:.2f} ms" if abs(ms) >= 1.0 else f"{ms * 1e3:.1f} µs"


def cores_line(c: dict | None, prefix: str = "") -> str | None:
    """One text line of a report's ``cores`` object (:func:`cores_report`) of a ``--cores 2``
    compile: what was kept, latency (ms, then cycles) against one core's, stream throughput
    (images/s) against one core running one image after another, per-core utilisation of the
    kept program; None for a one-core compile. ``prefix`` starts the line (a segment's name).

    E.g. ``2 cores: kept spatial split; latency 761.3 µs = 761,318 cycles (1.77x one core's
    1,350,472); stream 1,646 images/s, 2.22x one core's 740 (npu_cmd_stream.bin: ...);
    utilisation core 0 81%, core 1 79%``, or with one core kept ``latency 1.35 ms =
    1,350,472 cycles (split over both 1,386,769)``. Numbers use thousands separators throughout (the
    throughput used to print ``1646`` beside ``1,350,472``), and speed-ups read ``1.77x one
    core's`` rather than a bare ``x1.77``."""
    if not c or not c.get("estimates"):
        return None
    one = c["estimates"]["single_core_cycles"]
    lat = c["latency_cycles"]
    period = c["stream_period_cycles"]
    one_ips = c["stream_images_per_s"] * period / one   # the same clock, one image at a time
    util = ", ".join(f"core {p['core']} {p['utilisation']:.0%}" for p in c["per_core"])
    split = c["estimates"].get("spatial_latency_cycles")
    if c["cores"] == 2:
        versus = f"{one / lat:.2f}x one core's {one:,}"
    else:   # one core kept: the split it beat (none when no split fits the SRAM)
        versus = f"split over both {split:,}" if split else "no split fits"
    return (f"{prefix}2 cores: kept {c['kept']}; latency {format_latency(c['latency_ms'])} = "
            f"{lat:,} cycles ({versus}); stream "
            f"{c['stream_images_per_s']:,.0f} images/s, {one / period:.2f}x one core's "
            f"{one_ips:,.0f} ({c['stream_schedule']}); utilisation {util}")


def _layer_row(li, program: Program, spans: list[tuple[int, int]], tgt: Target) -> dict:
    """One ``layers`` row of the report for LayerInfo ``li``: its commands (count and
    ``command_ranges``), estimated cycles from the replay ``spans`` ((start, end) cycles per
    command), sizes (bytes), DRAM traffic and MAC utilisation."""
    if li.cmds is not None:
        # a cascaded op's commands interleave with its chain's, so its wall-clock span
        # overlaps the others': count the cycles its own compute commands are busy
        own = [i for i in li.cmds if program.commands[i].queue is Queue.COMPUTE]
        cycles = sum(spans[i][1] - spans[i][0] for i in own)
        n_cmds = len(li.cmds)
        ranges = command_ranges(li.cmds)
    else:
        seg = spans[li.first_cmd:li.end_cmd]
        cycles = max(e for _, e in seg) - min(s for s, _ in seg)
        n_cmds = li.end_cmd - li.first_cmd
        ranges = [[li.first_cmd, li.end_cmd]] if n_cmds else []
    return {
        "name": li.name, "op": li.kind, "source": list(li.source),
        "input_shape": list(li.in_shape), "output_shape": list(li.out_shape),
        "tiles": li.tiles, "macs": li.macs, "estimated_cycles": cycles,
        "commands": n_cmds, "command_ranges": ranges, "weight_bytes": li.weight_bytes,
        **_weight_raw(li),
        "sram_peak_bytes": li.sram_peak_bytes, "tiling": li.plan,
        **perf_report.layer_dram(program, li),
        "mac_utilisation": round(perf_report.utilisation(li.macs, cycles, tgt,
                                                            li.depthwise), 4),
    }


def build_report(graph: Graph, program: Program, tgt: Target, cmd_bin: bytes, pm: PassManager,
                 timings: dict, weight_bin: bytes, timeline: list[Span] | None = None) -> dict:
    """The compile report: sizes (bytes), MACs, estimated cycles per layer and in total.

    ``weight_bin`` is the program's quantized_network.bin (size and compression summary);
    ``timeline`` the program's :func:`~tcc_compiler.schedule.timeline.timeline` (computed
    when None): its :func:`~tcc_compiler.schedule.timeline.summary` is the report's
    ``"timeline"`` (busy and stall cycles per queue, compute waiting for DMA per op).
    """
    if timeline is None:
        timeline = make_timeline(program, tgt)
    spans = [(s.start, s.end) for s in timeline]
    total_cycles = spans[-1][1] if spans else 0
    layers = [_layer_row(li, program, spans, tgt) for li in program.layers]
    macs = sum(li.macs for li in program.layers)
    dram_rd, dram_wr = perf_report.dram_bytes(program.commands)
    min_dram = (sum(li.weight_bytes for li in program.layers) + program.input_bytes
                + program.output_bytes)
    counts: dict[str, int] = {}
    roof = perf_report.roofline(macs, min_dram, tgt,
                                sum(li.macs for li in program.layers if li.depthwise))
    for li in program.layers:
        counts[li.kind] = counts.get(li.kind, 0) + 1
    return {
        "tool_version": __version__,
        "target": tgt.name,
        "command_bytes": len(cmd_bin),
        "weight_bytes": len(weight_bin),
        "weight_compression": compression_summary(weight_bin),
        "commands": len(program.commands),
        "macs": macs,
        "estimated_cycles": total_cycles,
        "estimated_latency_ms": total_cycles / tgt.clock_hz * 1e3,
        "sram_peak_bytes": program.sram_peak_bytes,
        "dram_activation_bytes": program.act_arena_bytes,
        "dram_read_bytes": dram_rd,
        "dram_write_bytes": dram_wr,
        "minimal_dram_bytes": min_dram,
        "mac_utilisation": round(perf_report.utilisation(macs, total_cycles, tgt), 4),
        "roofline": roof,
        "capacity_bound": perf_report.capacity_bound(
            [li.macs for li in program.layers], [li.weight_bytes for li in program.layers],
            tgt, [li.name for li in program.layers],
            [li.depthwise for li in program.layers],
            layer_floor_cycles(graph, program.layers, tgt), compute_cuts(program),
            crossing_bytes(graph, [li.name for li in program.layers], tgt)),
        "npu_ops": counts,
        "timeline": timeline_summary(timeline),
        "cores": cores_report(program, tgt, timeline, total_cycles, roof,
                              sum(li.weight_bytes for li in program.layers),
                              compute_floor_cycles(graph, program.layers, tgt)
                              if program.estimates else 0),
        "layers": layers,
        "passes": {"seconds": pm.stats.seconds, "fired": pm.stats.fired},
        "compile_seconds": timings,
    }


def compute_cuts(program: Program) -> list[bool]:
    """Per layer of ``program`` (one core), whether every earlier layer's compute commands
    come before its first one in the stream (the COMPUTE queue runs in order): False inside a
    cascaded chain, whose ops' tiles interleave band by band. The cut points of the capacity
    bound's ``floor`` form (:func:`~tcc_compiler.schedule.report.capacity_bound`)."""
    comp = {i for i, c in enumerate(program.commands) if c.queue is Queue.COMPUTE}
    out, last = [], -1
    for li in program.layers:
        own = [i for i in (li.cmds if li.cmds is not None
                           else range(li.first_cmd, li.end_cmd)) if i in comp]
        out.append(not own or min(own) > last)
        last = max([last] + own)
    return out
