"""Mixed precision: which activations are int16 (specs/quantization.md, "Mixed precision").

A *layer* (an NPU node, named as ``tccc analyze`` and the IR dumps show it) is promoted by
making its output tensor int16: symmetric, zero point 0, ``s = 2 max(|lo|, |hi|) / 32767``
from the tensor's observed min/max (with 65535 levels the rounding noise is negligible, so
clipping would only add error; the factor 2 is room for inputs beyond the calibration's:
quant/quantize.py ``INT16_HEADROOM``). Weights stay int8 per channel, accumulators 32-bit.

A tensor can be int16 only where every op touching it can take int16, so the planner leaves it
int8 (with the reason) when

* its producer is not a conv, depthwise conv, fc or add (pools and views follow their input:
  promote the layer before them), or the conv/fc output is already raw int32, or a
  pre-quantized model fixes its parameters; a lookup-table activation's output can be int16
  only where the conv before it runs the table in its epilogue with an int16 input
  (:func:`table_conv`: promoting the lut promotes that conv too, and the 257 knots are
  int16 outputs, CONV_CFG out_mode bit3);
* it, or a tensor sharing its parameters through a max/average/global pool or a view, is read
  by an op that is int8 only: a lookup-table activation (its table has 256 entries; except
  a conv's output read only by one single-table lut, which then interpolates 257 int16 knots
  in the conv's epilogue: :func:`wide_lut_reader`), a sub/mul or a nearest resize.

A tensor tied to a channel concat/slice/interleave shares one parameter set with the rest of
its group (quant/groups.py), so the group is promoted as a whole: promoting any of its
producers promotes every producer of the group (the concat's buffer is then int16 and its
views address 2-byte elements), and the group stays int8 (with the reason) when one of its
members is the network input or written by an op whose output cannot be int16, or one of
them is read by an int8-only op.

A conv/fc layer's *weights* are promoted separately (int16 symmetric per output channel,
``s_w = max|W[o]| / 32767``, a 64-bit accumulator: specs/quantization.md "int16 weights");
the planner keeps them int8 (with the reason) when the layer is no conv/fc, a pre-quantized
model fixes them, its output is raw int32 (the 64-bit accumulator has no int32 output mode),
or its ``K = kh * kw * C/group`` could pass the accumulator bound
``K * 65535 * 32767 < WIDE_W_ACC_LIMIT`` (isa/spec.py; K < 65,536).
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field

from tcc_compiler.errors import InputError
from tcc_compiler.ir.graph import Graph, Node, Value
from tcc_compiler.ir.ops import CHANNEL_OPS, HOST_OPS, VIEW_OPS, Op
from tcc_compiler.isa.spec import WIDE_W_ACC_LIMIT
from tcc_compiler.quant.groups import tied_groups
from tcc_compiler.quant.params import epilogue_lut

log = logging.getLogger(__name__)

#: Ops whose output can be int16.
INT16_PRODUCERS = frozenset({Op.CONV, Op.FC, Op.ADD})
#: Ops whose output takes its input's parameters (and width): an int16 input makes them int16.
FOLLOWERS = VIEW_OPS | {Op.MAXPOOL, Op.AVGPOOL, Op.GAP}
#: Ops that can read an int16 tensor (host ops read it dequantized).
INT16_READERS = INT16_PRODUCERS | FOLLOWERS | HOST_OPS
#: Keys of a precision file: layers whose output is int16, layers whose weights are int16.
FILE_KEY = "int16"
WEIGHTS_KEY = "int16_weights"
#: Largest ``|x - zp|`` of an int16 input: the accumulator bound of int16 weights uses it
#: whatever the input's width (the planner runs before the widths are settled).
_X_BOUND = 65535
_W_BOUND = 32767


@dataclass
class Int16Plan:
    """The result of :func:`plan_int16`.

    Attributes:
        layers: names of the layers whose output is int16 (in graph order).
        values: names of every int16 tensor (the layers' outputs and the pool/view outputs
            that follow them).
        kept_int8: {layer name: why its output stays int8} for the layers asked for that
            cannot be promoted.
        weight_layers: names of the conv/fc layers whose weights are int16 (graph order).
        kept_int8_weights: {layer name: why its weights stay int8} for those asked for that
            cannot be.
    """

    layers: list[str] = field(default_factory=list)
    values: set[str] = field(default_factory=set)
    kept_int8: dict[str, str] = field(default_factory=dict)
    weight_layers: list[str] = field(default_factory=list)
    kept_int8_weights: dict[str, str] = field(default_factory=dict)


def layer_nodes(graph: Graph) -> dict[str, Node]:
    """{name: node} of the graph's layers (NPU nodes; views and host ops are not layers)."""
    return {n.name: n for n in graph.nodes if n.op not in HOST_OPS and n.op not in VIEW_OPS}


def follower_group(v: Value) -> list[Value]:
    """``v`` and the outputs of the pools/views that take its parameters, transitively."""
    group, todo = [], [v]
    while todo:
        x = todo.pop()
        group.append(x)
        todo += [u.output for u, i in x.uses if u.op in FOLLOWERS and i == 0]
    return group


