"""Textual IR files: ``X.tir`` (text) plus ``X.npz`` (large constants), and structural equality.

``save_ir`` / ``load_ir`` are the file-level entry points; the text itself is produced by
:func:`print_graph` and read by :func:`parse_graph` (re-exported here). See ``specs/ir.md``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from tcc_compiler.errors import FormatError, InputError, TccError
from tcc_compiler.ir.graph import Graph, QuantParams, Value
from tcc_compiler.ir.parser import parse_graph
from tcc_compiler.ir.printer import META_TYPES, ConstTable, print_graph

log = logging.getLogger(__name__)

__all__ = ["ConstTable", "graphs_equal", "load_ir", "parse_graph", "print_graph", "save_ir",
           "sidecar_path"]


def sidecar_path(path_tir: str | os.PathLike) -> Path:
    """The ``.npz`` sidecar next to an IR file: ``X.tir`` -> ``X.npz``."""
    return Path(path_tir).with_suffix(".npz")


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def save_ir(graph: Graph, path_tir: str | os.PathLike, inline_limit: int = 16) -> Path | None:
    """Write ``graph`` to ``X.tir`` and, when it has large arrays, ``X.npz`` next to it.

    Both files are written atomically (temporary file in the same folder, then
    ``os.replace``); the sidecar is written first so a reader never meets a new ``.tir``
    referencing arrays it lacks. The sidecar is a plain ``np.savez`` archive (no pickle).

    Args:
        graph: any graph IR. path_tir: destination, conventionally ending in ``.tir``.
        inline_limit: constants with at most this many elements are printed inline.

    Returns:
        The sidecar path, or None when every array fitted inline (no ``.npz`` is written).

    Raises:
        InputError: the files cannot be written (missing folder, permissions, full disk).
        InternalError: the graph holds a dtype or attribute the text format cannot spell.
    """
    path = Path(path_tir)
    table = ConstTable()
    text = print_graph(graph, table, inline_limit=inline_limit)
    npz = sidecar_path(path) if len(table) else None
    if npz is not None and npz == path:
        raise InputError(f"{path}: the IR file may not end in .npz (that is the sidecar's name)")
    try:
        if npz is not None:
            _atomic_write(npz, lambda f: np.savez(f, **table.arrays))
        _atomic_write(path, lambda f: f.write(text.encode("utf-8")))
    except OSError as exc:
        raise InputError(f"{path}: cannot write IR ({exc.strerror or exc})") from None
    log.debug("wrote %s (%d sidecar arrays, %d elems)", path, len(table), table.total_elems())
    return npz


def _check_sidecar_members(archive: np.lib.npyio.NpzFile, npz: Path) -> None:
    """Refuse compressed members and members larger than the archive itself: save_ir writes
    a plain (stored) np.savez archive, and the check keeps a small hostile archive (a "zip
    bomb") from making the reader allocate gigabytes."""
    size = npz.stat().st_size
    for info in archive.zip.infolist():
        if info.compress_type != zipfile.ZIP_STORED or info.file_size > size:
            raise FormatError(f"{npz}: sidecar member {info.filename!r} is compressed or "
                              f"larger than the archive ({info.file_size} bytes); sidecars "
                              "are plain np.savez archives")


def load_ir(path_tir: str | os.PathLike) -> Graph:
    """Read ``X.tir`` (and ``X.npz`` when present) back into a graph.

    Returns:
        The graph as :func:`parse_graph` builds it.

    Raises:
        FormatError: naming the file (and line:column for text problems) on any problem: an
            unreadable or non-UTF-8 file, a corrupt sidecar, a syntax error, an unknown op or
            attribute, a missing sidecar array or one with the wrong dtype/shape. No other
            exception type leaves this function.
    """
    path = Path(path_tir)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise FormatError(f"{path}: cannot read IR ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise FormatError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    npz = sidecar_path(path)
    try:
        if npz.exists() and npz != path:
            try:
                archive = np.load(npz, allow_pickle=False)
            except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
                raise FormatError(f"{npz}: cannot read sidecar ({type(exc).__name__}: "
                                  f"{exc})") from None
            if not isinstance(archive, np.lib.npyio.NpzFile):
                raise FormatError(f"{npz}: sidecar is not an .npz archive")
            with archive:
                _check_sidecar_members(archive, npz)
                return parse_graph(text, archive, source=str(path))
        return parse_graph(text, None, source=str(path))
    except FormatError:
        raise
    except TccError as exc:
        raise FormatError(f"{path}: {exc}") from None
    except Exception as exc:  # the promise is FormatError only; keep the cause in the message
        raise FormatError(f"{path}: cannot load IR ({type(exc).__name__}: {exc})") from None


# ---- structural equality --------------------------------------------------------------------
def _same_array(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    """Bit-exact equality (-0.0 included), dtype and shape too; NaNs match NaNs (the text
    form keeps NaN but not its payload bits)."""
    if a is None or b is None:
        return a is None and b is None
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype.kind == "f":
        na, nb = np.isnan(a), np.isnan(b)
        if not np.array_equal(na, nb):
            return False
        a, b = np.where(na, 0, a).astype(a.dtype), np.where(nb, 0, b).astype(b.dtype)
    return np.array_equal(np.ascontiguousarray(a).view(np.uint8),
                          np.ascontiguousarray(b).view(np.uint8))


def _same_quant(a: QuantParams | None, b: QuantParams | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return (_same_array(a.scale, b.scale) and _same_array(a.zero_point, b.zero_point)
            and a.axis == b.axis)


def _same_scalar(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        if a != a and b != b:  # any NaN equals any NaN (the text keeps NaN, not its payload)
            return True
        return np.float64(a).tobytes() == np.float64(b).tobytes()
    if dataclasses.is_dataclass(a) and dataclasses.is_dataclass(b):
        return type(a) is type(b) and all(
            _same_scalar(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(_same_scalar(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def _printable_meta(meta: dict) -> dict:
    out = {}
    for k, v in meta.items():
        if isinstance(v, (np.bool_, np.integer, np.floating)):
            v = v.item()
        if isinstance(k, str) and type(v) in META_TYPES.values():
            out[k] = v
    return out


def _value_diff(a: Value, b: Value) -> str | None:
    where = f"value '{a.name}'"
    if a.name != b.name:
        return f"value name '{a.name}' vs '{b.name}'"
    if a.shape != b.shape:
        return f"{where}: shape {a.shape} vs {b.shape}"
    if np.dtype(a.dtype) != np.dtype(b.dtype):
        return f"{where}: dtype {a.dtype} vs {b.dtype}"
    if not _same_quant(a.quant, b.quant):
        return f"{where}: quantization parameters differ ({a.quant} vs {b.quant})"
    if not _same_array(a.const, b.const):
        return f"{where}: constant payload differs"
    pa = a.producer.name if a.producer is not None else None
    pb = b.producer.name if b.producer is not None else None
    if pa != pb:
        return f"{where}: producer {pa} vs {pb}"
    ua = sorted((n.name, j) for n, j in a.uses)
    ub = sorted((n.name, j) for n, j in b.uses)
    if ua != ub:
        return f"{where}: uses {ua} vs {ub}"
    return None


def _header_diff(a: Graph, b: Graph) -> str | None:
    """Graph name, printable meta, input and output names."""
    if a.name != b.name:
        return f"graph name {a.name!r} vs {b.name!r}"
    ma, mb = _printable_meta(a.meta), _printable_meta(b.meta)
    if list(ma) != list(mb):
        return f"meta keys {list(ma)} vs {list(mb)}"
    for k in ma:
        if not _same_scalar(ma[k], mb[k]):
            return f"meta {k}: {ma[k]!r} vs {mb[k]!r}"
    for what, la, lb in (("inputs", a.inputs, b.inputs), ("outputs", a.outputs, b.outputs)):
        na, nb = [v.name for v in la], [v.name for v in lb]
        if na != nb:
            return f"graph {what} {na} vs {nb}"
    return None


def _node_diff(x, y) -> str | None:
    """Name, op, attrs, provenance and operand names of two nodes at the same position."""
    where = f"node '{x.name}'"
    if x.name != y.name:
        return f"node name '{x.name}' vs '{y.name}'"
    if x.op is not y.op:
        return f"{where}: op {x.op.value} vs {y.op.value}"
    if not _same_scalar(x.attrs, y.attrs):
        return f"{where}: attrs differ ({x.attrs} vs {y.attrs})"
    if tuple(x.source) != tuple(y.source):
        return f"{where}: source {x.source} vs {y.source}"
    ia = [v.name if v is not None else None for v in x.inputs]
    ib = [v.name if v is not None else None for v in y.inputs]
    if ia != ib:
        return f"{where}: inputs {ia} vs {ib}"
    oa, ob = [v.name for v in x.outputs], [v.name for v in y.outputs]
    if oa != ob:
        return f"{where}: outputs {oa} vs {ob}"
    return None


def graphs_equal(a: Graph, b: Graph) -> str | None:
    """Structural equality of two graphs; None when equal, else the first difference.

    Compared: graph name; ``meta`` entries with str/int/float/bool values (the ones the text
    keeps); input and output value lists; nodes in order (op, name, attrs, provenance, input
    and output value names); every value's shape, dtype, quantization parameters and constant
    payload (bit-exact, dtype included), producer and uses (as a multiset of (node, index)).

    Returns:
        None, or a one-line description such as ``"node 'conv1': attrs differ (...)"``.
    """
    diff = _header_diff(a, b)
    if diff:
        return diff
    if len(a.nodes) != len(b.nodes):
        return f"node count {len(a.nodes)} vs {len(b.nodes)}"
    for x, y in zip(a.nodes, b.nodes):
        diff = _node_diff(x, y)
        if diff:
            return diff
    va = {v.name: v for v in a.values()}
    vb = {v.name: v for v in b.values()}
    if list(va) != list(vb):
        only = sorted(set(va) ^ set(vb))
        return f"value sets differ ({only[:5]})" if only else "value order differs"
    for name, v in va.items():
        diff = _value_diff(v, vb[name])
        if diff:
            return diff
    return None
