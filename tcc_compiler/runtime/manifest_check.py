"""Validation of ``manifest.json`` before the host runtime trusts any of its fields.

The manifest is read from disk, so it is untrusted input: every field
:class:`~tcc_compiler.runtime.loaded.LoadedProgram` uses is type- and range-checked here (and
the records it does not use but tools and users read: ``model``, ``cores``, ``dram``,
``calibration``, ``precision``, the fixed layouts and regions), and
the tensors it describes are checked to fit the DRAM regions the command file declares, and the
``target`` object must rebuild the whole :class:`~tcc_compiler.target.Target`
(:meth:`Target.from_dict <tcc_compiler.target.Target.from_dict>`). A bad
manifest gives one :class:`FormatError` naming the file and the field (e.g.
``manifest.json: outputs[0].npu_hwc: expected 3 positive integers``), never a KeyError or a
numpy broadcasting error later in :meth:`LoadedProgram.run`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from tcc_compiler.errors import FormatError
from tcc_compiler.target import Target

#: Host-side ops the runtime can apply after the NPU (manifest ``host_ops[].op``).
HOST_OPS = ("softmax", "argmax")
#: Output element types the NPU writes (manifest ``outputs[].dtype``) -> bytes per element.
OUTPUT_DTYPES = {"int8": 1, "int16": 2, "int32": 4}
#: Fields of ``input`` / ``outputs[]`` with one possible value (the NPU's int8 NHWC input at
#: the start of region INPUT; outputs in region OUTPUT, NHWC), checked when present.
INPUT_FIXED = {"dtype": "int8", "npu_layout": "NHWC", "region": "INPUT", "offset": 0}
OUTPUT_FIXED = {"npu_layout": "NHWC", "region": "OUTPUT"}
#: ``precision.activations`` values (specs/quantization.md, "Mixed precision").
ACTIVATION_PRECISIONS = ("int8", "mixed")
#: Largest dimension accepted anywhere in the manifest (the OUTPUT/INPUT regions are <= 2**30
#: bytes, so no real tensor comes near it; it keeps products of dims small).
MAX_DIM = 1 << 30


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_num(v: Any) -> bool:
    """Whether ``v`` is a JSON number a float holds finitely (an int such as 10**400, which
    JSON allows, is not: ``math.isfinite`` raises OverflowError on it)."""
    if not (_is_int(v) or isinstance(v, float)):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:
        return False


def version_problem(version, manifest: dict) -> str:
    """Why a manifest of ``manifest_version`` ``version`` (not this tccc's) cannot be read,
    and what to do: an older folder (fields it lacks are not named: the version says it)
    is recompiled; a newer tccc's folder (its ``tool_version`` named) needs that tccc."""
    from tcc_compiler.emit.files import MANIFEST_VERSION
    from tcc_compiler.version import __version__

    text = f"manifest_version {version!r:.20} not supported"
    if isinstance(version, int) and not isinstance(version, bool) and version > MANIFEST_VERSION:
        tool = manifest.get("tool_version")
        by = f" ({tool:.20})" if isinstance(tool, str) else ""
        return (f"{text}: written by a newer tccc{by}; this tccc ({__version__}) reads "
                f"{MANIFEST_VERSION}: upgrade tccc, or recompile the model with this one")
    old = " (it does not record the whole target)" if version == 1 else ""
    return f"{text}{old}: this tccc reads {MANIFEST_VERSION}; recompile the model"


class FieldChecker:
    """Field checks that raise FormatError naming ``path`` and the field (also used by
    :mod:`tcc_compiler.runtime.segmented_check`)."""

    def __init__(self, path: str):
        self.path = path

    def fail(self, field: str, msg: str) -> FormatError:
        return FormatError(f"{self.path}: {field}: {msg}")

    def obj(self, v: Any, field: str) -> dict:
        if not isinstance(v, dict):
            raise self.fail(field, f"expected an object, got {type(v).__name__}")
        return v

    def key(self, d: dict, k: str, field: str) -> Any:
        if k not in d:
            raise self.fail(f"{field}.{k}", "missing")
        return d[k]

    def int_(self, v: Any, field: str, lo: int = 0, hi: int = 2**32 - 1) -> int:
        if not _is_int(v) or not lo <= v <= hi:
            raise self.fail(field, f"expected an integer in {lo}..{hi}, got {v!r}")
        return v

    def str_(self, v: Any, field: str) -> str:
        if not isinstance(v, str) or not v:
            raise self.fail(field, f"expected a non-empty string, got {v!r}")
        return v

    def fixed(self, d: dict, field: str, values: dict[str, Any]) -> None:
        """Fields with the one value this manifest version writes (absent allowed): a host
        runtime reading them must not be told another layout, type or region."""
        for k, want in values.items():
            if k in d and (d[k] != want or type(d[k]) is not type(want)):
                raise self.fail(f"{field}.{k}", f"expected {want!r}, got {d[k]!r:.40}")

    def text(self, v: Any, field: str) -> str:
        """A string, possibly empty (a name taken from a graph that had none)."""
        if not isinstance(v, str):
            raise self.fail(field, f"expected a string, got {v!r:.40}")
        return v

    def names(self, v: Any, field: str) -> list:
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise self.fail(field, f"expected a list of strings, got {v!r:.60}")
        return v

    def choice(self, v: Any, field: str, allowed) -> str:
        """A string among ``allowed`` (any container of strings, listed in the message)."""
        if not isinstance(v, str) or v not in allowed:
            raise self.fail(field, f"expected one of {', '.join(allowed)}, got {v!r:.40}")
        return v

    def records(self, v: Any, field: str) -> Iterator[tuple[str, dict, str]]:
        """The objects of a non-empty list ``v`` whose ``name`` strings are unique, as
        ``(field of the entry, entry, name)``."""
        if not isinstance(v, list) or not v:
            raise self.fail(field, "expected a non-empty list")
        seen: set[str] = set()
        for k, o in enumerate(v):
            f = f"{field}[{k}]"
            o = self.obj(o, f)
            name = self.str_(self.key(o, "name", f), f"{f}.name")
            if name in seen:
                raise self.fail(f"{f}.name", f"'{name}' appears twice")
            seen.add(name)
            yield f, o, name

    def dims(self, v: Any, field: str, rank: tuple[int, ...] | None = None) -> tuple[int, ...]:
        ok = isinstance(v, list) and all(_is_int(d) and 1 <= d <= MAX_DIM for d in v)
        if not ok or (rank is not None and len(v) not in rank) or not v:
            want = f"{'/'.join(map(str, rank))} " if rank else ""
            raise self.fail(field, f"expected {want}positive integers (<= 2**30), got {v!r}")
        return tuple(v)

    def quant(self, d: dict, field: str, channels: int) -> None:
        """scale: finite positive numbers; zero_point: int8 integers; 1 or ``channels`` each."""
        scale = self.key(d, "scale", field)
        zp = self.key(d, "zero_point", field)
        for name, vals, ok in (("scale", scale, lambda s: is_num(s) and s > 0),
                               ("zero_point", zp, lambda z: _is_int(z) and -128 <= z <= 127)):
            if (not isinstance(vals, list) or len(vals) not in (1, channels)
                    or not all(ok(x) for x in vals)):
                what = ("finite positive numbers" if name == "scale"
                        else "integers in -128..127")
                count = "1" if channels == 1 else f"1 or {channels}"
                raise self.fail(f"{field}.{name}", f"expected {count} {what}, got "
                                f"{vals!r}"[:200])


def _check_inputs(ck: FieldChecker, m: dict, input_bytes: int | None) -> None:
    """``input`` and, for a program with several inputs (an NPU segment), ``inputs``: each
    entry as ``input`` is checked, the first equal to ``input``, the others rank-4 NCHW at
    increasing offsets inside the INPUT region, names distinct."""
    first = ck.obj(ck.key(m, "input", "manifest"), "input")
    _check_input(ck, first, input_bytes)
    if "inputs" not in m:
        return
    ins = m["inputs"]
    if not isinstance(ins, list) or len(ins) < 2 or ins[0] != first:
        raise ck.fail("inputs", "expected a list of two or more inputs, the first equal to "
                      "input")
    names = set()
    for k, rec in enumerate(ins[1:], 1):
        f = f"inputs[{k}]"
        rec = ck.obj(rec, f)
        _check_input(ck, rec, input_bytes, f, {**INPUT_FIXED, "offset": rec.get("offset"),
                                               "onnx_layout": "NCHW"})
        off = ck.int_(ck.key(rec, "offset", f), f"{f}.offset")
        size = math.prod(rec["npu_hwc"])
        prev = math.prod(ins[k - 1]["npu_hwc"]) + ins[k - 1]["offset"]   # checked before
        if off < prev:
            raise ck.fail(f"{f}.offset", f"{off} overlaps the previous input (it ends at "
                          f"byte {prev})")
        if input_bytes is not None and off + size > input_bytes:
            raise ck.fail(f"{f}.offset", f"{off} + {size} bytes leaves the INPUT region "
                          f"({input_bytes} bytes)")
        names.add(rec["name"])
    if len(names | {first["name"]}) != len(ins):
        raise ck.fail("inputs", "input names repeat")


def _check_input(ck: FieldChecker, inp: dict, input_bytes: int | None, where: str = "input",
                 fixed: dict | None = None) -> None:
    """The ``input`` object (or an ``inputs`` entry named ``where``, its ``fixed`` fields):
    shape vs npu_hwc, layout, batch 1, quantization, INPUT size."""
    shape = ck.dims(ck.key(inp, "shape", where), f"{where}.shape", (2, 4))
    hwc = ck.dims(ck.key(inp, "npu_hwc", where), f"{where}.npu_hwc", (3,))
    if math.prod(shape) != math.prod(hwc):
        raise ck.fail(f"{where}.shape", f"{list(shape)} holds {math.prod(shape)} elements, "
                      f"npu_hwc {list(hwc)} holds {math.prod(hwc)}")
    layout = inp.get("onnx_layout", "NCHW")
    if layout not in ("NCHW", "NHWC"):
        raise ck.fail(f"{where}.onnx_layout", f"expected NCHW or NHWC, got {layout!r}")
    if len(shape) == 4 and shape[0] != 1:
        raise ck.fail(f"{where}.shape", f"batch {shape[0]}, the NPU program takes batch 1")
    if (len(shape) == 4 and layout == "NCHW"
            and (shape[1], shape[2], shape[3]) != (hwc[2], hwc[0], hwc[1])):
        raise ck.fail(f"{where}.shape", f"NCHW {list(shape)} does not match npu_hwc {list(hwc)}")
    ck.quant(inp, where, 1)
    ck.str_(ck.key(inp, "name", where), f"{where}.name")
    if "onnx_name" in inp:
        ck.str_(inp["onnx_name"], f"{where}.onnx_name")
    ck.fixed(inp, where, INPUT_FIXED if fixed is None else fixed)
    if input_bytes is not None and math.prod(hwc) > input_bytes:
        raise ck.fail(f"{where}.npu_hwc", f"{list(hwc)} needs {math.prod(hwc)} bytes, the INPUT "
                      f"region holds {input_bytes}")


def _check_outputs(ck: FieldChecker, outs: Any, output_bytes: int | None) -> dict[str, int]:
    """The ``outputs`` list; returns {name: rank} of every output."""
    ranks: dict[str, int] = {}
    for f, o, name in ck.records(outs, "outputs"):
        dtype = ck.choice(ck.key(o, "dtype", f), f"{f}.dtype", OUTPUT_DTYPES)
        h, w, c = ck.dims(ck.key(o, "npu_hwc", f), f"{f}.npu_hwc", (3,))
        oshape = ck.dims(ck.key(o, "shape", f), f"{f}.shape")
        if math.prod(oshape) != h * w * c:
            raise ck.fail(f"{f}.shape", f"{list(oshape)} holds {math.prod(oshape)} elements, "
                          f"npu_hwc holds {h * w * c}")
        if len(oshape) == 4 and tuple(oshape) != (1, c, h, w):
            raise ck.fail(f"{f}.shape", f"NCHW {list(oshape)} does not match npu_hwc "
                          f"{[h, w, c]}")
        offset = ck.int_(ck.key(o, "offset", f), f"{f}.offset")
        itemsize = OUTPUT_DTYPES[dtype]
        if offset % itemsize:
            raise ck.fail(f"{f}.offset", f"{offset} not a multiple of {itemsize} ({dtype})")
        end = offset + h * w * c * itemsize
        if output_bytes is not None and end > output_bytes:
            raise ck.fail(f"{f}.offset", f"tensor ends at byte {end}, the OUTPUT region holds "
                          f"{output_bytes}")
        ck.quant(o, f, c)
        ck.fixed(o, f, OUTPUT_FIXED)
        ranks[name] = len(oshape)
    return ranks


def _check_host_ops(ck: FieldChecker, host_ops: Any, ranks: dict[str, int]) -> None:
    """The ``host_ops`` list (each op reads an earlier name); adds their outputs to ``ranks``."""
    if not isinstance(host_ops, list):
        raise ck.fail("host_ops", "expected a list")
    for k, op in enumerate(host_ops):
        f = f"host_ops[{k}]"
        op = ck.obj(op, f)
        kind = ck.key(op, "op", f)
        if kind not in HOST_OPS:
            raise ck.fail(f"{f}.op", f"expected one of {', '.join(HOST_OPS)}, got {kind!r}")
        src = ck.str_(ck.key(op, "input", f), f"{f}.input")
        if src not in ranks:
            raise ck.fail(f"{f}.input", f"'{src}' is not an output or an earlier host op")
        rank = ranks[src]
        ck.int_(ck.key(op, "axis", f), f"{f}.axis", -rank, rank - 1)
        if not isinstance(op.get("keepdims", True), bool):
            raise ck.fail(f"{f}.keepdims", f"expected true or false, got {op['keepdims']!r:.40}")
        dst = ck.str_(ck.key(op, "output", f), f"{f}.output")
        if dst in ranks:
            raise ck.fail(f"{f}.output", f"'{dst}' is already defined")
        ranks[dst] = rank - 1 if kind == "argmax" else rank


#: The former private name (tests use it).
_Checker = FieldChecker


def _check_records(ck: FieldChecker, m: dict, header: dict[str, int] | None) -> None:
    """The descriptive records no run reads but tools and users do (specs/manifest.md):
    ``model`` (required), and ``tool``, ``tool_version``, ``cores``, ``dram``, ``calibration``,
    ``precision`` when present; ``cores`` and ``dram`` against the command file's ``header``
    (``cores``, ``act_arena_bytes``, ``input_bytes``, ``output_bytes``) when given."""
    if m.get("tool", "tccc") != "tccc":
        raise ck.fail("tool", f"expected 'tccc', got {m['tool']!r:.40}")
    if "tool_version" in m:
        ck.text(m["tool_version"], "tool_version")
    # required: run --check and analyze confirm the model by its sha256
    rec = ck.obj(ck.key(m, "model", "manifest"), "model")
    ck.text(ck.key(rec, "source", "model"), "model.source")
    sha = ck.key(rec, "sha256", "model")
    if (not isinstance(sha, str) or len(sha) != 64
            or any(ch not in "0123456789abcdef" for ch in sha)):
        raise ck.fail("model.sha256", f"expected 64 lowercase hex digits, got {sha!r:.70}")
    if rec.get("opset") is not None:
        ck.int_(rec["opset"], "model.opset", 1, 1000)
    header = header or {}
    if "cores" in m:
        ck.int_(m["cores"], "cores", 1, 2)
        if "cores" in header and m["cores"] != header["cores"]:
            raise ck.fail("cores", f"{m['cores']}, the command file's header says "
                          f"{header['cores']}")
    if "dram" in m:
        dram = ck.obj(m["dram"], "dram")
        for k in ("act_arena_bytes", "input_bytes", "output_bytes"):
            ck.int_(ck.key(dram, k, "dram"), f"dram.{k}", 0, 1 << 30)
            if k in header and dram[k] != header[k]:
                raise ck.fail(f"dram.{k}", f"{dram[k]}, the command file's header says "
                              f"{header[k]}")
    _check_settings(ck, m)


def _check_settings(ck: FieldChecker, m: dict) -> None:
    """``calibration`` and ``precision``, when present."""
    if "calibration" in m:
        cal = ck.obj(m["calibration"], "calibration")
        ck.int_(ck.key(cal, "inputs", "calibration"), "calibration.inputs")
        for k in ("method", "source"):
            ck.text(ck.key(cal, k, "calibration"), f"calibration.{k}")
        if "bias_correction" in cal and not isinstance(cal["bias_correction"], bool):
            raise ck.fail("calibration.bias_correction",
                          f"expected true or false, got {cal['bias_correction']!r:.40}")
    if "precision" in m:
        prec = ck.obj(m["precision"], "precision")
        act = ck.key(prec, "activations", "precision")
        if act not in ACTIVATION_PRECISIONS:
            raise ck.fail("precision.activations", f"expected one of "
                          f"{', '.join(ACTIVATION_PRECISIONS)}, got {act!r:.40}")
        for k in ("int16_layers", "int16_tensors"):
            ck.names(ck.key(prec, k, "precision"), f"precision.{k}")


def check_manifest(manifest: Any, path: str, *, input_bytes: int | None = None,
                   output_bytes: int | None = None, header: dict[str, int] | None = None
                   ) -> dict:
    """Validate a parsed manifest.

    Args:
        manifest: the parsed JSON (any type: it is checked).
        path: file name used in messages.
        input_bytes, output_bytes: sizes (bytes) of the INPUT and OUTPUT regions from the
            command file header; when given, the input tensor and every output tensor
            (``offset`` + h*w*c*element bytes) must fit them.
        header: the command file header's ``cores``, ``act_arena_bytes``, ``input_bytes``,
            ``output_bytes``; when given, the manifest's ``cores`` and ``dram`` must equal them.

    Returns:
        ``manifest`` unchanged (for chaining).

    Raises:
        FormatError: the first field that is missing, of the wrong type or out of range, with
            ``path`` and the field (``input.scale``, ``outputs[1].offset``, ...) in the message.
    """
    ck = FieldChecker(path)
    m = ck.obj(manifest, "manifest")
    files = ck.obj(ck.key(m, "files", "manifest"), "files")
    for name, rec in files.items():
        rec = ck.obj(rec, f"files.{name}")
        ck.int_(ck.key(rec, "bytes", f"files.{name}"), f"files.{name}.bytes")
        ck.int_(ck.key(rec, "crc32", f"files.{name}"), f"files.{name}.crc32")
    try:
        Target.from_dict(ck.key(m, "target", "manifest"), "target")
    except FormatError as exc:
        raise FormatError(f"{path}: {exc}") from None

    _check_records(ck, m, header)
    _check_inputs(ck, m, input_bytes)
    ranks = _check_outputs(ck, ck.key(m, "outputs", "manifest"), output_bytes)
    _check_host_ops(ck, ck.key(m, "host_ops", "manifest"), ranks)

    gouts = ck.key(m, "graph_outputs", "manifest")
    if not isinstance(gouts, list) or not gouts:
        raise ck.fail("graph_outputs", "expected a non-empty list of names")
    for k, name in enumerate(gouts):
        if not isinstance(name, str) or name not in ranks:
            raise ck.fail(f"graph_outputs[{k}]", f"{name!r} is not an output or host op result")

    h, w, c = m["input"]["npu_hwc"]   # checked above
    m["preprocess"] = check_preprocess(ck, ck.key(m, "preprocess", "manifest"), (c, h, w))
    return manifest


def check_preprocess(ck: FieldChecker, record: Any, chw: tuple[int, int, int]) -> Any:
    """The ``preprocess`` record: a valid :class:`~tcc_compiler.datasets.preprocess.Preprocess`
    (``Preprocess.from_dict``) for the model input's ``chw`` (channels, height, width: its
    ``channels``, ``height`` and ``width`` equal them). Returns the record as this tccc reads
    it: ``record`` itself, or a record written before it held a channel count, on an input of
    other than 1 or 3 channels, at the input's count (:func:`_channel_count_record`).

    Raises:
        FormatError: naming ``ck.path`` and the field.
    """
    from tcc_compiler.datasets.images import Preprocess

    record = _channel_count_record(record, chw[0])
    try:
        pre = Preprocess.from_dict(record)
    except FormatError as exc:
        raise FormatError(f"{ck.path}: {exc}") from None
    for name, want in zip(("channels", "height", "width"), chw):
        if getattr(pre, name) != want:
            raise ck.fail(f"preprocess.{name}", f"{getattr(pre, name)}, but the input has "
                          f"{want} (a record for another input)")
    return record


def _channel_count_record(record: Any, channels: int) -> Any:
    """``record`` (a manifest's ``preprocess``) at an input of ``channels`` channels: for a
    record with no ``channels`` field on an input of other than 1 or 3 channels, a copy at
    that count, each of its three ``mean``/``std`` values taken as one value for every channel
    (when equal: as tccc read such a record for raw files) or averaged to one (as
    :class:`~tcc_compiler.datasets.preprocess.Preprocess` does, what a recompile writes);
    else ``record`` itself.

    Why: before the record held the model input's channel count, tccc wrote a 3-channel
    record (no ``channels``) for every input of other than 1 or 3 channels, in the same
    manifest_version (the zoo's FlowNetS, the 2-channel inner NPU segments of a segmented
    YOLO11n); such a folder ran, and should still. A record stating another count is left as
    it is (refused: a record for another input)."""
    from tcc_compiler.datasets.images import IMAGE_CHANNELS

    if not isinstance(record, dict) or "channels" in record or channels in IMAGE_CHANNELS:
        return record
    out = dict(record, channels=channels)
    for name in ("mean", "std"):
        v = record.get(name)
        if isinstance(v, list) and len(v) == 3 and all(
                isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
            out[name] = [v[0]] if v[0] == v[1] == v[2] else [sum(float(x) for x in v) / 3.0]
    return out
