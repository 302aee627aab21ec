"""Load a compiled output folder (manifest + both binaries) and run images through it.

This is what a host application does around the NPU: quantize the preprocessed input to the
NPU's int8 NHWC layout, run the command stream (here on the reference executor), read the
output region, dequantize, and apply the host-side ops (softmax/argmax) listed in the manifest.
"""

from __future__ import annotations

import json
import os
import zlib
from functools import cached_property
from pathlib import Path

import numpy as np

from tcc_compiler.binfmt.cmdfile import read_cmd_file
from tcc_compiler.binfmt.weightfile import read_weight_file
from tcc_compiler.emit.files import (CMD_FILE, MANIFEST_FILE, MANIFEST_VERSION, REPORT_FILE,
                                     WEIGHT_FILE)
from tcc_compiler.errors import ExecutionError, FormatError, InputError, first_line
from tcc_compiler.fsutil import check_path
from tcc_compiler.numerics import dequantize_tensor, jit, quantize_tensor
from tcc_compiler.runtime.manifest_check import check_manifest, version_problem
from tcc_compiler.runtime.stream_check import load_stream
from tcc_compiler.sim.executor import Executor
from tcc_compiler.target import Target

_MANIFEST_KEYS = ("format", "manifest_version", "files", "input", "outputs", "host_ops",
                  "graph_outputs", "preprocess", "target")


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: missing (is this a tccc output folder?)") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from None


def input_layout(manifest: dict) -> str:
    """The ONNX model input's layout recorded in a manifest (``input.onnx_layout``):
    ``"NCHW"`` (the default when absent) or ``"NHWC"``.

    Raises:
        FormatError: any other value (a segmented folder's top-level manifest is not checked
            by :func:`check_manifest`).
    """
    from tcc_compiler.datasets.images import NPY_LAYOUTS

    inp = manifest.get("input")
    layout = inp.get("onnx_layout", "NCHW") if isinstance(inp, dict) else "NCHW"
    if layout not in NPY_LAYOUTS:
        raise FormatError(f"{MANIFEST_FILE}: input.onnx_layout: expected NCHW or NHWC, got "
                          f"{layout!r:.40}")
    return layout


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x.astype(np.float64) - x.max(axis=axis, keepdims=True))
    return (e / e.sum(axis=axis, keepdims=True)).astype(np.float32)


