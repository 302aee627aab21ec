"""Choosing the int16 layers: ``--precision int8 | auto | budget | FILE`` (specs/quantization.md,
"Mixed precision").

A *promotion* is one layer's output made int16 ("activations") or one conv/fc layer's
weights made int16 ("weights"; quant/precision.py says which may be). ``auto`` measures, with
the *isolated* error ``tccc analyze`` computes (:func:`tcc_compiler.quant.analyze
.isolated_errors`: the layer alone, fed its float inputs, so the ranking is not blurred by the
errors of the layers before it), each layer's relative noise power ``N = sum (f - q)^2 /
sum f^2`` in three quantized graphs: all int8 (``N8``), every promotable layer's weights
int16 (``Nw``) and every promotable layer's output int16 (``Na``). The promotion's *gain* is
the noise it removes from its layer, ``N8 - Nw`` or ``N8 - Na``; the promotions with a gain
are ranked by it, largest first (the producers of a channel concat group, promoted together,
are one promotion whose noises are the sums of theirs; a lookup table's int16 output, kind
"table outputs", after all the others: it promotes two layers and, chosen before them, it
crowded out the squeeze-excitation outputs that MobileNetV3's dark photos need), and ``auto``
takes the fewest of them, in that order, whose network output meets the goal on the
calibration inputs:

    SQNR of the output on its worst input used (float network vs quantized, dB; all graph
    outputs of one input pooled) >= min(target_db, the same with every promotion made - goal_db)

(without a target, ``target_db`` inf, the SQNR of all the inputs used pooled, as before the
target existed)
i.e. ``target_db`` (none by default: :data:`DEFAULT_TARGET_DB`; 28 dB is FlowNetS's) on
the worst calibration input when int16 can reach it, else within ``goal_db`` of what int16
weights and activations give at all (always reachable: all of them meet it); nothing when
all-int8 already meets ``target_db``. The number of promotions is found by bisection over the
ranking (the SQNR grows with the promotions made; where it does not, bisection still ends on
a prefix that meets the goal), using at most :data:`MAX_AUTO_INPUTS` calibration inputs; then
up to :data:`PRUNE_TRIES` of the chosen promotions, the most estimated cycles added first
(quant/promotion_cost.py: the slower int16 conv tiles and the extra bytes), are left out again
when the rest still meets the goal. Last, every ranked promotion left out whose estimated
cycles are at most :data:`FREE_FRACTION` of the network's int8 compute cycles is added (a
squeeze-excitation's fc1 table output: one value per channel, a few hundred cycles): the
calibration photos cannot show what it is worth, since each of its channels is one number
per photo, but past them it is (EfficientNetV2-S's dark Hubble photos drive those SiLU
outputs 1.15-1.43x past their calibrated maximum, which the int16 headroom holds and int8
clips: 19.7 -> 30 dB on those photos). The search quantizes with round-to-nearest weights and no
bias correction (the options that refine int8 weights afterwards do not change the ranking).
Ordering the ranking by gain per estimated cycle instead was tried and measured worse: a
layer's isolated gain does not say how much of its noise reaches the output, so cheap layers
whose noise does not matter came first (FlowNetS: 26 promotions before ``conv2``'s concat
group, the one its output needs; SSDLite: 128 of 152 promotions in, its worst head tensor
still 13.8 dB).

``budget`` (:func:`budget_precision`) takes a few cheap promotions from the same ranking
instead: the first :data:`BUDGET_PROMOTIONS`, skipping int16 weights that would add more than
:data:`BUDGET_WEIGHT_FRACTION` of the int8 weight bytes.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np

from tcc_compiler.errors import InputError
from tcc_compiler.interp import run_float
from tcc_compiler.ir.graph import Graph
from tcc_compiler.ir.ops import Op
from tcc_compiler.quant.analyze import isolated_errors
from tcc_compiler.quant.golden import GoldenModel
from tcc_compiler.quant.precision import (FILE_KEY, WEIGHTS_KEY, Int16Plan, group_producers,
                                          groups_by_value, int16_blocker, layer_nodes,
                                          plan_int16, read_precision_file, weights_blocker,
                                          with_table_convs)
from tcc_compiler.quant.promotion_cost import activation_cost, network_cycles, weights_cost
from tcc_compiler.quant.quantize import quantize_graph
from tcc_compiler.target import Target, load_target

log = logging.getLogger(__name__)

#: ``auto``'s target (dB): the network output's SQNR on its worst calibration input (of those it
#: evaluates) that is enough; by default none (``inf``: within ``goal_db`` of all-int16's, as
#: before the target existed), because a calibration set's worst input does not bound a
#: held-out set's: a finite target measured cheaper but lower on held-out photos (MobileNetV3-
#: Large: 28 dB on its calibration worst gave 23.8 dB on the dark eval photos it clips, 31 dB
#: gave 23.2, against 32.0 without a target; FlowNetS 28 dB: 27.8 dB at +2.0 ms, README).
DEFAULT_TARGET_DB = math.inf
#: When the target is out of reach, ``auto`` stops this far (dB) below all-int16's worst SQNR.
DEFAULT_GOAL_DB = 0.5
#: Calibration inputs the ``auto`` search evaluates (the first ones).
MAX_AUTO_INPUTS = 16
#: ``auto`` tries to leave out this many of its chosen promotions again, the costliest first.
PRUNE_TRIES = 4
#: ``auto`` adds every promotion estimated at most this share of the network's int8 compute
#: cycles (module docstring; 1e-4 of EfficientNetV2-S's is about 140 cycles).
FREE_FRACTION = 1e-4
#: ``budget``: at most this many promotions, the first of ``auto``'s ranking that fit ...
BUDGET_PROMOTIONS = 10
#: ... with int16 weights adding at most this share of the network's int8 weight bytes.
BUDGET_WEIGHT_FRACTION = 0.01
#: The ``precision`` values that are modes, not files.
MODES = ("int8", "auto", "budget")
#: Kinds of a promotion (the ranking's second column); TABLES: a lookup table's output with
#: its conv's (quant/precision.py table_conv), ranked after every other promotion.
ACTIVATIONS, WEIGHTS, TABLES = "activations", "weights", "table outputs"


@dataclass
class PrecisionChoice:
    """Which layers are int16 and why (the report's ``precision`` object).

    Attributes:
        mode: "int8", "auto", "budget", "file" (a precision file) or "list" (names given
            in code).
        plan: the :class:`Int16Plan` (layers, tensors, weight layers, layers kept int8 and
            why).
        int16_ranges: {layer output name: (lo, hi)} for :func:`quantize_graph`.
        goal_db, sqnr_db: ``auto`` only: the goal (dB below all-int16's, when the target is
            out of reach) and the worst output SQNR (any output, any input used) of all-int8,
            the choice and all-int16 (weights and activations) (dB; None when not computed:
            all-int16 is not evaluated when all-int8 meets the target); ``budget``: the output
            SQNR of all the inputs pooled.
        ranking: ``auto`` only: [(layer, kind, isolated SQNR dB all int8, after the
            promotion)] of the promotions with a gain, in the order ``auto`` takes them
            (module docstring).
        source: the precision file, for messages.
        target_db: ``auto`` only: the worst output SQNR (dB) that is enough.
    """

    mode: str
    plan: Int16Plan = field(default_factory=Int16Plan)
    int16_ranges: dict = field(default_factory=dict)
    goal_db: float | None = None
    sqnr_db: dict = field(default_factory=dict)
    ranking: list = field(default_factory=list)
    target_db: float | None = None
    source: str = ""

    def to_dict(self) -> dict:
        """JSON-ready summary (non-finite SQNRs as None)."""
        def fin(x):
            return None if x is None or not math.isfinite(x) else round(float(x), 3)
        d = {"mode": self.mode, "int16_layers": list(self.plan.layers),
             "int16_tensors": sorted(self.plan.values),
             "kept_int8": dict(self.plan.kept_int8),
             "int16_weight_layers": list(self.plan.weight_layers),
             "kept_int8_weights": dict(self.plan.kept_int8_weights)}
        if self.mode in ("auto", "budget"):
            if self.mode == "auto":
                d["goal_db"] = fin(self.goal_db)
                d["target_db"] = fin(self.target_db)
            else:
                d["budget"] = {"promotions": BUDGET_PROMOTIONS,
                               "weight_fraction": BUDGET_WEIGHT_FRACTION}
            d["output_sqnr_db"] = {k: fin(v) for k, v in self.sqnr_db.items()}
            d["ranking"] = [[n, k, fin(a), fin(b)] for n, k, a, b in self.ranking]
        if self.source:
            d["file"] = self.source
        return d


def _int16_ranges(graph: Graph, layers, ranges: dict, minmax: dict | None) -> dict:
    """{output name: observed (lo, hi)} of the layers (their calibrated range if no min/max)."""
    nodes = layer_nodes(graph)
    out = {}
    for name in with_table_convs(graph, layers):   # an int16 table output: its conv's too
        v = nodes[name].output.name
        out[v] = (minmax or {}).get(v, ranges.get(v, (0.0, 0.0)))
    return out


def quantized_copy(float_graph: Graph, ranges: dict, int16_ranges: dict | None = None,
                   int16_weights=()) -> Graph:
    """A quantized clone of ``float_graph`` (``int16_ranges``, ``int16_weights`` as
    :func:`quantize_graph`)."""
    return quantize_graph(float_graph.clone(), ranges, int16_ranges, set(int16_weights))


def output_sqnr(float_graph: Graph, qgraph: Graph, inputs: list, floats=None) -> float:
    """SQNR (dB) of the quantized graph's outputs against the float graph's, all outputs of all
    ``inputs`` pooled (+inf when exact). ``floats``: the float outputs, if already known."""
    gm = GoldenModel(qgraph)
    num = den = 0.0
    for k, x in enumerate(inputs):
        f = floats[k] if floats is not None else run_float(float_graph, x)
        q = gm.run(x)
        for o in float_graph.outputs:
            a = np.asarray(f[o.name], np.float64).reshape(-1)
            b = np.asarray(q[o.name], np.float64).reshape(-1)
            num += float(a @ a)
            den += float((a - b) @ (a - b))
    if den == 0.0:
        return math.inf
    return 10.0 * math.log10(num / den) if num > 0 else -math.inf


def _noise(sqnr_db: float) -> float:
    """Relative noise power ``sum (f - q)^2 / sum f^2`` of an SQNR (dB)."""
    return 0.0 if sqnr_db == math.inf else 10.0 ** (-sqnr_db / 10.0)


def rank_promotions(float_graph: Graph, ranges: dict, minmax: dict | None,
                    inputs: list) -> list[tuple[str, str, float, float]]:
    """[(layer, kind, isolated SQNR dB all int8, isolated SQNR dB with every layer of that
    kind promoted)] of the promotions that lower their layer's isolated noise, the largest
    gain first (module docstring). The producers of a channel concat group are promoted
    together (quant/precision.py): they are one promotion, named by the first of them, its
    noises the sums of theirs."""
    nodes = layer_nodes(float_graph)
    groups = groups_by_value(float_graph)
    acts = [n for n, node in nodes.items() if int16_blocker(node, float_graph, groups) is None]
    wts = [n for n, node in nodes.items() if weights_blocker(node, float_graph) is None]
    graphs = [quantized_copy(float_graph, ranges),
              quantized_copy(float_graph, ranges, int16_weights=wts),
              quantized_copy(float_graph, ranges,
                             _int16_ranges(float_graph, acts, ranges, minmax))]
    e8, ew, ea = isolated_errors(float_graph, graphs, inputs)
    cands = [(n, WEIGHTS, e8[n], ew[n]) for n in wts]
    seen: set[str] = set()
    for n in acts:
        if n in seen:
            continue
        members = groups.get(id(nodes[n].output))
        names = [p.name for p in group_producers(members)] if members is not None else [n]
        seen.update(names)
        kind = TABLES if members is None and nodes[n].op is Op.LUT else ACTIVATIONS
        cands.append((n, kind, _sqnr(sum(_noise(e8[m]) for m in names)),
                      _sqnr(sum(_noise(ea[m]) for m in names))))
    gain = {(n, k): _noise(a) - _noise(b) for n, k, a, b in cands}
    cands = [c for c in cands if gain[c[:2]] > 0]
    cands.sort(key=lambda c: (c[1] == TABLES, -gain[c[:2]]))
    return cands


def _sqnr(noise: float) -> float:
    """SQNR (dB) of a relative noise power (the inverse of :func:`_noise`)."""
    return math.inf if noise <= 0.0 else -10.0 * math.log10(noise)


def promotion_cycles(float_graph: Graph, ranking: list, tgt: Target) -> dict:
    """{(layer, kind): estimated cycles the promotion adds} (quant/promotion_cost.py) of the
    promotions of ``ranking``."""
    nodes = layer_nodes(float_graph)
    groups = groups_by_value(float_graph)
    return {(c[0], c[1]): (activation_cost(float_graph, nodes[c[0]], tgt, groups)
                           if c[1] != WEIGHTS else weights_cost(nodes[c[0]], tgt))
            for c in ranking}


def _prune(chosen: list, cycles: dict, target: float, sqnr_of) -> tuple[list, float | None]:
    """Drop from ``chosen`` the costliest promotions (at most :data:`PRUNE_TRIES`, the most
    cycles first) the worst output SQNR does not need: each is left out when ``sqnr_of`` the
    rest still reaches ``target``. (the kept promotions, the SQNR of the last set kept that
    was evaluated, None when nothing was dropped)."""
    worst = None
    for c in sorted(chosen, key=lambda c: -cycles[(c[0], c[1])])[:PRUNE_TRIES]:
        rest = [p for p in chosen if p is not c]
        s = sqnr_of(rest)
        if s >= target:
            chosen, worst = rest, s
    return chosen, worst


def _free(ranking: list, chosen: list, cycles: dict, limit: float) -> list:
    """The promotions of ``ranking`` not in ``chosen`` whose estimated cycles (``cycles``,
    :func:`promotion_cycles`) are at most ``limit`` (ranking order)."""
    taken = {(c[0], c[1]) for c in chosen}
    return [c for c in ranking if (c[0], c[1]) not in taken and cycles[(c[0], c[1])] <= limit]


def _split(promotions) -> tuple[list[str], list[str]]:
    """(activation layers, weight layers) of [(layer, kind, ...)] promotions."""
    return ([p[0] for p in promotions if p[1] in (ACTIVATIONS, TABLES)],
            [p[0] for p in promotions if p[1] == WEIGHTS])


def _promoted_copy(float_graph: Graph, ranges: dict, minmax: dict | None,
                   promotions) -> Graph:
    """The quantized clone with ``promotions`` ([(layer, kind, ...)]) made int16, each concat
    group whole (:func:`plan_int16`)."""
    acts, wts = _split(promotions)
    plan = plan_int16(float_graph, acts, "precision", wts)
    return quantized_copy(float_graph, ranges,
                          _int16_ranges(float_graph, plan.layers, ranges, minmax),
                          plan.weight_layers)


def worst_input_sqnr(float_graph: Graph, qgraph: Graph, inputs: list, floats=None) -> float:
    """The lowest, over ``inputs``, of the quantized graph's output SQNR (dB) against the float
    graph's on one input, all graph outputs of that input pooled as in :func:`output_sqnr`
    (+inf when exact on every input). ``floats``: the float outputs, if already known."""
    gm = GoldenModel(qgraph)
    worst = math.inf
    for k, x in enumerate(inputs):
        f = floats[k] if floats is not None else run_float(float_graph, x)
        q = gm.run(x)
        num = den = 0.0
        for o in float_graph.outputs:
            a = np.asarray(f[o.name], np.float64).reshape(-1)
            d = a - np.asarray(q[o.name], np.float64).reshape(-1)
            num, den = num + float(a @ a), den + float(d @ d)
        if den > 0.0:
            worst = min(worst, 10.0 * math.log10(num / den) if num > 0 else -math.inf)
    return worst


def auto_precision(float_graph: Graph, ranges: dict, minmax: dict | None, inputs: list,
                   goal_db: float = DEFAULT_GOAL_DB, target_db: float = DEFAULT_TARGET_DB,
                   tgt: Target | None = None) -> PrecisionChoice:
    """The ``auto`` choice (module docstring): the shortest prefix of the promotions ranked by
    isolated gain (:func:`rank_promotions`) whose worst-input SQNR on the calibration inputs
    (:func:`worst_input_sqnr`; with ``target_db`` inf, all inputs pooled, :func:`output_sqnr`)
    reaches ``min(target_db, all-int16's - goal_db)``, then the
    costliest of them (:func:`promotion_cycles`) left out again where the rest still does.
    Without a target (``target_db`` inf) the table outputs (kind :data:`TABLES`) are left out
    of the search and of "all-int16"; the recorded ranking still lists them.

    Args:
        float_graph: the float graph after the passes. ranges: calibrated int8 ranges.
        minmax: observed {value: (min, max)} (int16 ranges), or None.
        inputs: calibration inputs (float32 NCHW); the first :data:`MAX_AUTO_INPUTS` are used.
        goal_db: how far below all-int16's worst output SQNR the choice may stay (dB, >= 0)
            when ``target_db`` is out of reach.
        target_db: the worst output SQNR (dB) that is enough.
        tgt: the target whose numbers price the promotions (None: the default target).
    """
    xs = [inputs[i] for i in range(min(len(inputs), MAX_AUTO_INPUTS))]
    tgt = tgt if tgt is not None else load_target()
    full = rank_promotions(float_graph, ranges, minmax, xs)
    # Without a target the goal is measured from all-int16 *without* table outputs: each
    # doubles what its conv's promotion costs for tenths of a dB, and counted in the
    # reference they raised the bar every other promotion had to reach (yolov8n: +13 ms
    # estimated instead of +3). With a target they stay candidates, ranked last.
    ranking = full if target_db < math.inf else [c for c in full if c[1] != TABLES]
    cycles = promotion_cycles(float_graph, full, tgt)
    floats = [run_float(float_graph, x) for x in xs]

    measure = output_sqnr if target_db == math.inf else worst_input_sqnr

    def sqnr_of(promotions) -> float:
        q = _promoted_copy(float_graph, ranges, minmax, promotions)
        return measure(float_graph, q, xs, floats)

    def sqnr(k: int) -> float:
        return sqnr_of(ranking[:k])

    s8 = sqnr(0)
    found = {0: s8}
    hi, target = 0, target_db
    if s8 < target_db:
        found[len(ranking)] = s16 = sqnr(len(ranking))
        target = min(target_db, s16 - goal_db)
        lo, hi = 0, len(ranking)   # invariant: prefix hi meets the target (or is everything)
        if s8 >= target:
            hi = 0
        while hi - lo > 1:
            mid = (lo + hi) // 2
            found[mid] = sqnr(mid)
            if found[mid] >= target:
                hi = mid
            else:
                lo = mid
    s16 = found.get(len(ranking))
    chosen, pruned = _prune(ranking[:hi], cycles, target, sqnr_of) if hi > 1 else \
        (ranking[:hi], None)
    worst = found[hi] if pruned is None else pruned
    # free promotions from the full ranking: a table output costing next to nothing is free
    free = _free(full, chosen, cycles, FREE_FRACTION * network_cycles(float_graph, tgt))
    if free:
        chosen = chosen + free
        worst = sqnr_of(chosen)
    acts, wts = _split(chosen)
    log.info("precision auto: %d of %d promotions (%d free; %d dropped again; %d outputs, "
             "%d weights int16; worst output SQNR %.2f dB; int8 %.2f, all int16 %s, target "
             "%.2f)", len(chosen), len(ranking), len(free), hi - len(chosen) + len(free),
             len(acts), len(wts), worst, s8, "not needed" if s16 is None else f"{s16:.2f}",
             target)
    plan = plan_int16(float_graph, acts, "precision auto", wts)
    return PrecisionChoice("auto", plan, _int16_ranges(float_graph, plan.layers, ranges, minmax),
                           goal_db, {"int8": s8, "chosen": worst, "all_int16": s16},
                           full, target_db=target_db)


def budget_precision(float_graph: Graph, ranges: dict, minmax: dict | None,
                     inputs: list) -> PrecisionChoice:
    """The ``budget`` choice: a few cheap promotions, the largest isolated-error gains first.

    Walks ``auto``'s ranking (:func:`rank_promotions`, first :data:`MAX_AUTO_INPUTS`
    calibration inputs) and takes each promotion until :data:`BUDGET_PROMOTIONS` are taken;
    a weights promotion is skipped when its int16 weights (one more byte per weight) would
    pass :data:`BUDGET_WEIGHT_FRACTION` of the network's int8 weight bytes in all. If the
    network output's SQNR against float on those inputs is then not above all-int8's, nothing
    is promoted. Both budgets were fixed before measuring (specs/quantization.md, "Mixed
    precision"); the cost in latency is the report's (``precision.cost``).

    Args:
        float_graph: the float graph after the passes. ranges: calibrated int8 ranges.
        minmax: observed {value: (min, max)} (int16 ranges), or None.
        inputs: calibration inputs (float32 NCHW).
    """
    xs = [inputs[i] for i in range(min(len(inputs), MAX_AUTO_INPUTS))]
    ranking = rank_promotions(float_graph, ranges, minmax, xs)
    nodes = layer_nodes(float_graph)
    left = BUDGET_WEIGHT_FRACTION * sum(n.inputs[1].const.size for n in nodes.values()
                                        if n.op in (Op.CONV, Op.FC) and n.inputs[1].is_const)
    chosen = []
    for p in ranking:
        if len(chosen) >= BUDGET_PROMOTIONS:
            break
        if p[1] == WEIGHTS:
            extra = nodes[p[0]].inputs[1].const.size
            if extra > left:
                continue
            left -= extra
        chosen.append(p)
    acts, wts = _split(chosen)
    floats = [run_float(float_graph, x) for x in xs]
    s8 = output_sqnr(float_graph, quantized_copy(float_graph, ranges), xs, floats)
    q = _promoted_copy(float_graph, ranges, minmax, chosen)
    sq = output_sqnr(float_graph, q, xs, floats) if chosen else s8
    if sq <= s8:
        acts, wts, sq = [], [], s8
    log.info("precision budget: %d outputs, %d weights int16; output SQNR %.2f dB (int8 %.2f)",
             len(acts), len(wts), sq, s8)
    plan = plan_int16(float_graph, acts, "precision budget", wts)
    return PrecisionChoice("budget", plan, _int16_ranges(float_graph, plan.layers, ranges, minmax),
                           None, {"int8": s8, "chosen": sq}, ranking)


def split_precision(precision) -> tuple[list[str], list[str]] | None:
    """(output layers, weight layers) of a ``precision`` given in code: a list of layer names
    (outputs int16) or a dict like a precision file's content (``{"int16": [...],
    "int16_weights": [...]}``); None for a mode or a file path.

    Raises:
        InputError: a dict with other keys or values that are not lists of names.
    """
    if isinstance(precision, (list, tuple)):
        return list(precision), []
    if not isinstance(precision, dict):
        return None
    bad = set(precision) - {FILE_KEY, WEIGHTS_KEY}
    lists = [precision.get(k, []) for k in (FILE_KEY, WEIGHTS_KEY)]
    if bad or not all(isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v)
                      for v in lists):
        raise InputError(f'precision: give {{"{FILE_KEY}": [layer names], "{WEIGHTS_KEY}": '
                         f"[layer names]}}, got keys {sorted(map(str, precision))}")
    return list(lists[0]), list(lists[1])


def check_precision(float_graph: Graph, precision, goal_db: float = DEFAULT_GOAL_DB,
                    target_db: float = DEFAULT_TARGET_DB) -> None:
    """Refuse a bad ``precision`` before any calibration: an unreadable or malformed precision
    file, a name that is no layer of ``float_graph``, a negative or infinite ``auto`` goal, a
    NaN ``auto`` target.

    Raises:
        InputError: one line naming the file (or "precision") and the problem.
    """
    if precision == "auto" and not 0 <= goal_db < math.inf:
        raise InputError(f"precision_goal_db/--precision-goal {goal_db}: give a finite number "
                         "of dB >= 0 (how far below all-int16's output SQNR auto may stay)")
    if precision == "auto" and math.isnan(target_db):
        raise InputError("precision_target_db/--precision-target nan: give a number of dB "
                         "(the worst output SQNR auto stops at; inf: as close to all-int16's "
                         "as the goal allows)")
    given = split_precision(precision)
    if given is not None:
        plan_int16(float_graph, given[0], "precision", given[1])
    elif precision not in MODES:
        acts, wts = read_precision_file(precision)
        plan_int16(float_graph, acts, str(precision), wts)


def choose_precision(float_graph: Graph, ranges: dict, minmax: dict | None, inputs: list,
                     precision, goal_db: float = DEFAULT_GOAL_DB,
                     target_db: float = DEFAULT_TARGET_DB,
                     tgt: Target | None = None) -> PrecisionChoice:
    """The int16 layers for a ``precision`` setting: "int8" (none), "auto"
    (:func:`auto_precision`), "budget" (:func:`budget_precision`), a precision file path
    (JSON ``{"int16": [layer names], "int16_weights": [layer names]}``), a list of layer
    names (outputs) or a dict like the file's content (:func:`split_precision`).

    Raises:
        InputError: an unreadable or malformed precision file, an unknown layer name, "auto"
            or "budget" without calibration inputs.
    """
    given = split_precision(precision)
    if given is not None:
        plan = plan_int16(float_graph, given[0], "precision", given[1])
        return PrecisionChoice("list", plan,
                               _int16_ranges(float_graph, plan.layers, ranges, minmax))
    if precision == "int8":
        return PrecisionChoice("int8")
    if precision in ("auto", "budget"):
        check_precision(float_graph, precision, goal_db, target_db)
        if not inputs:
            raise InputError(f"precision/--precision {precision} needs calibration inputs "
                             "(calibration/--calib), not only a calib_table/--calib-table")
        if precision == "budget":
            return budget_precision(float_graph, ranges, minmax, inputs)
        return auto_precision(float_graph, ranges, minmax, inputs, goal_db, target_db, tgt)
    acts, wts = read_precision_file(precision)
    plan = plan_int16(float_graph, acts, str(precision), wts)
    return PrecisionChoice("file", plan, _int16_ranges(float_graph, plan.layers, ranges, minmax),
                           source=str(precision))
