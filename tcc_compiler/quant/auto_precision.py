"""Choosing the int16 layers: ``--precision int8 | auto | FILE`` (specs/quantization.md,
"Mixed precision").

A *promotion* is one layer's output made int16 ("activations") or one conv/fc layer's
weights made int16 ("weights"; quant/precision.py says which may be). ``auto`` measures, with
the *isolated* error ``tccc analyze`` computes (:func:`tcc_compiler.quant.analyze
.isolated_errors`: the layer alone, fed its float inputs, so the ranking is not blurred by the
errors of the layers before it), each layer's relative noise power ``N = sum (f - q)^2 /
sum f^2`` in three quantized graphs: all int8 (``N8``), every promotable layer's weights
int16 (``Nw``) and every promotable layer's output int16 (``Na``). The promotion's *gain* is
the noise it removes from its layer, ``N8 - Nw`` or ``N8 - Na``; the promotions with a gain
are ranked by it, largest first (a lookup table's int16 output, kind "table outputs", after
all the others: it promotes two layers and, chosen before them, it crowded out the
squeeze-excitation outputs that MobileNetV3's dark photos need), and ``auto`` takes the fewest
of them, in that order, whose network output meets the goal on the calibration inputs:

    output SQNR (float network vs quantized network, dB, over the inputs used)
        >= SQNR with every promotion made - goal_db

i.e. within ``goal_db`` of what int16 weights and activations can give at all (always
reachable: all of them meet it). The number of promotions is found by bisection over the
ranking (output SQNR grows with the promotions made; where it does not, bisection still
ends on a prefix that meets the goal), using at most :data:`MAX_AUTO_INPUTS` calibration
inputs. The search quantizes with round-to-nearest weights and no bias correction (the
options that refine int8 weights afterwards do not change the ranking).

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
from tcc_compiler.quant.precision import (FILE_KEY, WEIGHTS_KEY, Int16Plan, int16_blocker,
                                          layer_nodes, plan_int16, read_precision_file,
                                          weights_blocker, with_table_convs)
from tcc_compiler.quant.quantize import quantize_graph

log = logging.getLogger(__name__)

#: The default goal of ``auto`` (dB): the network output's SQNR vs float on the calibration
#: inputs within this of all-int16's.
DEFAULT_GOAL_DB = 0.5
#: Calibration inputs the ``auto`` search evaluates (the first ones).
MAX_AUTO_INPUTS = 16
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
        goal_db, sqnr_db: ``auto`` only: the goal (dB below all-int16) and the output SQNR of
            all-int8, the choice and all-int16 (weights and activations) on the inputs used
            (dB; None when not computed).
        ranking: ``auto`` only: [(layer, kind, isolated SQNR dB all int8, after the
            promotion)] of the promotions with a gain, best first (module docstring).
        source: the precision file, for messages.
    """

    mode: str
    plan: Int16Plan = field(default_factory=Int16Plan)
    int16_ranges: dict = field(default_factory=dict)
    goal_db: float | None = None
    sqnr_db: dict = field(default_factory=dict)
    ranking: list = field(default_factory=list)
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
    gain first (module docstring)."""
    nodes = layer_nodes(float_graph)
    acts = [n for n, node in nodes.items() if int16_blocker(node, float_graph) is None]
    wts = [n for n, node in nodes.items() if weights_blocker(node, float_graph) is None]
    graphs = [quantized_copy(float_graph, ranges),
              quantized_copy(float_graph, ranges, int16_weights=wts),
              quantized_copy(float_graph, ranges,
                             _int16_ranges(float_graph, acts, ranges, minmax))]
    e8, ew, ea = isolated_errors(float_graph, graphs, inputs)
    cands = [(n, WEIGHTS, e8[n], ew[n]) for n in wts] + [
        (n, TABLES if nodes[n].op is Op.LUT else ACTIVATIONS, e8[n], ea[n]) for n in acts]
    gain = {(n, k): _noise(a) - _noise(b) for n, k, a, b in cands}
    cands = [c for c in cands if gain[c[:2]] > 0]
    cands.sort(key=lambda c: (c[1] == TABLES, -gain[c[:2]]))
    return cands


def _split(promotions) -> tuple[list[str], list[str]]:
    """(activation layers, weight layers) of [(layer, kind, ...)] promotions."""
    return ([p[0] for p in promotions if p[1] in (ACTIVATIONS, TABLES)],
            [p[0] for p in promotions if p[1] == WEIGHTS])


def auto_precision(float_graph: Graph, ranges: dict, minmax: dict | None, inputs: list,
                   goal_db: float = DEFAULT_GOAL_DB) -> PrecisionChoice:
    """The ``auto`` choice (module docstring).

    Args:
        float_graph: the float graph after the passes. ranges: calibrated int8 ranges.
        minmax: observed {value: (min, max)} (int16 ranges), or None.
        inputs: calibration inputs (float32 NCHW); the first :data:`MAX_AUTO_INPUTS` are used.
        goal_db: the goal: output SQNR at most this many dB below all-int16's (>= 0).
    """
    xs = [inputs[i] for i in range(min(len(inputs), MAX_AUTO_INPUTS))]
    ranking = rank_promotions(float_graph, ranges, minmax, xs)
    floats = [run_float(float_graph, x) for x in xs]

    def sqnr(k: int) -> float:
        acts, wts = _split(ranking[:k])
        q = quantized_copy(float_graph, ranges,
                           _int16_ranges(float_graph, acts, ranges, minmax), wts)
        return output_sqnr(float_graph, q, xs, floats)

    s8, s16 = sqnr(0), sqnr(len(ranking))
    target = s16 - goal_db
    lo, hi = 0, len(ranking)   # invariant: prefix hi meets the target (or is everything)
    found = {0: s8, len(ranking): s16}
    if s8 >= target:
        hi = 0
    while hi - lo > 1:
        mid = (lo + hi) // 2
        found[mid] = sqnr(mid)
        if found[mid] >= target:
            hi = mid
        else:
            lo = mid
    acts, wts = _split(ranking[:hi])
    log.info("precision auto: %d of %d promotions (%d outputs, %d weights int16; output SQNR "
             "%.2f dB; int8 %.2f, all int16 %.2f, goal %.2f)", hi, len(ranking), len(acts),
             len(wts), found[hi], s8, s16, target)
    plan = plan_int16(float_graph, acts, "precision auto", wts)
    return PrecisionChoice("auto", plan, _int16_ranges(float_graph, plan.layers, ranges, minmax),
                           goal_db, {"int8": s8, "chosen": found[hi], "all_int16": s16},
                           ranking)


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
    q = quantized_copy(float_graph, ranges, _int16_ranges(float_graph, acts, ranges, minmax), wts)
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


def check_precision(float_graph: Graph, precision, goal_db: float = DEFAULT_GOAL_DB) -> None:
    """Refuse a bad ``precision`` before any calibration: an unreadable or malformed precision
    file, a name that is no layer of ``float_graph``, a negative or infinite ``auto`` goal.

    Raises:
        InputError: one line naming the file (or "precision") and the problem.
    """
    if precision == "auto" and not 0 <= goal_db < math.inf:
        raise InputError(f"precision_goal_db/--precision-goal {goal_db}: give a finite number "
                         "of dB >= 0 (how far below all-int16's output SQNR auto may stay)")
    given = split_precision(precision)
    if given is not None:
        plan_int16(float_graph, given[0], "precision", given[1])
    elif precision not in MODES:
        acts, wts = read_precision_file(precision)
        plan_int16(float_graph, acts, str(precision), wts)


def choose_precision(float_graph: Graph, ranges: dict, minmax: dict | None, inputs: list,
                     precision, goal_db: float = DEFAULT_GOAL_DB) -> PrecisionChoice:
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
        check_precision(float_graph, precision, goal_db)
        if not inputs:
            raise InputError(f"precision/--precision {precision} needs calibration inputs "
                             "(calibration/--calib), not only a calib_table/--calib-table")
        if precision == "budget":
            return budget_precision(float_graph, ranges, minmax, inputs)
        return auto_precision(float_graph, ranges, minmax, inputs, goal_db)
    acts, wts = read_precision_file(precision)
    plan = plan_int16(float_graph, acts, str(precision), wts)
    return PrecisionChoice("file", plan, _int16_ranges(float_graph, plan.layers, ranges, minmax),
                           source=str(precision))