def groups_by_value(graph: Graph) -> dict[int, list[Value]]:
    """id(value) -> the members of its channel concat/slice group (quant/groups.py), for every
    value in such a group."""
    return {id(v): members for members in tied_groups(graph) for v in members}


def _own_blocker(node: Node) -> str | None:
    """Why ``node``'s output cannot be int16 whoever reads it; None when it can."""
    out = node.output
    if node.op not in INT16_PRODUCERS:
        return (f"{node.op.value} output follows its input's precision (promote the layer "
                "before it)" if node.op in FOLLOWERS else f"{node.op.value} is int8 only")
    if out.quant is not None and out.dtype == "float32":
        return "its quantization is fixed by the pre-quantized model"
    if node.op in (Op.CONV, Op.FC) and all(u.op in HOST_OPS for u, _ in out.uses) \
            and node.input(3) is None and node.attrs.act.kind.value == "none":
        return "its output is already raw int32"
    if node.input(5) is not None:   # passes/fold_after_act.py; isa/spec.py clamp bytes
        return "its per-channel clamp (a folded BatchNorm after its activation) is int8 only"
    return None


def group_producers(members: list[Value]) -> list[Node]:
    """The nodes of a concat group that compute a member (not channel ops nor the pools and
    views that follow their input): the layers promoted together."""
    return [v.producer for v in members if v.producer is not None
            and v.producer.op not in CHANNEL_OPS and v.producer.op not in FOLLOWERS]


def _group_blocker(members: list[Value]) -> str | None:
    """Why a channel concat/slice group cannot be int16 as a whole (module docstring)."""
    for v in members:
        if v.producer is None:
            return f"its concat group holds the network input '{v.name}' (int8)"
        for u, _ in v.uses:
            if u.op not in CHANNEL_OPS and u.op not in INT16_READERS:
                return (f"its concat group's '{v.name}' is read by {u.op.value} '{u.name}', "
                        "which is int8 only")
    for p in group_producers(members):
        why = _own_blocker(p)
        if why is not None:
            return f"its concat group's producer '{p.name}': {why}"
    return None


def int16_blocker(node: Node, graph: Graph, groups: dict | None = None) -> str | None:
    """Why ``node``'s output cannot be int16 (module docstring); None when it can.
    ``groups``: :func:`groups_by_value` of ``graph`` when the caller has it."""
    if node.op is Op.LUT and table_conv(node, graph) is not None:   # int16 -> int16 knots
        return _readers_blocker(node.output)
    why = _own_blocker(node)
    if why is not None:
        return why
    if wide_lut_reader(node, graph) is not None:   # its table then interpolates int16
        return None
    members = (groups if groups is not None else groups_by_value(graph)).get(id(node.output))
    if members is not None:
        return _group_blocker(members)
    return _readers_blocker(node.output)


def _readers_blocker(out: Value) -> str | None:
    """Why ``out`` (and the pools/views following it) cannot be int16 for its readers: a
    channel op (a table output in a concat group stays int8: only the group's producers are
    promoted together, :func:`_group_blocker`) or an int8-only op; None when every reader
    takes int16."""
    for x in follower_group(out):
        for u, _ in x.uses:
            if u.op in CHANNEL_OPS:
                return f"'{x.name}' is read by {u.op.value} '{u.name}' (one shared int8 set)"
            if u.op not in INT16_READERS:
                return f"'{x.name}' is read by {u.op.value} '{u.name}', which is int8 only"
    return None


def table_conv(lut: Node, graph: Graph) -> Node | None:
    """The conv whose epilogue runs lookup-table op ``lut`` with an int16 input, when the
    table's *output* can be int16 too, else None: ``lut`` is that conv's
    :func:`wide_lut_reader` and the conv's output can be int16 (:func:`int16_blocker`).
    Promoting the lut then promotes the conv with it: CONV_CFG out_mode bit3 interpolates
    257 knots that are int16 outputs (specs/quantization.md, "int16-input lookup tables");
    there is no int8 -> int16 table."""
    p = lut.inputs[0].producer
    if p is None or p.op is not Op.CONV or wide_lut_reader(p, graph) is not lut:
        return None
    return p if int16_blocker(p, graph) is None else None


def with_table_convs(graph: Graph, layers) -> list[str]:
    """``layers`` (names) with, before each lut whose output can be int16 (:func:`table_conv`,
    :func:`int16_blocker`), the conv feeding it, each name once, in the given order."""
    nodes = layer_nodes(graph)
    out: list[str] = []
    for name in layers:
        node = nodes.get(name)
        conv = table_conv(node, graph) if node is not None and node.op is Op.LUT else None
        if conv is not None and int16_blocker(node, graph) is None:
            out.append(conv.name)
        out.append(name)
    return list(dict.fromkeys(out))


def wide_lut_reader(node: Node, graph: Graph) -> Node | None:
    """The lookup-table op that can read conv ``node``'s output as int16, else None: the
    output's only reader, as input 0, with one shared table (no per-channel prelu), and the
    output no graph output, so the scheduler runs the table in the conv's epilogue
    (schedule/epilogue.py; 257 int16 knots interpolated, specs/quantization.md "int16-input
    lookup tables"; LUT_TILE itself is int8 only)."""
    out = node.output
    if node.op is not Op.CONV or any(o is out for o in graph.outputs):
        return None
    return epilogue_lut(out)


