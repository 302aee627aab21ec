"""Load and run a segmented model: NPU programs and host ONNX graphs, walked in order.

A folder whose manifest says ``"layout": "segmented"`` (specs/manifest.md) holds one
``npu_<k>/`` folder per NPU segment (a whole-model folder of its own, loaded by
:class:`~tcc_compiler.runtime.loaded.LoadedProgram`) and one ``host_<k>.onnx`` per host segment
(run in float32 by ONNX Runtime). Tensors cross the boundaries in float32: an NPU segment
quantizes its input with its own scale and dequantizes its outputs, exactly as a whole-model
program does; except that a host graph input typed int8 takes the NPU output's integer
values in ONNX order and dequantizes them itself, after moving them
(:mod:`tcc_compiler.frontend.host_int8`).
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np

from tcc_compiler.emit.files import MANIFEST_FILE
from tcc_compiler.emit.segments import npu_int8_handoff
from tcc_compiler.errors import FormatError, InputError, first_line
from tcc_compiler.numerics.requant import dequantize_tensor, quantize_tensor
from tcc_compiler.runtime.loaded import LoadedProgram
from tcc_compiler.runtime.manifest_check import FieldChecker, check_preprocess
from tcc_compiler.runtime.segmented_check import check_dataflow, check_segmented_manifest

#: Top-level fields a segmented manifest must have.
_KEYS = ("input", "outputs", "graph_outputs", "segments", "preprocess", "target")


def _safe_entry(folder: Path, name, where: str) -> Path:
    """``folder / name`` for a plain entry name (no path separators), else FormatError."""
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name in (
            ".", ".."):
        raise FormatError(f"{where}: segment entry {name!r} is not a plain file/folder name")
    return folder / name


class SegmentedProgram:
    """A segmented compiled model ready to run (same interface as :class:`LoadedProgram`:
    ``manifest``, ``input_shape``, ``as_input``, ``run``, ``final_output``).

    Attributes:
        folder: the output folder. manifest: its parsed top-level manifest.
        programs: {segment index: LoadedProgram} of the NPU segments.
        sessions: {segment index: onnxruntime.InferenceSession} of the host segments.

    Raises:
        InputError: missing files. FormatError: a malformed manifest, a host file whose size
            or CRC-32 differs from the manifest's, an NPU segment folder failing its checks.
    """

    segmented = True

    def __init__(self, folder: str | Path, manifest: dict):
        import onnxruntime as ort

        self.folder = Path(folder)
        self.manifest = manifest
        where = str(self.folder / MANIFEST_FILE)
        missing = [k for k in _KEYS if k not in manifest]
        if missing or not isinstance(manifest["segments"], list):
            raise FormatError(f"{where}: missing field(s) {', '.join(missing) or 'segments'}")
        check_segmented_manifest(manifest, where)   # every field typed before it is used
        self.programs: dict[int, LoadedProgram] = {}
        self.sessions: dict = {}
        self.prefixes: dict = {}
        self.joins: dict = {}
        so = ort.SessionOptions()
        so.log_severity_level = 4   # fatal only: errors come back as exceptions
        for k, seg in enumerate(manifest["segments"]):
            if not isinstance(seg, dict) or seg.get("device") not in ("npu", "host"):
                raise FormatError(f"{where}: segments[{k}]: expected an npu or host segment")
            if seg["device"] == "npu":
                self.programs[k] = LoadedProgram(_safe_entry(self.folder, seg.get("folder"),
                                                             where))
                names = [r["name"] for r in self.programs[k].input_records]
                if names != seg["inputs"]:
                    raise FormatError(f"{where}: segments[{k}].inputs {seg['inputs']} differ "
                                      f"from its program's inputs {names}"[:300])
                continue
            path = _safe_entry(self.folder, seg.get("file"), where)
            self.sessions[k], self.prefixes[k], self.joins[k] = _host_session(
                _host_bytes(path, seg), so, path)
        self._link_host_inputs(where)
        check_dataflow(manifest, where, *self._made_and_read())
        self._check_input_shape(where)
        # the preprocessing record is for this input (checked once the shape is known right)
        manifest["preprocess"] = check_preprocess(
            FieldChecker(where), manifest["preprocess"], tuple(manifest["input"]["shape"][1:]))

    def _check_input_shape(self, where: str) -> None:
        """The top-level ``input.shape`` (NCHW) against every segment reading the model input:
        an NPU program's own input shape, a host graph's input dims (ONNX layout; symbolic
        dims match anything), so a load refuses an edited shape that ``run`` would only meet
        later (``inspect``, ``report`` and ``export-onnx --ort`` never run it).

        Raises:
            FormatError: the shapes differ, naming both files.
        """
        inp = self.manifest["input"]
        shape = tuple(inp["shape"])
        onnx_shape = (shape[0], *shape[2:], shape[1]) if inp.get("onnx_layout") == "NHWC" \
            and len(shape) == 4 else shape   # the tensor as the segments receive it
        for k, seg in enumerate(self.manifest["segments"]):
            if inp["name"] not in seg["inputs"]:
                continue
            if k in self.programs:
                prog = self.programs[k]
                rec = next((r for r in prog.input_records
                            if inp["name"] in (r.get("onnx_name"), r.get("name"))),
                           prog.manifest["input"])   # the record of this input
                want = tuple(rec["shape"])
                got = onnx_shape
                if rec.get("onnx_layout") == "NHWC" and len(got) == 4:
                    got = (got[0], got[3], got[1], got[2])   # run() feeds it NCHW
                src = f"{seg['folder']}/{MANIFEST_FILE}"
            else:
                arg = next(i for i in self.sessions[k].get_inputs() if i.name == inp["name"])
                want, got, src = tuple(arg.shape), onnx_shape, seg["file"]
                want = tuple(g if isinstance(d, str) or d is None else d
                             for d, g in zip(want, got)) if len(want) == len(got) else want
            if tuple(want) != tuple(got):
                raise FormatError(f"{where}: input.shape {list(shape)} does not match "
                                  f"segment {k}'s input {list(want)} ({src}); an edited manifest? "
                                  "recompile the model")

    def _made_and_read(self) -> tuple[dict[int, set[str]], dict[int, set[str]]]:
        """Per segment, the tensors it makes (an NPU program's outputs and host ops, a host
        graph's outputs and joins) and, for a host segment, those it reads from the earlier
        segments' float outputs (not its int8 inputs or its boundary prefix's)."""
        made: dict[int, set[str]] = {}
        reads: dict[int, set[str]] = {}
        for k, prog in self.programs.items():
            made[k] = {o["name"] for o in prog.manifest["outputs"]} | {
                h["output"] for h in prog.manifest["host_ops"]}
        for k, sess in self.sessions.items():
            made[k] = {o.name for o in sess.get_outputs()} | {j.output[0]
                                                              for j in self.joins[k]}
            pre = self.prefixes[k]
            reads[k] = ({i.name for i in sess.get_inputs()} - self.int8_inputs[k]
                        - set(pre.index if pre is not None else ()))
        return made, reads

    def _link_host_inputs(self, where: str) -> None:
        """Set ``int8_inputs`` ({host segment: its inputs taken as int8, the NPU's integer
        values in ONNX order}) and turn each boundary prefix into its :class:`_Gather`.

        Raises:
            FormatError: a host graph takes as int8, or moves in its prefix, a tensor no
                NPU segment outputs (as int8).
        """
        self.int8_inputs = {k: {i.name for i in s.get_inputs() if i.type == "tensor(int8)"}
                            for k, s in self.sessions.items()}
        records = {o["name"]: o for p in self.programs.values() for o in p.manifest["outputs"]}
        # {tensor: its output record and segment} of the int8 NPU outputs NPU segments read
        self.int8_sources = {o["name"]: {**o, "segment": k} for k, p in self.programs.items()
                             for o in p.manifest["outputs"] if npu_int8_handoff(o)}
        for k, pre in self.prefixes.items():
            if pre is not None:
                self.prefixes[k] = _Gather(pre, records, f"{where}: host segment {k}")
        made = {name for name, o in records.items() if o.get("dtype") == "int8"}
        for k, names in self.int8_inputs.items():
            if names - made:
                raise FormatError(f"{where}: host segment {k} takes {sorted(names - made)} as "
                                  "int8, which no NPU segment outputs as int8")

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The float input shape the runtime takes (NCHW [1, C, H, W])."""
        return tuple(self.manifest["input"]["shape"])

    def as_input(self, x) -> np.ndarray:
        """``x`` as the float32 input (an array, or an image/.npy path loaded with the
        compiled preprocessing); see :meth:`LoadedProgram.as_input`."""
        return LoadedProgram.as_input(self, x)

    def run(self, x, schedule: str = "inorder", seed: int = 0) -> dict[str, np.ndarray]:
        """Run one input through every segment in order.

        Args:
            x: float32 NCHW input (``input_shape``), or an image / ``.npy`` path.
            schedule, seed: the NPU executor's command order (see ``tccc run --schedule``).

        Returns:
            {tensor name: array} of every boundary tensor and graph output (float32, the
            host graphs' own dtypes), plus per NPU segment ``k``: ``"feed:<k>"`` (its float
            input as fed) and ``"int:<k>:<name>"`` (its raw integer NHWC outputs), which
            ``tccc run --check`` compares with the golden integer model.

        Raises:
            InputError: wrong shape or non-finite values. ExecutionError: executor fault.
        """
        x = LoadedProgram.checked_input(self, x)
        inp = self.manifest["input"]
        nhwc = inp.get("onnx_layout") == "NHWC"
        env = {inp["name"]: np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if nhwc else x}
        ints: dict[str, np.ndarray] = {}   # NPU outputs' integer values in ONNX order
        for k, seg in enumerate(self.manifest["segments"]):
            if k in self.sessions:
                env.update(self._run_host(k, env, ints))
                continue
            prog = self.programs[k]
            feed = self._npu_feed(prog, env)
            res = prog.decode_outputs(prog.execute(prog.quantize_inputs(feed), schedule, seed))
            env[f"feed:{k}"] = feed if len(feed) > 1 else next(iter(feed.values()))
            for o in prog.manifest["outputs"]:
                env[f"int:{k}:{o['name']}"] = res["int:" + o["name"]]
                ints[o["name"]] = onnx_order(res["int:" + o["name"]], o["shape"])
            env.update({t: res[t] for t in seg["outputs"] if t in res})
        return env

    def _npu_feed(self, prog: LoadedProgram, env: dict) -> dict[str, np.ndarray]:
        """{input name: array} of one NPU segment's inputs: float32 NCHW from the model input
        or a host segment (an NHWC model input transposed), or, for an earlier NPU
        segment's int8 output (:func:`tcc_compiler.emit.segments.npu_int8_handoff`), its
        integers (NHWC, as stored) mapped by one 256-entry table onto this input's
        quantization: the float round trip's values, without the float32 tensor."""
        feed = {}
        for rec in prog.input_records:
            name, src = rec["name"], self.int8_sources.get(rec["name"])
            if src is not None and len(rec["scale"]) == 1:
                table = _requant_table(src, rec)
                feed[name] = table[env[f"int:{src['segment']}:{name}"].astype(np.int16) + 128]
                continue
            x = np.asarray(env[name], np.float32)
            if rec.get("onnx_layout") == "NHWC":
                x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
            feed[name] = x
        return feed

    def _run_host(self, k: int, env: dict, ints: dict) -> dict[str, np.ndarray]:
        """Host segment ``k``'s outputs: its boundary prefix gathered, its middle run by ONNX
        Runtime, each join's output assembled in place: its prefix inputs gathered straight
        into their slices, its other inputs copied (:mod:`tcc_compiler.frontend.host_prefix`).
        """
        sess, pre, joins = self.sessions[k], self.prefixes[k], self.joins[k]
        joined = {t for j in joins for t in j.input}
        feeds = pre.run(ints, [t for t in pre.index if t not in joined]) if pre else {}
        feeds.update({i.name: ints[i.name] if i.name in self.int8_inputs[k] else env[i.name]
                      for i in sess.get_inputs() if i.name not in feeds})
        names = [o.name for o in sess.get_outputs()]
        outs = dict(zip(names, sess.run(names, feeds)))
        for j in joins:
            shapes = [pre.index[t].shape if t in pre.index else outs[t].shape for t in j.input]
            axis = next(a.i for a in j.attribute if a.name == "axis") % len(shapes[0])
            shape = list(shapes[0])
            shape[axis] = sum(sh[axis] for sh in shapes)
            buf, into, off = np.empty(shape, np.float32), {}, 0
            for t, sh in zip(j.input, shapes):
                view = buf[(slice(None),) * axis + (slice(off, off + sh[axis]),)]
                if t in pre.index:
                    into[t] = view
                else:
                    view[...] = outs[t]
                off += sh[axis]
            pre.run(ints, list(into), into)
            outs[j.output[0]] = buf
        return outs

    def final_output(self, res: dict[str, np.ndarray]) -> np.ndarray:
        """The first graph output."""
        return res[self.manifest["graph_outputs"][0]]