class LoadedProgram:
    """A compiled network ready to run.

    Attributes:
        folder: the output folder. manifest: parsed manifest.json.
        target: the :class:`~tcc_compiler.target.Target` the program was compiled for (the
            manifest's ``target``); the executor runs on it.
        executor: the reference executor with both binaries decoded (reused across runs).
        stream: a ``--cores 2`` folder's checked stream program
            (:class:`~tcc_compiler.runtime.stream_check.StreamProgram`), or None.

    Raises:
        InputError: missing folder/files (the stream program's included). FormatError:
            manifest or binaries fail validation (an older ``manifest_version`` included; the
            stream program's files too). ExecutionError: the program exceeds the
            manifest's target (one line naming ``npu_cmd.bin`` and the command index).
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        check_path(self.folder)   # a symbolic link loop or an over-long name, said as such
        if not self.folder.exists():
            raise InputError(f"{self.folder}: does not exist (expected a tccc output folder)")
        if not self.folder.is_dir():
            raise InputError(f"{self.folder}: not a folder (expected a tccc output folder)")
        mpath = self.folder / MANIFEST_FILE
        try:
            self.manifest = json.loads(_read(mpath))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise FormatError(f"{mpath}: not valid JSON ({exc})") from None
        if not isinstance(self.manifest, dict) or self.manifest.get("format") != "tccc-manifest":
            raise FormatError(f"{mpath}: not a tccc manifest (format field)")
        version = self.manifest.get("manifest_version")
        if version is not None and version != MANIFEST_VERSION:   # before the fields it lacks
            raise FormatError(f"{mpath}: {version_problem(version, self.manifest)}")
        missing = [k for k in _MANIFEST_KEYS if k not in self.manifest]
        if missing:
            raise FormatError(f"{mpath}: missing field(s) {', '.join(missing)}")
        check_manifest(self.manifest, str(mpath))  # every field typed before it is used
        cmd = _read(self.folder / CMD_FILE)
        wts = _read(self.folder / WEIGHT_FILE)
        _check_file_records(self.folder, self.manifest, ((CMD_FILE, cmd), (WEIGHT_FILE, wts)))
        self.cmd = read_cmd_file(cmd, str(self.folder / CMD_FILE))
        self.weights = read_weight_file(wts, str(self.folder / WEIGHT_FILE))
        c = self.cmd
        check_manifest(self.manifest, str(mpath), input_bytes=c.input_bytes,
                       output_bytes=c.output_bytes,
                       header={"cores": c.cores, "act_arena_bytes": c.act_arena_bytes,
                               "input_bytes": c.input_bytes, "output_bytes": c.output_bytes})
        # a --cores 2 folder's stream program is checked like the main one (None without)
        self.stream = load_stream(self.folder, self.manifest, c)
        self.target = Target.from_dict(self.manifest["target"])  # checked by check_manifest
        # the executor refuses a program exceeding its target (SRAM, image mode, array lanes)
        self.executor = Executor(self.cmd, self.weights, self.target)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The float input shape the ONNX model takes (e.g. NCHW [1, 3, H, W])."""
        return tuple(self.manifest["input"]["shape"])

    def checked_input(self, x) -> np.ndarray:
        """:meth:`as_input`, then checked: the model's input shape, finite values.

        Raises:
            InputError: as :meth:`as_input`; a wrong shape; NaN or Inf.
        """
        x = self.as_input(x)
        if tuple(x.shape) != self.input_shape:
            raise InputError(f"input shape {tuple(x.shape)} differs from the model's "
                             f"{self.input_shape}")
        if not np.all(np.isfinite(x)):
            raise InputError("input contains NaN or Inf after preprocessing (a --mean/--std/"
                             "--scale that overflows float32 gives that too)")
        return x

    def as_input(self, x) -> np.ndarray:
        """``x`` as the float32 input array: an array as given (NCHW), or an image / ``.npy``
        path loaded with the compiled preprocessing (manifest ``preprocess``; a ``.npy`` of an
        NHWC model may hold NHWC ``[1, H, W, C]``, as its ONNX input takes, or NCHW).

        Raises:
            InputError: a path that does not load as exactly one input, or a value that is
                neither an array nor a path (numpy's own ValueError used to escape).
        """
        if isinstance(x, (str, os.PathLike)):
            from tcc_compiler.datasets.images import LazyInputs, Preprocess

            xs = LazyInputs([x], Preprocess.from_dict(self.manifest["preprocess"]),
                            self.input_shape, input_layout(self.manifest))
            if len(xs) != 1:
                raise InputError(f"{x}: holds {len(xs)} inputs; run takes one (use tccc run "
                                 "or a loop for several)")
            return xs[0]
        try:
            return np.asarray(x, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise InputError(f"input: expected a float32 array shaped {self.input_shape} or an "
                             f"image/.npy path, got {type(x).__name__} ({exc})") from None

    def quantize(self, x: np.ndarray) -> bytes:
        """Float NCHW input (or an image/.npy path, :meth:`as_input`) -> INPUT-region bytes
        (int8 NHWC, padded to the region size).

        Raises:
            InputError: wrong shape or non-finite values, or an input that is not an array
                or a path.
        """
        spec = self.manifest["input"]
        if "inputs" in self.manifest:
            raise InputError(f"{self.folder}: this NPU program takes "
                             f"{len(self.manifest['inputs'])} inputs (a segment of a bigger "
                             "model): run the segmented folder it belongs to")
        x = self.checked_input(x)
        # one compiled pass to NHWC (the same float64 operations, so the same integers: 0.25
        # -> 0.1 ms on a 224x224x3 input; its import and load paid on the first input, with
        # the executor's kernels, not on the second); else numpy
        q = jit.quantize_nhwc(x, spec["scale"][0], spec["zero_point"][0], np.int8)
        if q is None:
            q = quantize_tensor(x, spec["scale"][0], spec["zero_point"][0])
            if len(x.shape) == 4:   # x is NCHW whatever the ONNX layout (manifest input.shape)
                q = q[0].transpose(1, 2, 0)
        raw = np.ascontiguousarray(q).tobytes()
        return raw + bytes(self.cmd.input_bytes - len(raw))

    @property
    def input_records(self) -> list[dict]:
        """The manifest's input records in INPUT-region order: ``inputs`` for a program with
        several inputs (an NPU segment), else ``[input]`` (every older folder too)."""
        return self.manifest.get("inputs") or [self.manifest["input"]]

    def quantize_inputs(self, xs: dict) -> bytes:
        """INPUT-region bytes of a program with one or several inputs.

        Args:
            xs: {input name: array} for every input record: float32 in the record's
                ``shape`` (NCHW; quantized with its scale and zero point), or int8 NHWC
                ``npu_hwc`` (already quantized: an earlier NPU segment's output, handed
                over as it is).

        Raises:
            InputError: a missing input, a wrong shape or dtype, non-finite values.
        """
        recs = self.input_records
        if len(recs) == 1 and np.asarray(xs[recs[0]["name"]]).dtype != np.int8:
            return self.quantize(xs[recs[0]["name"]])
        region = bytearray(self.cmd.input_bytes)
        for rec in recs:
            if rec["name"] not in xs:
                raise InputError(f"{self.folder}: no array for input '{rec['name']}'")
            a = np.asarray(xs[rec["name"]])
            if a.dtype == np.int8:
                want = tuple(rec["npu_hwc"])
            else:
                want = tuple(rec["shape"])
                a = np.asarray(a, np.float32)
                if not np.all(np.isfinite(a)):
                    raise InputError(f"input '{rec['name']}' contains NaN or Inf")
            if tuple(a.shape) != want:
                raise InputError(f"input '{rec['name']}': shape {tuple(a.shape)}, the program "
                                 f"takes {want}")
            if a.dtype != np.int8:
                a = quantize_tensor(a, rec["scale"][0], rec["zero_point"][0])[0].transpose(
                    1, 2, 0)
            raw = np.ascontiguousarray(a).tobytes()
            region[rec["offset"]:rec["offset"] + len(raw)] = raw
        return bytes(region)

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Run one input.

        Args:
            x: float32 array shaped like the ONNX input (after preprocessing), or an image
                or ``.npy`` path (:meth:`as_input`); for a program with several inputs (an
                NPU segment) a dict, as :meth:`quantize_inputs` takes it.

        Returns:
            {name: float32 array} for every graph output (host ops applied) and every NPU
            output (dequantized, NCHW/flat shape), plus ``"int:" + name`` raw integer NHWC
            arrays of the NPU outputs.
        """
        if isinstance(x, dict) and "inputs" in self.manifest:   # a segment's several inputs
            return self.decode_outputs(self.execute(self.quantize_inputs(x)))
        return self.decode_outputs(self.execute(self.quantize(x)))

    def execute(self, input_bytes: bytes, schedule: str = "inorder", seed: int = 0) -> bytes:
        """Run the command stream on INPUT-region bytes; returns the OUTPUT region.

        Raises:
            ExecutionError (or its subclass HazardError): an illegal command; the message is
                prefixed with this folder's ``npu_cmd.bin`` path (the executor names only the
                command index and mnemonic) unless it names a file of the folder already (a
                bad parameter record: quantized_network.bin, its byte offset and record).
            InputError: wrong input length or schedule.
        """
        try:
            return self.executor.run(input_bytes, schedule=schedule, seed=seed)
        except ExecutionError as exc:
            where = str(self.folder / CMD_FILE)
            if not str(exc).startswith(str(self.folder)):   # a message naming no file of ours
                exc.args = (f"{where}: {exc}",) + exc.args[1:]
            raise

    def decode_outputs(self, out: bytes) -> dict[str, np.ndarray]:
        """Split the OUTPUT region into tensors, dequantize, apply host ops."""
        res: dict[str, np.ndarray] = {}
        for o, scale, zero_point in self._output_params:
            dt = {"int32": "<i4", "int16": "<i2"}.get(o["dtype"], np.int8)
            h, w, c = o["npu_hwc"]
            arr = np.frombuffer(out, dtype=dt, count=h * w * c, offset=o["offset"]).reshape(
                h, w, c)
            res["int:" + o["name"]] = arr
            f = dequantize_tensor(arr, scale, zero_point)
            shape = tuple(o["shape"])
            f = f.transpose(2, 0, 1)[None] if len(shape) == 4 else f
            res[o["name"]] = f.reshape(shape)
        for op in self.manifest["host_ops"]:
            x = res[op["input"]]
            if op["op"] == "softmax":
                res[op["output"]] = _softmax(x, op["axis"])
            elif op["op"] == "argmax":
                res[op["output"]] = np.argmax(x, axis=op["axis"]).astype(np.int64)
            else:
                raise FormatError(f"{self.folder / MANIFEST_FILE}: unknown host op {op['op']}")
        return res

    @cached_property
    def _output_params(self) -> list[tuple[dict, np.ndarray, np.ndarray]]:
        """Per manifest output: (its record, its scale and zero point as float64 arrays),
        made once: a classifier's 1000 per-channel values converted from the manifest's lists
        on every image cost about 25 us of EfficientNet-Lite0's ~4 ms."""
        return [(o, np.asarray(o["scale"], np.float64), np.asarray(o["zero_point"], np.float64))
                for o in self.manifest["outputs"]]

    def final_output(self, res: dict[str, np.ndarray]) -> np.ndarray:
        """The first graph output (the network's answer: logits or probabilities)."""
        return res[self.manifest["graph_outputs"][0]]


