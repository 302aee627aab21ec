"""Parse ``.tir`` text (see ``specs/ir.md``) back into a graph IR.

The grammar is ``ir.lark`` next to this module (LALR(1), contextual lexer). Parsing is two
phases: first every declared value (inputs, constants, node results) is created, so a node may
name a value defined further down (a dump taken mid-pass need not be in topological order);
then the nodes are built in text order through :meth:`Graph.add_node`, so producers and use
lists are right. Attributes are checked against :data:`ATTRS_OF_OP` using the attrs
dataclasses' type hints.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
import math
import typing
from pathlib import Path
from typing import Any, Mapping

import lark
import numpy as np

from tcc_compiler.errors import FormatError, TccError
from tcc_compiler.ir import ops
from tcc_compiler.ir.graph import Graph, QuantParams, Value
from tcc_compiler.ir.ops import ATTRS_OF_OP, Op
from tcc_compiler.ir.printer import META_TYPES, TEXT_TO_DTYPE

GRAMMAR_PATH = Path(__file__).with_name("ir.lark")
_OPS = {op.value: op for op in Op}


@functools.lru_cache(maxsize=1)
def _lark() -> lark.Lark:
    """The LALR parser, built once from the grammar file."""
    return lark.Lark(GRAMMAR_PATH.read_text(encoding="utf-8"), parser="lalr",
                     lexer="contextual", maybe_placeholders=True)


class _Fail(Exception):
    """A semantic error at a token (turned into FormatError with line:column)."""

    def __init__(self, tok: Any, msg: str):
        super().__init__(msg)
        self.tok = tok
        self.msg = msg


def _pos(tok: Any) -> str:
    line = getattr(tok, "line", None)
    col = getattr(tok, "column", None)
    if line is None and isinstance(tok, lark.Tree) and tok.children:
        return _pos(next((c for c in tok.children if c is not None), None))
    return f"{line}:{col}" if line is not None else "?:?"


def _unquote(tok: lark.Token, sigil: int = 0) -> str:
    text = str(tok)[sigil:]
    if text.startswith('"'):
        try:
            out = json.loads(text)
        except ValueError as exc:
            raise _Fail(tok, f"bad string escape in {text} ({exc.msg})") from None
        if not isinstance(out, str):
            raise _Fail(tok, f"bad string {text}")
        return out
    return text


def _dtype(tok: lark.Token) -> str:
    if str(tok) not in TEXT_TO_DTYPE:
        raise _Fail(tok, f"unknown element type '{tok}' (known: {', '.join(TEXT_TO_DTYPE)})")
    return TEXT_TO_DTYPE[str(tok)]


def _int(tok: lark.Token) -> int:
    return int(str(tok))


def _number(tok: lark.Token) -> float:
    return float(str(tok))


def _elems(tok: lark.Token, body: str, dtype: str, count: int | None, what: str) -> np.ndarray:
    """Flat element list ``[a, b, ...]`` text -> 1-D array of ``dtype``."""
    inner = body.strip()[1:-1].strip()
    parts = [p.strip() for p in inner.split(",")] if inner else []
    kind = np.dtype(dtype).kind
    try:
        if kind == "b":
            table = {"true": True, "false": False, "1": True, "0": False}
            vals: list = [table[p] for p in parts]
        elif kind in "iu":
            vals = [int(p) for p in parts]
        else:
            vals = [float(p) for p in parts]
        arr = np.array(vals, dtype=dtype) if vals else np.zeros(0, dtype=dtype)
    except (KeyError, ValueError, OverflowError) as exc:
        raise _Fail(tok, f"{what}: bad {dtype} element ({exc})") from None
    if kind in "iu" and arr.size and any(int(a) != v for a, v in zip(arr.tolist(), vals)):
        raise _Fail(tok, f"{what}: element out of {dtype} range")
    if count is not None and arr.size != count:
        raise _Fail(tok, f"{what}: {arr.size} elements, the type needs {count}")
    return arr


class _Builder:
    def __init__(self, consts: Mapping[str, np.ndarray] | None):
        self.consts = consts
        self.values: dict[str, Value] = {}
        self.graph = Graph()
        self.node_names: set[str] = set()

    # ---- sidecar ----------------------------------------------------------------------------
    def sidecar(self, tok: lark.Token, what: str) -> np.ndarray:
        key = _unquote(tok, 1)
        if self.consts is None:
            raise _Fail(tok, f"{what} refers to sidecar array @{key} but no sidecar (.npz) "
                        "was given")
        try:
            if key not in self.consts:
                raise _Fail(tok, f"{what}: sidecar array @{key} not found")
            return np.asarray(self.consts[key])
        except _Fail:
            raise
        except Exception as exc:  # a corrupt npz member raises zipfile/ValueError/OSError
            raise _Fail(tok, f"{what}: cannot read sidecar array @{key} "
                        f"({type(exc).__name__}: {exc})") from None

    # ---- types and quantization ---------------------------------------------------------------
    def typed(self, name_tok: lark.Token, type_tree: lark.Tree,
              quant_tree: lark.Tree | None) -> Value:
        name = _unquote(name_tok, 1)
        if name in self.values:
            raise _Fail(name_tok, f"value %{name} defined twice")
        dt_tok, *dims = type_tree.children
        shape = tuple(_int(d) for d in dims if d is not None)
        if any(d < 0 for d in shape):
            raise _Fail(type_tree.children[0], f"value %{name}: negative dimension in {shape}")
        v = Value(name, shape, _dtype(dt_tok))
        if quant_tree is not None:
            v.quant = self.quant(name, quant_tree)
        self.values[name] = v
        return v

    def quant(self, name: str, tree: lark.Tree) -> QuantParams:
        args: dict[str, Any] = {}
        for qarg in tree.children:
            key_tok, val = qarg.children
            key = str(key_tok)
            if key not in ("scale", "zp", "axis"):
                raise _Fail(key_tok, f"value %{name}: unknown quant field '{key}' "
                            "(known: scale, zp, axis)")
            if key in args:
                raise _Fail(key_tok, f"value %{name}: quant field '{key}' given twice")
            args[key] = self.quant_field(name, key_tok, key, val)
        for need in ("scale", "zp"):
            if need not in args:
                raise _Fail(tree.children[0].children[0],
                            f"value %{name}: quant(...) misses '{need}'")
        return QuantParams(args["scale"], args["zp"], args.get("axis"))

    def quant_field(self, name: str, key_tok: lark.Token, key: str, val: Any) -> Any:
        what = f"value %{name}: quant {key}"
        if key == "axis":
            if not (isinstance(val, lark.Token) and val.type == "INT"):
                raise _Fail(key_tok, f"{what} must be an integer")
            return _int(val)
        dtype = "float64" if key == "scale" else "int64"
        if isinstance(val, lark.Tree) and val.data == "ref":
            arr = self.sidecar(val.children[0], what)
            if arr.dtype.kind not in ("f" if key == "scale" else "iu"):
                raise _Fail(val.children[0], f"{what}: sidecar array has dtype {arr.dtype}")
            return arr.astype(dtype)
        if isinstance(val, lark.Tree) and val.data == "numlist":
            return _quant_list(val, key, key_tok, what, dtype)
        if key == "zp" and val.type != "INT":
            raise _Fail(val, f"{what} must be an integer")
        return np.array(_int(val) if key == "zp" else _number(val), dtype=dtype)

    # ---- declarations -----------------------------------------------------------------------
    def meta(self, tree: lark.Tree) -> None:
        key_tok, type_tok, lit = tree.children
        key = _unquote(key_tok)
        tname = str(type_tok)
        if tname not in META_TYPES:
            raise _Fail(type_tok, f"meta {key}: unknown type '{tname}' (known: "
                        f"{', '.join(META_TYPES)})")
        kind = lit.data
        if tname == "str" and kind == "string":
            val: Any = _unquote(lit.children[0])
        elif tname == "int" and kind == "int":
            val = _int(lit.children[0])
        elif tname == "float" and kind in ("int", "float"):
            val = _number(lit.children[0])
        elif tname == "bool" and kind in ("true", "false"):
            val = kind == "true"
        else:
            raise _Fail(type_tok, f"meta {key}: a {kind} literal is not a {tname}")
        if key in self.graph.meta:
            raise _Fail(key_tok, f"meta {key} given twice")
        self.graph.meta[key] = val

    def const(self, tree: lark.Tree) -> None:
        name_tok, type_tree, quant_tree, payload = tree.children
        v = self.typed(name_tok, type_tree, quant_tree)
        body_tok, dt_tok = payload.children
        dtype = _dtype(dt_tok) if dt_tok is not None else v.dtype
        what = f"const %{v.name}"
        count = math.prod(v.shape)
        if body_tok.type == "DENSE":
            arr = _elems(body_tok, str(body_tok)[len("dense<"):-1], dtype, count, what)
            arr = arr.reshape(v.shape)
        else:
            arr = self.sidecar(body_tok, what)
            if arr.dtype != np.dtype(dtype):
                raise _Fail(body_tok, f"{what}: sidecar array has dtype {arr.dtype}, the IR "
                            f"says {dtype}")
            if tuple(arr.shape) != v.shape:
                raise _Fail(body_tok, f"{what}: sidecar array has shape {tuple(arr.shape)}, "
                            f"the IR says {v.shape}")
        v.const = arr

    # ---- nodes ------------------------------------------------------------------------------
    def node_results(self, tree: lark.Tree) -> list[Value]:
        results = [c for c in tree.children if isinstance(c, lark.Tree) and c.data == "result"]
        return [self.typed(*r.children) for r in results]

    def operand(self, o: lark.Tree, node: str) -> Value | None:
        """One operand of node ``node``: the named value, or None where absent."""
        if o.data == "absent":
            return None
        vname = _unquote(o.children[0], 1)
        if vname not in self.values:
            raise _Fail(o.children[0], f"node \"{node}\": undefined value %{vname}")
        return self.values[vname]

    def node(self, tree: lark.Tree, outputs: list[Value]) -> None:
        rest = [c for c in tree.children if not (isinstance(c, lark.Tree) and c.data == "result")]
        op_tok, name_tok, *middle = rest
        attrs_tree = next((c for c in middle if isinstance(c, lark.Tree) and c.data == "attrs"),
                          None)
        src_tree = next((c for c in middle if isinstance(c, lark.Tree) and c.data == "source"),
                        None)
        operands = [c for c in middle if isinstance(c, lark.Tree)
                    and c.data in ("operand", "absent")]
        if str(op_tok) not in _OPS:
            raise _Fail(op_tok, f"unknown op '{op_tok}' (known: {', '.join(_OPS)})")
        op = _OPS[str(op_tok)]
        name = _unquote(name_tok)
        if name in self.node_names:
            raise _Fail(name_tok, f"node name \"{name}\" used twice")
        self.node_names.add(name)
        inputs = [self.operand(o, name) for o in operands]
        attrs = _attrs(op, name, op_tok, attrs_tree)
        source = [_unquote(s) for s in src_tree.children if s is not None] if src_tree else []
        self.graph.add_node(op, name, inputs, outputs, attrs, source)


def _quant_list(val: lark.Tree, key: str, key_tok: lark.Token, what: str,
                dtype: str) -> np.ndarray:
    """A ``[n, ...]`` scale (float64) or zero-point (int64, integers only) list."""
    toks = [t for t in val.children if t is not None]
    if key == "zp" and any(t.type != "INT" for t in toks):
        raise _Fail(key_tok, f"{what} must be integers")
    return np.array([_int(t) if key == "zp" else _number(t) for t in toks],
                    dtype=dtype).reshape(len(toks))


def _attrs(op: Op, node: str, op_tok: lark.Token, tree: lark.Tree | None) -> Any:
    cls = ATTRS_OF_OP[op]
    hints = typing.get_type_hints(cls, vars(ops))
    fields = {f.name: f for f in dataclasses.fields(cls)}
    given: dict[str, Any] = {}
    for attr in (tree.children if tree is not None else []):
        if attr is None:
            continue
        key_tok, val = attr.children
        key = str(key_tok)
        where = f"node \"{node}\" ({op.value}): attribute '{key}'"
        if key not in fields:
            known = ", ".join(fields) or "none"
            raise _Fail(key_tok, f"node \"{node}\": unknown attribute '{key}' for op "
                        f"{op.value} (known: {known})")
        if key in given:
            raise _Fail(key_tok, f"{where} given twice")
        given[key] = _convert(val, hints[key], where, key_tok)
    for fname, f in fields.items():
        if fname not in given and f.default is dataclasses.MISSING \
                and f.default_factory is dataclasses.MISSING:
            raise _Fail(op_tok, f"node \"{node}\" ({op.value}): missing attribute '{fname}'")
    return cls(**given)


def _first_tok(tree: Any, fallback: Any) -> Any:
    if isinstance(tree, lark.Token):
        return tree
    if isinstance(tree, lark.Tree):
        for c in tree.children:
            t = _first_tok(c, None)
            if t is not None:
                return t
    return fallback


#: Scalar field types: hint -> (accepted tree kinds, what the error says, converter).
_SCALARS: dict[Any, tuple[tuple[str, ...], str, Any]] = {
    bool: (("true", "false"), "true or false", lambda v: v.data == "true"),
    int: (("int",), "an integer", lambda v: _int(v.children[0])),
    float: (("int", "float"), "a number", lambda v: _number(v.children[0])),
    str: (("string",), "a string", lambda v: _unquote(v.children[0])),
}


def _convert(val: Any, hint: Any, where: str, key_tok: lark.Token) -> Any:
    """Attribute value tree -> Python value of the dataclass field type ``hint``."""
    tok = _first_tok(val, key_tok)
    kind = val.data if isinstance(val, lark.Tree) else None
    if hint in _SCALARS:
        kinds, what, conv = _SCALARS[hint]
        if kind not in kinds:
            raise _Fail(tok, f"{where}: expected {what}")
        return conv(val)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return _convert_enum(val, hint, kind, where, tok)
    if typing.get_origin(hint) is tuple:
        return _convert_tuple(val, hint, kind, where, tok, key_tok)
    if dataclasses.is_dataclass(hint):
        return _convert_dataclass(val, hint, kind, where, tok, key_tok)
    raise _Fail(tok, f"{where}: field type {hint} has no text form")


def _convert_enum(val: Any, hint: type, kind: str | None, where: str, tok) -> enum.Enum:
    if kind != "ident":
        raise _Fail(tok, f"{where}: expected one of {', '.join(m.value for m in hint)}")
    try:
        return hint(str(val.children[0]))
    except ValueError:
        raise _Fail(tok, f"{where}: '{val.children[0]}' is not one of "
                    f"{', '.join(m.value for m in hint)}") from None


def _convert_tuple(val: Any, hint: Any, kind: str | None, where: str, tok,
                   key_tok: lark.Token) -> tuple:
    args = typing.get_args(hint)
    if kind != "alist":
        raise _Fail(tok, f"{where}: expected a list [...]")
    items = [c for c in val.children if c is not None]
    if len(args) == 2 and args[1] is Ellipsis:
        elem_hints = [args[0]] * len(items)
    else:
        elem_hints = list(args)
        if len(items) != len(args):
            raise _Fail(tok, f"{where}: expected {len(args)} elements, got {len(items)}")
    return tuple(_convert(c, h, where, key_tok) for c, h in zip(items, elem_hints))


def _convert_dataclass(val: Any, hint: Any, kind: str | None, where: str, tok,
                       key_tok: lark.Token) -> Any:
    """An enum-led dataclass (Activation): ``kind`` or ``kind(rest...)``."""
    fields = dataclasses.fields(hint)
    sub = typing.get_type_hints(hint, vars(ops))
    if kind == "ident":
        head, rest = val, []
    elif kind == "call":
        head = lark.Tree("ident", [val.children[0]])
        rest = [c for c in val.children[1:] if c is not None]
        if len(rest) != len(fields) - 1:
            raise _Fail(tok, f"{where}: {val.children[0]}(...) takes {len(fields) - 1} "
                        f"values ({', '.join(f.name for f in fields[1:])})")
    else:
        raise _Fail(tok, f"{where}: expected a name such as relu or clip(lo, hi)")
    vals = [_convert(head, sub[fields[0].name], where, key_tok)]
    vals += [_convert(c, sub[f.name], where, key_tok) for c, f in zip(rest, fields[1:])]
    return hint(*vals)


def parse_graph(text: str, consts: Mapping[str, np.ndarray] | None = None,
                source: str = "<ir>") -> Graph:
    """Parse ``.tir`` text into a :class:`Graph`.

    Args:
        text: the IR text (as written by :func:`tcc_compiler.ir.printer.print_graph`, or by
            hand). ``#`` starts a comment.
        consts: sidecar arrays by reference key (a dict or an open ``np.load`` npz file);
            needed when the text has ``@key`` references.
        source: file name used in error messages.

    Returns:
        A new graph: values with the printed names, shapes, dtypes ("float32", "int8", ...),
        quantization parameters (scale float64, zero point int64, axis) and constant arrays;
        nodes in text order built through ``Graph.add_node``.

    Raises:
        FormatError: ``<source>:<line>:<column>: <reason>`` for a syntax error, an unknown op,
            attribute or element type, a bad attribute value, an undefined or twice-defined
            value, a missing sidecar array or one whose dtype/shape differs from the IR.
    """
    try:
        tree = _lark().parse(text)
    except lark.exceptions.UnexpectedInput as exc:
        raise FormatError(f"{source}:{exc.line}:{exc.column}: {_syntax_reason(exc)}") from None
    except lark.exceptions.LarkError as exc:
        raise FormatError(f"{source}: cannot parse IR ({type(exc).__name__}: {exc})") from None
    b = _Builder(consts)
    try:
        name_tok, *items = tree.children
        b.graph.name = _unquote(name_tok)
        pending: list[tuple[lark.Tree, list[Value]]] = []
        outputs: list[lark.Token] = []
        for it in items:
            if it.data == "meta":
                b.meta(it)
            elif it.data == "input_decl":
                b.graph.inputs.append(b.typed(*it.children))
            elif it.data == "undef_decl":
                b.typed(*it.children)
            elif it.data == "const_decl":
                b.const(it)
            elif it.data == "node":
                pending.append((it, b.node_results(it)))
            elif it.data == "output_decl":
                outputs += [t for t in it.children if t is not None]
        for it, outs in pending:
            b.node(it, outs)
        for tok in outputs:
            name = _unquote(tok, 1)
            if name not in b.values:
                raise _Fail(tok, f"output: undefined value %{name}")
            b.graph.outputs.append(b.values[name])
    except _Fail as exc:
        raise FormatError(f"{source}:{_pos(exc.tok)}: {exc.msg}") from None
    except TccError as exc:
        raise FormatError(f"{source}: {exc}") from None
    return b.graph


def _terminal_text(name: str) -> str:
    """A terminal as the user would type it: ',' for COMMA, 'quant', or VALUE for a pattern."""
    if name == "$END":
        return "end-of-input"
    try:
        pattern = _lark().get_terminal(name).pattern
    except KeyError:
        return name
    return repr(pattern.value) if isinstance(pattern, lark.lexer.PatternStr) else name


def _syntax_reason(exc: lark.exceptions.UnexpectedInput) -> str:
    if isinstance(exc, lark.exceptions.UnexpectedToken):
        got = "end of input" if exc.token.type == "$END" else repr(str(exc.token))
        expected = sorted({_terminal_text(t) for t in (exc.accepts or exc.expected)})
        return f"syntax error: unexpected {got}, expected one of {' '.join(expected[:12])}"
    if isinstance(exc, lark.exceptions.UnexpectedCharacters):
        return f"syntax error: unexpected character {exc.char!r}"
    if isinstance(exc, lark.exceptions.UnexpectedEOF):
        return "syntax error: unexpected end of input"
    return f"syntax error ({type(exc).__name__})"
