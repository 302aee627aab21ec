"""Per-layer performance table, roofline bound and their CSV / console renderings.

Figures come from the documented cycle model (:mod:`tcc_compiler.schedule.cost`,
specs/target.md; the bounds call its rates), not from the chip. The roofline bound is
``max(compute cycles, minimal DRAM bytes / DRAM bytes per cycle)``, the compute cycles being each
MAC at its unit's peak rate (:func:`cost.compute_cycles`: the MAC array's ``macs_per_cycle``, or
the depthwise datapath's for a depthwise layer), where the minimal DRAM
traffic is what any schedule must move: the weight binary's data section (weights and
parameters, read once), the network input (read once) and the outputs (written once). The
SRAM-capacity bound (:func:`capacity_bound`) adds that weights beyond the SRAM's size cannot be
prefetched before the layers that need them start.
"""

from __future__ import annotations

import csv
import io
import logging
import math

from tcc_compiler.errors import InternalError
from tcc_compiler.isa import commands as C
from tcc_compiler.schedule import cost
from tcc_compiler.target import Target

log = logging.getLogger(__name__)

#: Columns of the per-layer CSV, in order. ``weight_bytes``: weights + params as stored in
#: quantized_network.bin (compressed when they are).
COLUMNS = ("name", "op", "source", "input_shape", "output_shape", "tiles", "tiling", "macs",
           "estimated_cycles", "mac_utilisation", "dram_read_bytes", "dram_write_bytes",
           "sram_peak_bytes", "weight_bytes")
#: Appended to :data:`COLUMNS` when the rows carry them (``tccc inspect --csv`` adds them from
#: quantized_network.bin): raw (uncompressed) weight + param bytes and stored / raw.
WEIGHT_COLUMNS = ("weight_raw_bytes", "weight_ratio")


def dram_bytes(cmds: list[C.Command]) -> tuple[int, int]:
    """(bytes read from DRAM by DMA_LOAD and DMA_LOAD_Z (compressed bytes), bytes written by
    DMA_STORE) of ``cmds``."""
    rd = sum(c.total_bytes for c in cmds if isinstance(c, (C.DmaLoad, C.DmaLoadZ)))
    wr = sum(c.total_bytes for c in cmds if isinstance(c, C.DmaStore))
    return rd, wr


def roofline(macs: int, minimal_dram_bytes: int, t: Target, depthwise_macs: int = 0) -> dict:
    """The roofline bound of a network on target ``t``.

    Args:
        macs: useful multiply-accumulates of the network.
        depthwise_macs: those of them run on the depthwise datapath.
        minimal_dram_bytes: bytes any schedule must move between DRAM and the NPU.

    Returns:
        ``{"compute_cycles", "dram_cycles", "cycles", "latency_ms", "bound"}`` with ``bound``
        "compute" or "dram" (whichever term is larger).
    """
    comp = cost.compute_cycles(macs, depthwise_macs, t)
    mem = cost.transfer_cycles(minimal_dram_bytes, t)
    cyc = max(comp, mem)
    return {"compute_cycles": int(round(comp)), "dram_cycles": int(round(mem)),
            "cycles": int(round(cyc)), "latency_ms": cyc / t.clock_hz * 1e3,
            "bound": "compute" if comp >= mem else "dram"}


