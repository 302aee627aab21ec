"""Check a ``--cores 2`` folder's stream program (specs/manifest.md "Stream program") when the
folder is loaded: the manifest's ``stream`` object, the files it names, their sizes and CRC-32,
and both binaries decoded. The stream program is what a two-core device runs for a stream of
images, so it is trusted no more than the main program: a missing, truncated or replaced
``npu_cmd_stream.bin`` / ``quantized_network_stream.bin`` fails the load (one line, exit 2)
instead of going unnoticed by ``tccc run``/``inspect``/``disasm``."""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tcc_compiler.binfmt.cmdfile import CmdFile, read_cmd_file
from tcc_compiler.binfmt.weightfile import WeightFile, read_weight_file
from tcc_compiler.emit.files import STREAM_CMD_FILE, STREAM_WEIGHT_FILE, WEIGHT_FILE
from tcc_compiler.errors import FormatError, InputError, TccError
from tcc_compiler.runtime.manifest_check import is_num

#: integer fields of the ``stream`` object and their least legal value
_INTS = {"cores": 1, "images": 1, "images_per_core": 1, "input_stride_bytes": 1,
         "output_stride_bytes": 1, "input_bytes": 0, "output_bytes": 0, "act_arena_bytes": 0,
         "run_cycles": 1, "period_cycles": 1}
#: how far ``period_ms`` may be from ``period_cycles`` at the manifest's clock (relative): a
#: writer that prints fewer digits than Python's float repr still passes
PERIOD_MS_REL_TOL = 1e-6


@dataclass(frozen=True)
class StreamProgram:
    """A checked stream program: the manifest's ``stream`` object (``record``) and both of its
    binaries decoded (``cmd``: the command container, ``weights``: the weight file it reads)."""

    record: dict
    cmd: CmdFile
    weights: WeightFile


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_record(rec, manifest: dict, where: str) -> None:
    """Raise FormatError (one line naming ``where`` and the field) unless ``rec`` has the
    fields the stream program is run by, of the right types and in range, its offsets naming
    the (checked) ``manifest``'s inputs and outputs."""
    if not isinstance(rec, dict):
        raise FormatError(f"{where}: stream: expected an object, got "
                          f"{type(rec).__name__ if rec is not None else 'null'}")
    if rec.get("commands") != STREAM_CMD_FILE:
        raise FormatError(f"{where}: stream.commands: expected {STREAM_CMD_FILE!r}, got "
                          f"{rec.get('commands')!r}")
    if rec.get("weights") not in (WEIGHT_FILE, STREAM_WEIGHT_FILE):
        raise FormatError(f"{where}: stream.weights: expected {WEIGHT_FILE!r} or "
                          f"{STREAM_WEIGHT_FILE!r}, got {rec.get('weights')!r}")
    for key, least in _INTS.items():
        v = rec.get(key)
        if not _is_int(v) or v < least:
            raise FormatError(f"{where}: stream.{key}: expected an integer >= {least}, got "
                              f"{v!r}")
    if rec["images"] != rec["cores"] * rec["images_per_core"]:
        raise FormatError(f"{where}: stream: images {rec['images']} is not cores "
                          f"{rec['cores']} x images_per_core {rec['images_per_core']}")
    for key, stride in (("input_offsets", "input_stride_bytes"),
                        ("output_offsets", "output_stride_bytes")):
        offs = rec.get(key, {})
        if not isinstance(offs, dict) or not all(
                _is_int(v) and 0 <= v < rec[stride] for v in offs.values()):
            raise FormatError(f"{where}: stream.{key}: expected an object of name -> byte "
                              f"offset in [0, {stride} {rec[stride]}), got {offs!r}"[:300])
    _check_period(rec, manifest, where)
    _check_names(rec, manifest, where)
    _check_files(rec, where)


