"""Print a graph IR as text (the ``.tir`` format parsed by :mod:`tcc_compiler.ir.parser`).

The text is MLIR-like, one declaration per line (see ``specs/ir.md`` and the grammar
``ir.lark``)::

    graph "resnet50" {
      meta source : str = "resnet50.onnx"
      input %input : f32[1,3,224,224]
      const %w : f32[64,3,7,7] = @w
      const %b : f32[64] = @b
      %y : f32[1,64,112,112] = conv "/conv1/Conv" (%input, %w, %b) {kernel=[7,7], ...}
      output %y
    }

Constants with more than ``inline_limit`` elements (and quantization arrays that large) are
not printed: they go to a :class:`ConstTable` (saved as an ``.npz`` sidecar) and the text
holds a typed reference ``@key``. Floats are printed so that parsing gives back the same bits.
The output is deterministic: the same graph always prints to the same text.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import logging
import math
import re
from typing import Any, Iterator

import numpy as np

from tcc_compiler.errors import InternalError
from tcc_compiler.ir.graph import Graph, Node, QuantParams, Value

log = logging.getLogger(__name__)

#: numpy dtype name -> element type spelling in the text.
DTYPE_TO_TEXT: dict[str, str] = {
    "float16": "f16", "float32": "f32", "float64": "f64",
    "int8": "i8", "int16": "i16", "int32": "i32", "int64": "i64",
    "uint8": "u8", "uint16": "u16", "uint32": "u32", "uint64": "u64",
    "bool": "bool",
}
#: element type spelling -> numpy dtype name.
TEXT_TO_DTYPE: dict[str, str] = {v: k for k, v in DTYPE_TO_TEXT.items()}

#: Python types allowed as ``Graph.meta`` values, by the type name printed for them.
META_TYPES: dict[str, type] = {"str": str, "int": int, "float": float, "bool": bool}

_BARE_NAME = re.compile(r"[A-Za-z0-9_.$/\-]+")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]")
_WRAP_COLS = 100
_CONT_INDENT = " " * 6


class ConstTable:
    """Arrays moved out of the text into the ``.npz`` sidecar, by reference key.

    Keys are derived from value names (characters outside ``[A-Za-z0-9_.-]`` become ``_``)
    and made unique with a ``_<k>`` suffix, so the same graph always gets the same keys.

    Attributes:
        arrays: {key: numpy array}, in insertion order; arrays keep their dtype and shape.
    """

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}

    def add(self, base: str, array: np.ndarray) -> str:
        """Store ``array`` under a fresh key derived from ``base``; return the key."""
        key = _KEY_UNSAFE.sub("_", base) or "_"
        if key in self.arrays:
            k = 1
            while f"{key}_{k}" in self.arrays:
                k += 1
            key = f"{key}_{k}"
        self.arrays[key] = np.asarray(array)
        return key

    def __len__(self) -> int:
        return len(self.arrays)

    def __contains__(self, key: object) -> bool:
        return key in self.arrays

    def __getitem__(self, key: str) -> np.ndarray:
        return self.arrays[key]

    def keys(self) -> Iterator[str]:
        """The keys, in insertion order."""
        return iter(self.arrays)

    def total_elems(self) -> int:
        """Number of array elements held (all arrays)."""
        return sum(int(a.size) for a in self.arrays.values())


# ---- scalar and name spelling -------------------------------------------------------------
def value_ref(name: str) -> str:
    """``%name`` for a value: bare when the name is made of ``[A-Za-z0-9_.$/-]``, else quoted."""
    return "%" + (name if _BARE_NAME.fullmatch(name) else json.dumps(name))


def const_ref(key: str) -> str:
    """``@key`` for a sidecar array (quoted like :func:`value_ref` when needed)."""
    return "@" + (key if _BARE_NAME.fullmatch(key) else json.dumps(key))


def quote(s: str) -> str:
    """A string literal (JSON escapes, ASCII only)."""
    return json.dumps(s)


def format_float(x: Any) -> str:
    """Spell a float so that parsing it back (``float()`` then cast) gives the same bits.

    float64 (and Python floats) use ``repr``; narrower numpy floats use numpy's shortest
    spelling for their own type when it reads back exactly, else the float64 ``repr`` (exact,
    since every narrower float is a float64). Non-finite values are ``nan``, ``inf``, ``-inf``.
    """
    f = float(x)
    if math.isnan(f):
        return "nan"
    if math.isinf(f):
        return "inf" if f > 0 else "-inf"
    if isinstance(x, np.floating) and x.dtype != np.float64:
        s = str(x)
        if np.asarray(float(s), dtype=x.dtype).tobytes() == np.asarray(x).tobytes():
            return s if any(c in s for c in ".e") else s + ".0"
    return repr(f)


def format_dtype(dtype: Any) -> str:
    """Element type spelling of a numpy dtype (``f32``, ``i8``, ...).

    Raises:
        InternalError: a dtype the text format has no spelling for.
    """
    name = np.dtype(dtype).name
    if name not in DTYPE_TO_TEXT:
        raise InternalError(f"printer: dtype {name!r} has no IR spelling "
                            f"(known: {', '.join(DTYPE_TO_TEXT)})")
    return DTYPE_TO_TEXT[name]


def format_type(shape: tuple[int, ...], dtype: Any) -> str:
    """``f32[1,3,224,224]``; ``f32[]`` for a scalar.

    Raises:
        InternalError: a dtype the text format has no spelling for.
    """
    return f"{format_dtype(dtype)}[{','.join(str(int(d)) for d in shape)}]"


def _format_elem(x: Any) -> str:
    if isinstance(x, (np.bool_, bool)):
        return "true" if x else "false"
    if isinstance(x, (np.integer, int)):
        return str(int(x))
    return format_float(x)


def format_elems(array: np.ndarray) -> str:
    """``[e0, e1, ...]``: the elements of ``array`` flattened in C order."""
    flat = np.asarray(array).reshape(-1)
    return "[" + ", ".join(_format_elem(x) for x in flat) + "]"


# ---- attributes -----------------------------------------------------------------------------
def format_attr_value(v: Any) -> str:
    """Spell one attribute value: ints, floats, bools, strings, enums (bare identifier),
    tuples (``[a, b]``) and enum-led dataclasses such as ``Activation`` (``relu``, or
    ``clip(0.0, 6.0)`` when the remaining fields differ from their defaults).

    Raises:
        InternalError: a value type the text format cannot spell.
    """
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, enum.Enum):
        return str(v.value)
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return format_float(v)
    if isinstance(v, str):
        return quote(v)
    if isinstance(v, (tuple, list)):
        sep = "," if all(isinstance(x, (int, np.integer)) for x in v) else ", "
        return "[" + sep.join(format_attr_value(x) for x in v) + "]"
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        fields = dataclasses.fields(v)
        head = format_attr_value(getattr(v, fields[0].name))
        rest = [getattr(v, f.name) for f in fields[1:]]
        defaults = [f.default for f in fields[1:]]
        if all(format_attr_value(a) == format_attr_value(d) for a, d in zip(rest, defaults)):
            return head
        return f"{head}(" + ", ".join(format_attr_value(a) for a in rest) + ")"
    raise InternalError(f"printer: cannot spell attribute value {v!r} ({type(v).__name__})")


def format_attrs(attrs: Any) -> str:
    """``{k=v, ...}`` over every field of an op's attrs dataclass; "" when it has none."""
    fields = dataclasses.fields(attrs)
    if not fields:
        return ""
    return "{" + ", ".join(f"{f.name}={format_attr_value(getattr(attrs, f.name))}"
                           for f in fields) + "}"