def capacity_bound(layer_macs: list[int], layer_weight_bytes: list[int], t: Target,
                   names: list[str] | None = None,
                   layer_depthwise: list[bool] | None = None,
                   layer_floor: list[float] | None = None,
                   cuts: list[bool] | None = None,
                   layer_live: list[int] | None = None) -> dict:
    """The SRAM-capacity latency bound (specs/target.md, "Capacity bound").

    With ``C_<i`` the compute cycles of the layers before layer ``i`` at their unit's peak rate
    (:func:`cost.compute_cycles`),
    ``C_>=i`` those of layer ``i`` and after, ``W_>=i`` the stored (DRAM, compressed if so)
    weight and parameter bytes of layer ``i`` and after, ``S`` the SRAM bytes and ``bw`` the
    DRAM bytes per cycle, any schedule takes at least
    ``max_i C_<i + max(C_>=i, (W_>=i - min(S, bw * C_<i)) / bw)`` cycles: layer i's compute
    cannot start before ``C_<i`` (one in-order MAC array); when it starts, at time ``T >=
    C_<i``, at most ``min(S, bw * T)`` bytes of the weights still needed are on chip (the SRAM's
    size, and all the link can have carried since the program began; a stored block is never
    larger than its raw bytes), and the rest must cross the DRAM link afterwards. The term is
    non-decreasing in ``T``, so ``T = C_<i`` bounds it. ``i = 0`` gives the weight part of the
    roofline's DRAM term, ``i = n`` its MAC term.

    With ``layer_live`` (per layer ``i``, the bytes ``A_i`` of activations written before the
    cut and read after it, :func:`~tcc_compiler.schedule.crossing.crossing_bytes`) a cut
    ``i`` where ``cuts[i]`` holds (``cuts`` None: every cut) also charges them: each is in the
    SRAM at ``T`` or crosses the link after it, so the link carries at least ``W_>=i + A_i -
    min(S, bw * T + A_i)`` bytes after ``T`` (the SRAM holds at most ``S`` bytes of weights
    and crossing activations together, of them at most ``bw * T`` bytes of weights). Inside a
    cascaded chain (``cuts[i]`` false) no tensor is whole, and ``A_i`` is not charged.

    With ``layer_floor`` (per layer a lower bound on its compute commands' cycles on the one
    in-order COMPUTE queue, :func:`~tcc_compiler.schedule.coretime.layer_floor_cycles`) the
    same bound is also computed with those cycles for ``C`` (``floor_*`` keys): the cycle
    model's own per-pixel cost of a conv that leaves array lanes idle, the vector unit's pool
    work and one setup per layer, which no schedule avoids. Only the cuts ``i`` where
    ``cuts[i]`` is true are taken there (every layer before ``i`` has finished its compute
    commands before layer ``i``'s first one in the stream: not inside a cascaded chain, whose
    ops interleave); ``cuts`` None: every ``i``.

    Args:
        layer_macs: useful MACs per NPU layer, in execution order.
        layer_weight_bytes: stored weight + parameter bytes per layer (same order).
        names: optional layer names (for the limiting layer in the result).
        layer_depthwise: per layer, True when its MACs run on the depthwise datapath.
        layer_floor: optional per-layer compute floor (cycles), see above.
        cuts: optional per-layer flags, see above.
        layer_live: optional per-layer crossing activation bytes, see above.

    Returns:
        ``{"cycles", "latency_ms", "layer_index", "layer"}``: the bound and the layer ``i``
        where it is reached (``layer_index == n`` / ``layer`` None: the MAC term); with
        ``layer_floor`` also ``floor_cycles``, ``floor_latency_ms``, ``floor_layer_index``,
        ``floor_layer``.

    Raises:
        InternalError: the lists differ in length.
    """
    n = len(layer_macs)
    if len(layer_weight_bytes) != n or any(x is not None and len(x) != n
                                           for x in (layer_floor, layer_live, cuts)):
        raise InternalError(f"capacity_bound: {n} MAC counts but {len(layer_weight_bytes)} "
                            "weight byte counts, or floors / crossing bytes / cuts of "
                            "another length")
    dw = layer_depthwise or [False] * n
    comp = [cost.compute_cycles(m, m if d else 0, t) for m, d in zip(layer_macs, dw)]
    live = [a if cuts is None or cuts[i] else 0
            for i, a in enumerate(layer_live or [0] * n)]
    best, best_i = _bound(comp, layer_weight_bytes, t, [True] * n, live)
    out = {"cycles": int(round(best)), "latency_ms": best / t.clock_hz * 1e3,
           "layer_index": best_i,
           "layer": names[best_i] if names is not None and best_i < n else None}
    if layer_floor is not None:
        fb, fi = _bound(layer_floor, layer_weight_bytes, t, cuts or [True] * n, live)
        out.update({"floor_cycles": int(math.ceil(fb - 1e-9)),
                    "floor_latency_ms": fb / t.clock_hz * 1e3, "floor_layer_index": fi,
                    "floor_layer": names[fi] if names is not None and fi < n else None})
    return out