def weights_blocker(node: Node, graph: Graph) -> str | None:
    """Why ``node``'s weights cannot be int16 (module docstring); None when they can."""
    if node.op not in (Op.CONV, Op.FC):
        return f"{node.op.value} has no weights"
    if node.inputs[1].quant is not None and node.inputs[1].dtype == "float32":
        return "its weights' quantization is fixed by the pre-quantized model"
    if all(u.op in HOST_OPS for u, _ in node.output.uses) and node.input(3) is None \
            and node.attrs.act.kind.value == "none":
        return "its output is raw int32 (int16 weights need a requantized output)"
    k = math.prod(node.inputs[1].shape[1:])
    if k * _X_BOUND * _W_BOUND >= WIDE_W_ACC_LIMIT:
        return (f"K = {k} products per output could pass the 64-bit accumulator's bound "
                f"(K * 65535 * 32767 < 2**47 - 2**31)")
    return None


def _check_names(nodes: dict, names: list[str], source: str) -> None:
    """Refuse names that are no layer (one line naming ``source``, each name once however
    many lists give it)."""
    unknown = list(dict.fromkeys(x for x in names if x not in nodes))
    if unknown:
        some = ", ".join(list(nodes)[:3])
        raise InputError(f"{source}: no layer named {', '.join(repr(u) for u in unknown[:5])} "
                         f"in the model (layer names as 'tccc analyze' lists them, e.g. {some})")


def plan_int16(graph: Graph, layers, source: str = "precision",
               weight_layers=()) -> Int16Plan:
    """Which tensors become int16 when ``layers`` are promoted, and which layers' weights are
    int16 when ``weight_layers`` are.

    Args:
        graph: the float graph after the float passes (before quantization).
        layers: layer (node) names whose output is to be int16, as ``tccc analyze`` lists them.
        source: where the names came from, for the error message (e.g. the precision file).
        weight_layers: conv/fc layer names whose weights are to be int16.

    Returns:
        :class:`Int16Plan`; a layer that cannot be promoted stays int8 and is logged (INFO)
        with its reason; a layer whose output is tied to a channel concat/slice brings every
        producer of that group into ``layers`` (module docstring).

    Raises:
        InputError: a name that is no layer of the model (one line naming ``source``).
    """
    nodes = layer_nodes(graph)
    wanted = list(dict.fromkeys(layers))
    wanted_w = list(dict.fromkeys(weight_layers))
    _check_names(nodes, wanted + wanted_w, source)
    wanted = with_table_convs(graph, wanted)   # an int16 table output needs its conv's
    plan = Int16Plan()
    groups = groups_by_value(graph)
    for name in (n.name for n in graph.nodes if n.name in set(wanted_w)):
        why = weights_blocker(nodes[name], graph)
        if why is not None:
            plan.kept_int8_weights[name] = why
            log.info("precision: layer '%s' keeps int8 weights: %s", name, why)
        else:
            plan.weight_layers.append(name)
    promoted: set[str] = set()
    for name in (n.name for n in graph.nodes if n.name in set(wanted)):
        why = int16_blocker(nodes[name], graph, groups)
        if why is not None:
            plan.kept_int8[name] = why
            log.info("precision: layer '%s' stays int8: %s", name, why)
            continue
        members = groups.get(id(nodes[name].output))
        if members is None:
            promoted.add(name)
            plan.values.update(v.name for v in follower_group(nodes[name].output))
        else:   # the whole concat group together (module docstring)
            promoted.update(p.name for p in group_producers(members))
            plan.values.update(v.name for v in members)
    plan.layers = [n.name for n in graph.nodes if n.name in promoted]
    return plan


def read_precision_file(path: str | os.PathLike) -> tuple[list[str], list[str]]:
    """The layer names of a precision file: JSON ``{"int16": ["layer", ...],
    "int16_weights": ["layer", ...]}`` (either key may be left out, not both): the layers
    whose output is int16 and those whose weights are int16.

    Returns:
        (output layers, weight layers).

    Raises:
        InputError: unreadable file, invalid JSON, another shape (one line naming the file).
    """
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as exc:
        raise InputError(f"{path}: cannot read the precision file ({exc.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a JSON precision file ({exc})") from None
    keys = (FILE_KEY, WEIGHTS_KEY)
    if not isinstance(data, dict) or not data or not set(data) <= set(keys):
        raise InputError(f'{path}: a precision file is {{"{FILE_KEY}": [layer names], '
                         f'"{WEIGHTS_KEY}": [layer names]}} (either key optional), got '
                         f"keys {sorted(data) if isinstance(data, dict) else type(data).__name__}")
    for key in keys:
        names = data.get(key, [])
        if not isinstance(names, list) or not all(isinstance(x, str) and x for x in names):
            raise InputError(f'{path}: "{key}" must be a list of layer names (strings)')
    return data.get(FILE_KEY, []), data.get(WEIGHTS_KEY, [])
