"""Validation of a segmented folder's top-level ``manifest.json`` (specs/manifest.md,
"Segmented layout") before :class:`~tcc_compiler.runtime.segmented.SegmentedProgram` trusts
any of it.

Each ``npu_<k>/`` folder's own manifest is checked by
:func:`~tcc_compiler.runtime.manifest_check.check_manifest` when it loads; the top level is
checked here: its fields' types (:func:`check_segmented_manifest`) and, once every segment is
loaded, its dataflow (:func:`check_dataflow`): every tensor a segment reads is the model
input or an earlier segment's output, every output a segment lists is one it makes, every
graph output is made. A damaged manifest used to end in a KeyError or TypeError deep in
``tccc run`` / ``eval`` / ``export-onnx --ort`` (exit 1); now it is one FormatError naming the
file and the field.
"""

from __future__ import annotations

from typing import Any

from tcc_compiler.errors import FormatError
from tcc_compiler.runtime.manifest_check import FieldChecker, version_problem
from tcc_compiler.target import Target

#: Element types a segmented model's graph output may have (its host graph's output dtype).
OUTPUT_DTYPES = ("float32", "float16", "float64", "int64", "int32", "int16", "int8", "uint8",
                 "bool")
DEVICES = ("npu", "host")


def _check_input(ck: FieldChecker, inp: Any) -> None:
    inp = ck.obj(inp, "input")
    ck.str_(ck.key(inp, "name", "input"), "input.name")
    if "onnx_name" in inp:
        ck.str_(inp["onnx_name"], "input.onnx_name")
    shape = ck.dims(ck.key(inp, "shape", "input"), "input.shape", (4,))
    if shape[0] != 1:
        raise ck.fail("input.shape", f"batch {shape[0]}, the NPU programs take batch 1")
    if inp.get("onnx_layout", "NCHW") not in ("NCHW", "NHWC"):
        raise ck.fail("input.onnx_layout", f"expected NCHW or NHWC, got "
                      f"{inp['onnx_layout']!r:.40}")
    ck.fixed(inp, "input", {"dtype": "float32"})


def _check_segments(ck: FieldChecker, segs: Any) -> None:
    if not isinstance(segs, list) or not segs:
        raise ck.fail("segments", "expected a non-empty list")
    for k, seg in enumerate(segs):
        f = f"segments[{k}]"
        seg = ck.obj(seg, f)
        if seg.get("device") not in DEVICES:
            raise ck.fail(f"{f}.device", f"expected npu or host, got {seg.get('device')!r:.40}")
        if seg.get("index", k) != k:
            raise ck.fail(f"{f}.index", f"expected {k} (its place in run order), got "
                          f"{seg['index']!r:.40}")
        for key in ("inputs", "outputs"):
            names = ck.names(ck.key(seg, key, f), f"{f}.{key}")
            if not names:
                raise ck.fail(f"{f}.{key}", "expected at least one tensor name")
        if len(set(seg["inputs"])) != len(seg["inputs"]):
            raise ck.fail(f"{f}.inputs", f"a tensor is listed twice: {seg['inputs']}"[:200])


def _check_outputs(ck: FieldChecker, outs: Any, n_segments: int) -> set[str]:
    """The top-level ``outputs`` list (name, shape, producing segment, dtype); returns the
    names."""
    names: set[str] = set()
    for f, o, name in ck.records(outs, "outputs"):
        names.add(name)
        ck.dims(ck.key(o, "shape", f), f"{f}.shape")
        if ck.key(o, "segment", f) is not None:   # null: no segment makes it (the input)
            ck.int_(o["segment"], f"{f}.segment", 0, n_segments - 1)
        ck.choice(o.get("dtype", "float32"), f"{f}.dtype", OUTPUT_DTYPES)
    return names


def check_segmented_manifest(manifest: dict, path: str) -> dict:
    """Validate a segmented top-level manifest's fields (types, ranges, names).

    Args:
        manifest: the parsed JSON (``layout`` "segmented", ``format`` "tccc-manifest").
        path: file name used in messages.

    Returns:
        ``manifest`` unchanged.

    Raises:
        FormatError: the first missing, mistyped or out-of-range field, named with ``path``.
    """
    from tcc_compiler.datasets.images import Preprocess
    from tcc_compiler.emit.files import MANIFEST_VERSION

    ck = FieldChecker(path)
    m = ck.obj(manifest, "manifest")
    if m.get("manifest_version") != MANIFEST_VERSION:
        raise FormatError(f"{path}: {version_problem(m.get('manifest_version'), m)}")
    rec = ck.obj(ck.key(m, "model", "manifest"), "model")
    sha = ck.key(rec, "sha256", "model")
    if not isinstance(sha, str) or len(sha) != 64 or any(c not in "0123456789abcdef"
                                                          for c in sha):
        raise ck.fail("model.sha256", f"expected 64 lowercase hex digits, got {sha!r:.70}")
    ck.text(ck.key(rec, "source", "model"), "model.source")
    _check_input(ck, ck.key(m, "input", "manifest"))
    _check_segments(ck, ck.key(m, "segments", "manifest"))
    names = _check_outputs(ck, ck.key(m, "outputs", "manifest"), len(m["segments"]))
    gouts = ck.names(ck.key(m, "graph_outputs", "manifest"), "graph_outputs")
    missing = [g for g in gouts if g not in names]
    if not gouts or missing:
        raise ck.fail("graph_outputs", f"expected names listed in outputs, got {gouts!r:.80}")
    try:
        Target.from_dict(ck.key(m, "target", "manifest"), "target")
        Preprocess.from_dict(ck.key(m, "preprocess", "manifest"))
    except FormatError as exc:
        raise FormatError(f"{path}: {exc}") from None
    return manifest


def check_dataflow(manifest: dict, path: str, made: dict[int, set[str]],
                   reads: dict[int, set[str]]) -> None:
    """Check that the segments, in order, can run: every name segment ``k`` lists as an input
    (and every tensor its host graph reads from earlier segments, ``reads[k]``) is the model
    input or an earlier segment's listed output; every output it lists is one it makes
    (``made[k]``: an NPU program's outputs and host ops, a host graph's outputs); every
    ``outputs[]`` record is made by the segment it names (``segment`` null: the model input
    or an output of some segment, e.g. a graph output that is the input itself).

    Raises:
        FormatError: the first name that breaks this, with the segment and field.
    """
    ck = FieldChecker(path)
    have = {manifest["input"]["name"]}
    for k, seg in enumerate(manifest["segments"]):
        f = f"segments[{k}]"
        for t in list(seg["inputs"]) + sorted(reads.get(k, ())):
            if t not in have:
                raise ck.fail(f"{f}.inputs", f"'{t:.60}' is neither the model input nor an "
                              "earlier segment's output")
        for t in seg["outputs"]:
            if t not in made[k]:
                raise ck.fail(f"{f}.outputs", f"'{t:.60}' is not made by this segment "
                              f"({seg.get('folder') or seg.get('file')})")
        have.update(seg["outputs"])
    for j, o in enumerate(manifest["outputs"]):
        if o["segment"] is None:
            if o["name"] not in have:
                raise ck.fail(f"outputs[{j}].segment", f"null, but '{o['name']:.60}' is "
                              "neither the model input nor a segment's output")
            continue
        if o["name"] not in manifest["segments"][o["segment"]]["outputs"]:
            raise ck.fail(f"outputs[{j}].segment", f"segment {o['segment']} does not output "
                          f"'{o['name']:.60}'")