def _num(v, spec: str) -> str:
    """A manifest number for a message: formatted when it is an int, else its repr (a
    damaged manifest may hold null or a string there; formatting those was a TypeError)."""
    return format(v, spec) if isinstance(v, int) and not isinstance(v, bool) else repr(v)


def _check_file_records(folder: Path, manifest: dict, files) -> None:
    """Compare each binary with its manifest record (bytes, CRC32) and say which failure it
    is: a file whose own checks fail (header CRC, stream CRC, structure) is corrupted; one of
    another size that decodes is from another compilation; same size, valid, another CRC32:
    corrupted or replaced (a flipped byte inside a weight payload is only seen here).

    Raises:
        FormatError: one line naming the file and which of these it is.
    """
    from tcc_compiler.errors import TccError

    for name, data in files:
        rec = manifest["files"].get(name, {})
        crc = zlib.crc32(data)
        if rec.get("bytes") == len(data) and rec.get("crc32") == crc:
            continue
        try:
            (read_cmd_file if name == CMD_FILE else read_weight_file)(data, str(folder / name))
        except TccError as exc:  # its own checks fail: damaged on disk or in transfer
            raise FormatError(f"{folder / name}: corrupted (CRC32 {crc:08x}, manifest.json "
                              f"records {_num(rec.get('crc32'), '08x')}; {exc}); recompile or "
                              "copy the folder again") from None
        if rec.get("bytes") != len(data):
            raise FormatError(f"{folder / name}: {len(data):,} B but manifest.json records "
                              f"{_num(rec.get('bytes'), ',')} B: a file from another "
                              "compilation; copy the whole output folder together")
        raise FormatError(f"{folder / name}: corrupted or replaced: CRC32 {crc:08x} differs "
                          f"from the {_num(rec.get('crc32'), '08x')} manifest.json records (same "
                          "size); recompile or copy the folder again")