def _host_bytes(path: Path, seg: dict) -> bytes:
    """The bytes of host graph ``path``, checked against its manifest record.

    Raises:
        InputError: the file is missing. FormatError: its size or CRC-32 differs.
    """
    try:
        data = path.read_bytes()
    except OSError:
        raise InputError(f"{path}: missing (copy the whole output folder)") from None
    if len(data) != seg.get("bytes") or zlib.crc32(data) != seg.get("crc32"):
        raise FormatError(f"{path}: size or CRC-32 differs from manifest.json's "
                          "record: corrupted or from another compilation")
    return data


def _host_session(data: bytes, so, path: Path):
    """(ONNX Runtime session of a host graph's middle nodes, its boundary prefix model or
    None, its joins): :func:`tcc_compiler.frontend.host_prefix.split_prefix`.

    Raises:
        FormatError: a malformed host graph or prefix record; a graph ONNX Runtime refuses.
    """
    import onnx
    import onnxruntime as ort

    from tcc_compiler.frontend.host_prefix import split_prefix

    try:
        pre, rest, joins = split_prefix(onnx.load_from_string(data))
    except (ValueError, KeyError) as exc:   # (protobuf's DecodeError is a ValueError)
        raise FormatError(f"{path}: malformed host graph or boundary prefix ({exc})") from None
    if pre is not None:
        if not rest.graph.output:   # every output made by the joins: nothing for ORT to run
            return _NoSession(), pre, joins
        data = rest.SerializeToString()
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

    try:
        sess = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
    except (ort_errors.InvalidGraph, ort_errors.InvalidProtobuf, ort_errors.Fail,
            ort_errors.InvalidArgument, ort_errors.NotImplemented) as exc:
        # a hand-edited graph (its manifest record updated), or an ONNX Runtime older than
        # the one that compiled the folder: the folder's fault or the machine's, not tccc's
        raise FormatError(f"{path}: ONNX Runtime {ort.__version__} cannot load this host "
                          f"graph ({first_line(exc)})") from None
    return sess, pre, joins


