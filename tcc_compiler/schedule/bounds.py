"""The scheduling stage's up-front check: refuse, before any search, a network one of whose
conv-like ops (conv, FC, pooling) cannot be tiled into the target's SRAM in at most
:data:`~tcc_compiler.schedule.tiling.MAX_OP_TILES` tiles, naming the op and why.

Why up front: the schedule search memory-plans and lowers several variants of the whole
program; on a hopeless target (MobileOne-S1 200x136 on a 4 KiB SRAM) it used to emit half a
million commands per variant for minutes before finishing or failing on a message naming no
layer. The tile planner itself refuses more than ``MAX_OP_TILES`` tiles in any variant
(:func:`~tcc_compiler.schedule.tiling.plan_conv`), which keeps every lowering linear in the
ops; this check says which op and why at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from tcc_compiler.errors import ScheduleError
from tcc_compiler.ir.graph import Graph, Node
from tcc_compiler.ir.ops import Op
from tcc_compiler.schedule.geom import conv_geom, pool_geom
from tcc_compiler.schedule.tiling import MAX_OP_TILES, ConvGeom, fewest_tiles
from tcc_compiler.target import Target

#: The ops whose tiles :func:`~tcc_compiler.schedule.tiling.plan_conv` plans.
_TILED = (Op.CONV, Op.FC, Op.MAXPOOL, Op.AVGPOOL, Op.GAP)


def _describe(n: Node, g: ConvGeom) -> str:
    """``conv 3x3, 256 -> 256 channels, output 13x9`` (width x height)."""
    return (f"{n.op.value} {g.kh}x{g.kw}, {g.c} -> {g.o} channels, output {g.ow}x{g.oh}")


def _tiled_ops(nodes: Iterable[Node], t: Target,
               source: str = "") -> Iterator[tuple[Node, ConvGeom]]:
    """Each conv-like op of ``nodes`` (in their order) with its tile geometry on ``t``;
    ``source`` (the model file) names a pool window beyond the POOL_CFG fields."""
    for n in nodes:
        if n.op in _TILED:
            yield n, (conv_geom(n, t) if n.op in (Op.CONV, Op.FC) else pool_geom(n, source)[0])


def op_tile_problems(nodes: Iterable[Node], t: Target,
                     source: str = "") -> Iterator[tuple[Node, str]]:
    """Each conv-like op of ``nodes`` that needs more than ``MAX_OP_TILES`` tiles even with
    the whole SRAM for its tile buffers (no resident zone, no operand resident: the largest
    tiles any schedule variant could give it; :func:`fewest_tiles`), with the one-line
    refusal naming it: the op, its shape, the SRAM size, the largest tile that fits, the
    tile count and the remedy. ``tccc ops`` (:func:`tcc_compiler.placement.partition`) lists
    them all; :func:`check_op_tiles` refuses the first.

    An op no tile fits at all is not listed: it is left to the search (a resident operand
    may still let it fit), whose error names it (:func:`name_untileable`).

    Cost: one :func:`fewest_tiles` per conv-like op (memoised; no search, no lowering).
    """
    cap = t.sram_capacity_bytes
    for n, g in _tiled_ops(nodes, t, source):
        fewest = fewest_tiles(g, t, cap)
        if fewest is None or fewest[0] <= MAX_OP_TILES:
            continue
        tiles, rows, cols, ocb = fewest
        yield n, (
            f"layer '{n.name}' ({_describe(n, g)}): in {cap:,} bytes of SRAM its largest tiles "
            f"hold {cols}x{rows} output pixels x {ocb} channels, {tiles:,} tiles, more than "
            f"the {MAX_OP_TILES:,} an op may take (each tile is its own loads, compute and "
            "store); use a target with more SRAM (memory.sram_capacity_bytes)")


def check_op_tiles(graph: Graph, t: Target) -> None:
    """Refuse a graph with a conv-like op that needs more than ``MAX_OP_TILES`` tiles on
    ``t`` (the first of :func:`op_tile_problems`, in execution order).

    Raises:
        ScheduleError: its one line (:func:`op_tile_problems`).
    """
    first = next(op_tile_problems(graph.nodes, t, graph.meta.get("source", "")), None)
    if first is not None:
        raise ScheduleError(first[1])


def name_untileable(graph: Graph, t: Target, exc: ScheduleError) -> ScheduleError:
    """``exc`` (the search found no variant it could lower) naming the first conv-like op
    that no tile fits in the whole SRAM (no operand resident), when there is one: the search's
    own error names only the op's shape. Returns ``exc`` unchanged otherwise."""
    for n, g in _tiled_ops(graph.nodes, t, graph.meta.get("source", "")):
        if fewest_tiles(g, t, t.sram_capacity_bytes) is None:
            return ScheduleError(f"layer '{n.name}' ({_describe(n, g)}): {exc}")
    return exc