def load_program(folder: str | Path):
    """Load and validate a compiled output folder: a :class:`LoadedProgram`, or for a
    segmented model (manifest ``layout: "segmented"``, specs/manifest.md) a
    :class:`tcc_compiler.runtime.segmented.SegmentedProgram` with the same interface.

    Raises:
        InputError: missing folder/files. FormatError: manifest or binaries fail validation.
        ExecutionError: the program exceeds the manifest's target.
    """
    try:
        manifest = json.loads((Path(folder) / MANIFEST_FILE).read_bytes())
    except (OSError, ValueError):  # LoadedProgram reports it with the right message
        manifest = None
    if isinstance(manifest, dict) and manifest.get("layout") == "segmented" \
            and manifest.get("format") == "tccc-manifest":
        from tcc_compiler.runtime.segmented import load_segmented

        return load_segmented(folder, manifest)
    return LoadedProgram(folder)


#: Fields of a report.json layer row that ``tccc report`` / ``inspect`` / ``disasm`` read, with
#: the JSON types they need (``int`` excludes bool; "shape" = list of ints; "names" = list of
#: strings; "ranges" = list of ``[start, end)`` pairs of non-negative ints, start < end). Rows
#: must hold every field marked required (True).
_LAYER_FIELDS = {"name": (str, True), "op": (str, True), "input_shape": ("shape", True),
                 "output_shape": ("shape", True), "macs": (int, True),
                 "estimated_cycles": ((int, float), True), "sram_peak_bytes": (int, True),
                 "tiles": (int, True), "weight_bytes": (int, True), "source": ("names", False),
                 "tiling": (str, False), "commands": (int, False),
                 "command_ranges": ("ranges", False),
                 "dram_read_bytes": (int, False), "dram_write_bytes": (int, False),
                 "mac_utilisation": ((int, float), False),
                 "weight_raw_bytes": (int, False), "weight_ratio": ((int, float), False)}