class _NoSession:
    """Stands for the ONNX Runtime session of a host graph whose nodes are all in its
    boundary prefix and joins (e.g. a DFL decode's per-level Reshapes and their Concat as the
    graph output): no inputs, no outputs (ONNX Runtime refuses an empty graph)."""

    def get_inputs(self) -> list:
        """No inputs."""
        return []

    def get_outputs(self) -> list:
        """No outputs."""
        return []

    def run(self, names, feeds) -> list:
        """Nothing to compute: an empty list."""
        return []


class _Gather:
    """A host graph's boundary prefix as one gather from the NPU outputs' integers,
    dequantized into place (:mod:`tcc_compiler.frontend.host_prefix`): the index of every
    output element's source element is found once, by running the prefix in ONNX Runtime on
    the element indices (int64)."""

    def __init__(self, pre, records: dict, where: str):
        import onnx
        import onnxruntime as ort

        self.sources, scales, zeros, feeds, start = [], [], [], {}, 0
        for inp in pre.graph.input:
            rec = records.get(inp.name)
            if rec is None:
                raise FormatError(f"{where}: boundary prefix reads '{inp.name}', which no "
                                  "NPU segment outputs")
            shape = tuple(rec["shape"])
            n = int(np.prod(shape))
            feeds[inp.name] = np.arange(start, start + n, dtype=np.int64).reshape(shape)
            per_channel = (1, -1) + (1,) * (len(shape) - 2)   # channels: ONNX axis 1
            scales.append(np.broadcast_to(np.asarray(rec["scale"], np.float64).reshape(
                per_channel), shape).ravel())
            zeros.append(np.broadcast_to(np.asarray(rec["zero_point"], np.float64).reshape(
                per_channel), shape).ravel())
            self.sources.append((inp.name, shape))
            start += n
        self.scale, self.zero = np.concatenate(scales), np.concatenate(zeros)
        m = onnx.ModelProto()
        m.CopyFrom(pre)
        for vi in list(m.graph.input) + list(m.graph.output) + list(m.graph.value_info):
            vi.type.tensor_type.elem_type = onnx.TensorProto.INT64
        sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        names = [o.name for o in m.graph.output]
        self.index = dict(zip(names, sess.run(names, feeds)))
        # each output element's zero point and scale, gathered once (16 bytes per element)
        self.params = {t: (self.zero[i], self.scale[i]) for t, i in self.index.items()}

    def run(self, ints: dict[str, np.ndarray], names: list[str],
            into: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """{prefix output: float32 values} of ``names`` from {NPU output: its integers in
        ONNX order}: ``(q - zero_point) * scale`` in float64, rounded once to float32 (as the
        boundary's dequantization), gathered into each output's layout; written into
        ``into[name]`` (a float32 view of that shape) where given."""
        q = np.concatenate([ints[name].reshape(-1) for name, _ in self.sources])
        out = {}
        for t in names:
            i = self.index[t]
            dst = (into or {}).get(t)
            if dst is None:
                dst = out[t] = np.empty(i.shape, np.float32)
            zero, scale = self.params[t]
            np.multiply(np.subtract(q[i], zero), scale, out=dst, casting="same_kind")
        return out


def _requant_table(src: dict, dst: dict) -> np.ndarray:
    """int8[256]: each int8 value ``q`` of output record ``src`` (scale, zero point)
    dequantized to float32 and quantized with input record ``dst``'s, exactly as the float
    hand-off would (index ``q + 128``); the identity when the two agree."""
    q = np.arange(-128, 128, dtype=np.int8)
    f = dequantize_tensor(q, src["scale"][0], src["zero_point"][0])
    return quantize_tensor(f, dst["scale"][0], dst["zero_point"][0])


def onnx_order(q: np.ndarray, shape) -> np.ndarray:
    """An NPU output's integer values (NHWC [H, W, C] as stored) in its ONNX shape: NCHW
    [1, C, H, W] for rank 4, else reshaped as stored (as the float decode does)."""
    shape = tuple(shape)
    q = q.transpose(2, 0, 1)[None] if len(shape) == 4 else q
    return np.ascontiguousarray(q).reshape(shape)


def check_segments(prog: SegmentedProgram, res: dict[str, np.ndarray]) -> bool:
    """Bit-exactness of every NPU segment of one run: each segment's executor outputs
    (``res["int:<k>:<name>"]``) equal the golden integer model's on the same input
    (``res["feed:<k>"]``, quantized the same way), byte for byte; and for a ``--cores 2``
    segment, its stream program (npu_cmd_stream.bin) gives each of its images those outputs
    from copies of that input (:func:`~tcc_compiler.runtime.stream_check.stream_matches`).

    Raises:
        InputError, FormatError: an NPU segment folder without a readable quantized.tir.
        ExecutionError: a stream program fails on the executor.
    """
    from tcc_compiler.emit.files import IR_FILE
    from tcc_compiler.ir.text import load_ir
    from tcc_compiler.quant.golden import run_golden

    cache = prog.__dict__.setdefault("_golden_graphs", {})
    for k, sub in prog.programs.items():
        if k not in cache:
            cache[k] = load_ir(Path(sub.folder) / IR_FILE)
        gold = run_golden(cache[k], res[f"feed:{k}"])
        for o in sub.manifest["outputs"]:
            g, s = gold.get("int:" + o["name"]), res[f"int:{k}:{o['name']}"]
            if g is None or g.reshape(-1).tobytes() != s.reshape(-1).tobytes():
                return False
        if sub.stream is not None and not _stream_exact(prog, k, sub, res):
            return False
    return True


def _stream_exact(prog: SegmentedProgram, k: int, sub, res: dict[str, np.ndarray]) -> bool:
    """Whether NPU segment ``k``'s stream program (``sub.stream``) gives every image of its
    run the outputs the main program gave ``res["feed:<k>"]`` (its executor built once per
    segment and kept on ``prog``)."""
    from tcc_compiler.runtime.stream_check import stream_matches
    from tcc_compiler.sim.executor import Executor

    exs = prog.__dict__.setdefault("_stream_executors", {})
    if k not in exs:
        exs[k] = Executor(sub.stream.cmd, sub.stream.weights, sub.target)
    feed = res[f"feed:{k}"]
    if not isinstance(feed, dict):
        feed = {sub.input_records[0]["name"]: feed}
    ints = {o["name"]: res[f"int:{k}:{o['name']}"] for o in sub.manifest["outputs"]}
    return stream_matches(sub.stream, exs[k], sub.quantize_inputs(feed), ints)


def is_segmented_folder(manifest: dict) -> bool:
    """True for a parsed top-level manifest of a segmented model."""
    return isinstance(manifest, dict) and manifest.get("layout") == "segmented"


def load_segmented(folder: str | os.PathLike, manifest: dict) -> SegmentedProgram:
    """:class:`SegmentedProgram` of ``folder`` whose parsed manifest is ``manifest``."""
    return SegmentedProgram(folder, manifest)


def refuse_segmented(folder: str | os.PathLike, what: str) -> None:
    """Raise InputError when ``folder`` holds a segmented model, for commands that work on one
    NPU program (``what``: e.g. "tccc disasm"); the message names the segment folders to use.
    A folder without a readable manifest passes (the command reports that itself)."""
    import json

    try:
        manifest = json.loads((Path(folder) / MANIFEST_FILE).read_bytes())
    except (OSError, ValueError):
        return
    if not is_segmented_folder(manifest):
        return
    npu = [s.get("folder") for s in manifest.get("segments", [])
           if isinstance(s, dict) and s.get("device") == "npu"]
    raise InputError(f"{folder}: a segmented model ({len(npu)} NPU programs and host ONNX "
                     f"graphs); {what} works on one NPU program: give one of "
                     f"{', '.join(str(Path(folder) / str(n)) for n in npu[:4])}"
                     f"{' ...' if len(npu) > 4 else ''}")