# ---- the printer ----------------------------------------------------------------------------
class _Printer:
    def __init__(self, consts: ConstTable | None, inline_limit: int):
        # Without a caller's table, a scratch one (holding references, not copies) still
        # gives the keys a saved file would have.
        self.consts = consts if consts is not None else ConstTable()
        self.inline_limit = inline_limit

    def ref(self, base: str, array: np.ndarray) -> str:
        """A sidecar reference ``@key``; the array goes into the table under ``key``."""
        return const_ref(self.consts.add(base, array))

    def quant(self, name: str, q: QuantParams | None) -> str:
        if q is None:
            return ""
        parts = [f"scale={self.quant_array(name + '.scale', q.scale)}",
                 f"zp={self.quant_array(name + '.zp', q.zero_point)}"]
        if q.axis is not None:
            parts.append(f"axis={int(q.axis)}")
        return " quant(" + ", ".join(parts) + ")"

    def quant_array(self, base: str, a: np.ndarray) -> str:
        a = np.asarray(a)
        if a.ndim == 0:
            return _format_elem(a[()])
        if a.ndim == 1 and a.size <= self.inline_limit:
            return format_elems(a)
        return self.ref(base, a)

    def typed(self, v: Value) -> str:
        return f"{value_ref(v.name)} : {format_type(v.shape, v.dtype)}{self.quant(v.name, v.quant)}"

    def payload(self, v: Value) -> str:
        arr = np.asarray(v.const)
        body = f"dense<{format_elems(arr)}>" if arr.size <= self.inline_limit \
            else self.ref(v.name, arr)
        if arr.dtype.name != np.dtype(v.dtype).name:
            body += f" : {format_dtype(arr.dtype)}"
        return body

    def node(self, node: Node, lines: list[str]) -> None:
        results = ", ".join(self.typed(v) for v in node.outputs)
        operands = ", ".join("_" if v is None else value_ref(v.name) for v in node.inputs)
        head = f"  {results} = {node.op.value} {quote(node.name)} ({operands})"
        tail = [t for t in (format_attrs(node.attrs),
                            ("src=[" + ", ".join(quote(s) for s in node.source) + "]")
                            if node.source else "") if t]
        one_line = " ".join([head] + tail)
        if len(one_line) <= _WRAP_COLS or not tail:
            lines.append(one_line)
        else:
            lines.append(head)
            lines.extend(_CONT_INDENT + t for t in tail)