def _bound(comp: list[float], weights: list[int], t: Target,
           cuts: list[bool], live: list[int]) -> tuple[float, int]:
    """(``max_i C_<i + max(C_>=i, (W_>=i + A_i - min(S, bw * C_<i + A_i)) / bw)`` over the
    cuts ``i`` allowed and ``i = n``, the ``i`` reaching it) for per-layer compute cycles
    ``comp`` and crossing activation bytes ``live`` (``A_i``)."""
    n = len(comp)
    total_c = sum(comp)
    w_after = float(sum(weights))
    c_before = 0.0
    best, best_i = total_c, n
    for i in range(n):
        on_chip = min(t.sram_capacity_bytes, cost.transfer_bytes(c_before, t) + live[i])
        b = c_before + max(total_c - c_before,
                           cost.transfer_cycles(w_after + live[i] - on_chip, t))
        if cuts[i] and b > best + 1e-9:
            best, best_i = b, i
        c_before += comp[i]
        w_after -= weights[i]
    return best, best_i


def layer_dram(program, layer) -> dict:
    """DRAM read/write bytes and MAC utilisation inputs of one :class:`LayerInfo`."""
    if layer.cmds is not None:   # a cascaded op: its commands interleave with its chain's
        rd, wr = dram_bytes([program.commands[i] for i in layer.cmds])
    else:
        rd, wr = dram_bytes(program.commands[layer.first_cmd:layer.end_cmd])
    return {"dram_read_bytes": rd, "dram_write_bytes": wr}


def utilisation(macs: int, cycles: int, t: Target, depthwise: bool = False) -> float:
    """Compute-unit utilisation: ``macs / (cycles * macs_per_cycle)``, for a depthwise layer
    (``depthwise``) ``macs / (cycles * depthwise_macs_per_cycle)``; 0 when cycles is 0."""
    peak = t.depthwise_macs_per_cycle if depthwise else t.macs_per_cycle
    return macs / (cycles * peak) if cycles else 0.0


def to_csv(layers: list[dict]) -> str:
    """The per-layer rows (report.json "layers" dicts) as CSV text with :data:`COLUMNS`, and
    :data:`WEIGHT_COLUMNS` when any row has ``weight_raw_bytes`` (blank for rows without)."""
    cols = COLUMNS + (WEIGHT_COLUMNS if any("weight_raw_bytes" in r for r in layers) else ())
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for row in layers:
        w.writerow([_cell(row.get(k, "")) for k in cols])
    return buf.getvalue()


def _cell(v) -> str:
    if isinstance(v, (list, tuple)):
        return "x".join(str(x) for x in v) if all(isinstance(x, int) for x in v) \
            else ";".join(str(x) for x in v)
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def format_table(layers: list[dict], clock_hz: int) -> str:
    """A readable fixed-width console table of the per-layer rows (one line per layer)."""
    head = f"{'layer':<40} {'op':<7} {'output':<14} {'tiles':>5} {'MMACs':>8} " \
           f"{'us':>8} {'util':>5} {'DRAM KB':>8} {'SRAM KB':>8}"
    lines = [head, "-" * len(head)]
    for r in layers:
        name = r["name"] if len(r["name"]) <= 40 else "..." + r["name"][-37:]
        out = "x".join(str(x) for x in r["output_shape"][1:])
        us = r["estimated_cycles"] / clock_hz * 1e6
        dram = (r.get("dram_read_bytes", 0) + r.get("dram_write_bytes", 0)) / 1024
        lines.append(f"{name:<40} {r['op']:<7} {out:<14} {r['tiles']:>5} "
                     f"{r['macs'] / 1e6:>8.1f} {us:>8.1f} {r.get('mac_utilisation', 0):>5.2f} "
                     f"{dram:>8.1f} {r['sram_peak_bytes'] / 1024:>8.1f}")
    return "\n".join(lines) + "\n"