#: Optional top-level numeric fields of report.json that the consumers format as numbers.
_TOP_NUMBERS = ("command_bytes", "weight_bytes", "macs", "estimated_cycles",
                "estimated_latency_ms", "sram_peak_bytes", "dram_activation_bytes",
                "dram_read_bytes", "dram_write_bytes", "minimal_dram_bytes", "mac_utilisation")


def _json_type_ok(value, kind) -> bool:
    """Whether ``value`` (parsed JSON) has ``kind`` from :data:`_LAYER_FIELDS`."""
    if kind == "shape":
        return isinstance(value, list) and all(
            isinstance(x, int) and not isinstance(x, bool) for x in value)
    if kind == "ranges":
        return isinstance(value, list) and all(
            isinstance(r, list) and len(r) == 2 and _json_type_ok(r, "shape")
            and 0 <= r[0] < r[1] for r in value)
    if kind == "names":
        return isinstance(value, list) and all(isinstance(x, str) for x in value)
    return isinstance(value, kind) and not isinstance(value, bool)


def check_report(data, path: Path) -> dict:
    """Check the structure of a parsed report.json (the fields its consumers read).

    Args:
        data: the parsed JSON. path: the file (for messages).

    Returns:
        ``data`` unchanged.

    Raises:
        FormatError: one line naming ``path`` and the first bad field (e.g.
            ``layers[3].name: expected str, got int``) and saying to recompile.
    """
    def bad(field: str, want: str, got) -> FormatError:
        return FormatError(f"{path}: {field}: expected {want}, got "
                           f"{'null' if got is None else type(got).__name__}; "
                           "recompile to rewrite it")

    if not isinstance(data, dict):
        raise bad("top level", "a JSON object", data)
    for key in _TOP_NUMBERS:
        if key in data and not _json_type_ok(data[key], (int, float)):
            raise bad(key, "a number", data[key])
    for key in ("target",):
        if key in data and not isinstance(data[key], str):
            raise bad(key, "a string", data[key])
    for key in ("roofline", "npu_ops", "weight_compression", "capacity_bound"):
        if key in data and not isinstance(data[key], dict):
            raise bad(key, "an object", data[key])
    layers = data.get("layers", [])
    if not isinstance(layers, list):
        raise bad("layers", "a list", layers)
    names = {"shape": "a list of ints", "names": "a list of strings",
             "ranges": "a list of [start, end) pairs"}
    for i, row in enumerate(layers):
        if not isinstance(row, dict):
            raise bad(f"layers[{i}]", "an object", row)
        for key, (kind, required) in _LAYER_FIELDS.items():
            if key not in row:
                if required:
                    raise FormatError(f"{path}: layers[{i}].{key}: missing; recompile to "
                                      "rewrite it")
                continue
            if not _json_type_ok(row[key], kind):
                want = names.get(kind) if isinstance(kind, str) else \
                    "a number" if isinstance(kind, tuple) else kind.__name__
                raise bad(f"layers[{i}].{key}", want, row[key])
    return data


def read_report(folder: str | Path) -> dict | None:
    """The folder's ``report.json`` (per-layer table, estimates) as a dict; None when absent.

    The structure is checked (:func:`check_report`) so consumers may index the fields they
    read without guarding each one.

    Raises:
        FormatError: the file is not UTF-8 JSON holding an object, cannot be read, or a field
            the consumers use is missing or of the wrong type (the message names the file and
            the field and says to recompile).
    """
    path = Path(folder) / REPORT_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as exc:
        reason = first_line(exc, 10**6)
        raise FormatError(f"{path}: not valid JSON ({reason}); recompile to rewrite it") \
            from None
    return check_report(data, path)