def _meta_lines(meta: dict) -> list[str]:
    lines = []
    for key, val in meta.items():
        if not isinstance(key, str):
            log.debug("meta key %r skipped: not a string", key)
            continue
        if isinstance(val, np.generic) and isinstance(val, (np.bool_, np.integer, np.floating)):
            val = val.item()
        if isinstance(val, bool):
            tname, text = "bool", "true" if val else "false"
        elif isinstance(val, int):
            tname, text = "int", str(val)
        elif isinstance(val, float):
            tname, text = "float", format_float(val)
        elif isinstance(val, str):
            tname, text = "str", quote(val)
        else:
            log.debug("meta %r skipped: %s is not str/int/float/bool", key, type(val).__name__)
            continue
        spelled = key if _IDENT.fullmatch(key) and key not in _KEYWORDS else quote(key)
        lines.append(f"  meta {spelled} : {tname} = {text}")
    return lines


_KEYWORDS = frozenset({"graph", "meta", "input", "const", "undef", "output", "quant", "src",
                       "dense", "true", "false", "inf", "nan"})


def print_graph(graph: Graph, consts: ConstTable | None = None, inline_limit: int = 16) -> str:
    """Print ``graph`` as ``.tir`` text.

    Args:
        graph: any graph IR (float, fused, quantized; need not be verified or in topological
            order). Shapes and layouts are printed as stored (activations NCHW, weights OIHW).
        consts: collects every array with more than ``inline_limit`` elements (constant
            payloads, per-channel scales and zero points) for the ``.npz`` sidecar. When None,
            such arrays are printed only as ``@key`` references and dropped: fine for dumps,
            but the text then cannot be parsed without the arrays.
        inline_limit: largest element count printed inline as ``dense<[...]>``.

    Returns:
        The text, ending with a newline. ``meta`` entries whose value is not a str, int, float
        or bool (numpy scalars are converted) are skipped.

    Raises:
        InternalError: a dtype or attribute value the format cannot spell.
    """
    p = _Printer(consts, inline_limit)
    lines = [f"graph {quote(graph.name)} {{"]
    lines += _meta_lines(graph.meta)
    input_ids = {id(v) for v in graph.inputs}
    node_ids = {id(n) for n in graph.nodes}
    for v in graph.inputs:
        lines.append(f"  input {p.typed(v)}")
    for v in graph.values():
        if id(v) in input_ids:
            continue
        if v.const is not None and v.producer is None:
            lines.append(f"  const {p.typed(v)} = {p.payload(v)}")
        elif v.producer is None or id(v.producer) not in node_ids:
            lines.append(f"  undef {p.typed(v)}")
    for node in graph.nodes:
        p.node(node, lines)
    lines.append(" ".join(["  output"] + [", ".join(value_ref(v.name) for v in graph.outputs)])
                 .rstrip())
    lines.append("}")
    return "\n".join(lines) + "\n"