def _check_period(rec: dict, manifest: dict, where: str) -> None:
    """``period_cycles`` (typed by :data:`_INTS`) is ``ceil(run_cycles / images)``, so no more
    than ``run_cycles`` (less for several images), and ``period_ms`` a finite number equal to
    ``period_cycles`` at the manifest target's ``clock_hz`` (within
    :data:`PERIOD_MS_REL_TOL`; specs/manifest.md "Stream program"). The target was checked
    by :func:`~tcc_compiler.runtime.manifest_check.check_manifest`.

    Raises:
        FormatError: naming ``where`` and the field.
    """
    run, period, images = rec["run_cycles"], rec["period_cycles"], rec["images"]
    if period != -(-run // images):
        raise FormatError(f"{where}: stream.period_cycles: {period} is not run_cycles {run} / "
                          f"images {images} rounded up ({-(-run // images)})")
    ms = rec.get("period_ms")
    if not is_num(ms):
        raise FormatError(f"{where}: stream.period_ms: expected a number of milliseconds, "
                          f"got {ms!r:.40}")
    clock = manifest["target"]["clock_hz"]
    try:
        want = period / clock * 1e3
    except OverflowError:   # a run_cycles no float holds: no finite period_ms equals it
        want = math.inf
    if not math.isclose(ms, want, rel_tol=PERIOD_MS_REL_TOL):
        raise FormatError(f"{where}: stream.period_ms: {ms:.6g} is not period_cycles "
                          f"{str(period):.40} at the target's {clock} Hz clock ({want:.6g} ms)")


def _check_files(rec: dict, where: str) -> None:
    """``files`` records the stream's own files only (no other name, no path) and
    ``tail_from`` (:func:`_check_tail_from`) is a tensor name or null.

    Raises:
        FormatError: naming ``where`` and the field.
    """
    files = rec.get("files")
    if not isinstance(files, dict) or STREAM_CMD_FILE not in files:
        raise FormatError(f"{where}: stream.files: expected an object recording "
                          f"{STREAM_CMD_FILE}")
    other = [k for k in files if k not in (STREAM_CMD_FILE, STREAM_WEIGHT_FILE)]
    if other:   # the stream's own files only: no other name, no path
        raise FormatError(f"{where}: stream.files: {other[0]!r:.80} is not a stream file "
                          f"({STREAM_CMD_FILE}, {STREAM_WEIGHT_FILE})")
    _check_tail_from(rec, where)


def _check_tail_from(rec: dict, where: str) -> None:
    """``tail_from`` is null or names a tensor: a non-empty string, and only where a core
    runs several images (a tail batch shares one weight read between ``images_per_core``
    images; at one image per core the whole network runs one image at a time and the field
    is null: specs/manifest.md "Stream program").

    Raises:
        FormatError: naming ``where`` and the field.
    """
    tail = rec.get("tail_from")
    if tail is None:
        return
    if not isinstance(tail, str) or not tail.strip():
        raise FormatError(f"{where}: stream.tail_from: expected a tensor name or null, got "
                          f"{tail!r:.40}")
    if rec["images_per_core"] < 2:
        raise FormatError(f"{where}: stream.tail_from: {tail!r:.80} with images_per_core "
                          f"{rec['images_per_core']}: a tail batch runs several images per "
                          "core (null when each core runs one)")


def _check_names(rec: dict, manifest: dict, where: str) -> None:
    """``input_offsets`` must name exactly the manifest's inputs (``inputs``, else ``input``)
    and ``output_offsets`` exactly its ``outputs`` (the tensors the NPU writes; host ops'
    results have no offset): an extra key is an offset of nothing, a missing one leaves an
    output nowhere (``tccc run --check`` read it as not bit-exact, naming no field).

    Raises:
        FormatError: naming ``where``, the field and the first key extra or missing.
    """
    ins = manifest.get("inputs") or [manifest["input"]]   # checked by check_manifest
    for key, what, recs in (("input_offsets", "input", ins),
                            ("output_offsets", "output", manifest["outputs"])):
        names = [r["name"] for r in recs]
        got = rec.get(key)
        extra = [k for k in got if k not in names] if isinstance(got, dict) else []
        missing = [n for n in names if n not in got] if isinstance(got, dict) else names
        if extra:
            raise FormatError(f"{where}: stream.{key}: {extra[0]!r:.80} names no {what} of "
                              f"the manifest (its {what}s: {', '.join(names)})"[:300])
        if missing:
            raise FormatError(f"{where}: stream.{key}: no offset for {what} {missing[0]!r}")


def _read_checked(folder: Path, name: str, files: dict, main_files: dict) -> bytes:
    """The bytes of ``folder/name``, checked against its record (the stream's ``files``, or the
    main manifest's for the shared quantized_network.bin).

    Raises:
        InputError: the file is missing. FormatError: its size or CRC-32 differs.
    """
    path = folder / name
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: missing (manifest.json's stream program needs it); "
                         "copy the whole output folder, or recompile") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    rec = files.get(name, main_files.get(name))
    if not isinstance(rec, dict) or rec.get("bytes") != len(data) \
            or rec.get("crc32") != zlib.crc32(data):
        raise FormatError(f"{path}: {len(data):,} B, CRC32 {zlib.crc32(data):08x}: not the "
                          f"file manifest.json records for the stream program; recompile or "
                          "copy the folder again")
    return data


def load_stream(folder: Path, manifest: dict, main: CmdFile | None = None
                ) -> StreamProgram | None:
    """The folder's checked stream program, or None when the manifest has no ``stream``.

    ``main``: the folder's decoded npu_cmd.bin; each image's slot of the stream's INPUT and
    OUTPUT regions (``input_stride_bytes``, ``output_stride_bytes``) must hold its INPUT and
    OUTPUT region (one image's input and outputs, at the same offsets).

    Raises:
        FormatError: a malformed ``stream`` object, a stream file whose size or CRC-32 is not
            the recorded one, or one that does not decode, DRAM region sizes (ACT, INPUT,
            OUTPUT) other than its header's, or strides smaller than ``main``'s
            regions (one line naming the file).
        InputError: a stream file is missing.
    """
    if "stream" not in manifest:
        return None
    where = str(folder / "manifest.json")
    rec = manifest["stream"]
    _check_record(rec, manifest, where)
    cmd = _read_checked(folder, rec["commands"], rec["files"], manifest.get("files", {}))
    wts = _read_checked(folder, rec["weights"], rec["files"], manifest.get("files", {}))
    try:
        sp = StreamProgram(rec, read_cmd_file(cmd, str(folder / rec["commands"])),
                           read_weight_file(wts, str(folder / rec["weights"])))
    except TccError as exc:
        raise FormatError(f"{folder / rec['commands']}: the stream program does not decode "
                          f"({exc})") from None
    if sp.cmd.input_bytes != rec["input_bytes"] or sp.cmd.output_bytes != rec["output_bytes"]:
        raise FormatError(f"{folder / rec['commands']}: INPUT/OUTPUT regions "
                          f"{sp.cmd.input_bytes}/{sp.cmd.output_bytes} B, manifest.json's stream "
                          f"records {rec['input_bytes']}/{rec['output_bytes']} B")
    if sp.cmd.act_arena_bytes != rec["act_arena_bytes"]:   # was unchecked (a new-user attack)
        raise FormatError(f"{folder / rec['commands']}: ACT region {sp.cmd.act_arena_bytes} B, "
                          f"manifest.json's stream records {rec['act_arena_bytes']} B")
    for what, size in (("input", sp.cmd.input_bytes), ("output", sp.cmd.output_bytes)):
        if rec["images"] * rec[f"{what}_stride_bytes"] > size:
            raise FormatError(f"{where}: stream: {rec['images']} images of "
                              f"{rec[f'{what}_stride_bytes']} B exceed the program's "
                              f"{size} B {what.upper()} region")
    for what in ("input", "output") if main is not None else ():
        stride, size = rec[f"{what}_stride_bytes"], getattr(main, f"{what}_bytes")
        if stride < size:
            raise FormatError(f"{where}: stream.{what}_stride_bytes {stride} is less than "
                              f"one image's {what.upper()} region ({size} B, npu_cmd.bin)")
    return sp


def stream_matches(sp: StreamProgram, executor, input_bytes: bytes, ints: dict) -> bool:
    """Whether the stream program, run on ``sp.record["images"]`` copies of one image, gives
    every image the NPU outputs the main program gave it (``tccc run --check`` on a
    ``--cores 2`` folder: the stream binary is what the device runs for a stream of images).

    Args:
        sp: the checked stream program. executor: an
            :class:`~tcc_compiler.sim.executor.Executor` of ``sp`` (built once by the caller).
        input_bytes: the main program's INPUT-region bytes of the image (int8 NHWC).
        ints: {output name: raw integer NHWC array} of the main program's run (the
            ``"int:" + name`` entries of :meth:`LoadedProgram.run`, without the prefix).

    Raises:
        ExecutionError: the stream program fails on the executor. InputError: as
            :func:`~tcc_compiler.sim.cores.run_stream`.
    """
    from tcc_compiler.sim.cores import run_stream

    rec = sp.record
    outs = run_stream(executor, [input_bytes] * rec["images"], rec["input_stride_bytes"],
                      rec["output_stride_bytes"], rec["output_stride_bytes"])
    offsets = rec.get("output_offsets", {})
    for out in outs:
        for name, want in ints.items():
            raw = np.ascontiguousarray(want).tobytes()
            at = offsets.get(name)
            if not isinstance(at, int) or out[at:at + len(raw)] != raw:
                return False
    return True
