#!/usr/bin/env python3
"""Fuzz every decoder tccc has: each input must give a clean ``TccError`` within 1 s.

Targets (each starts from a seed produced by compiling a small residual net with the CLI, so
the seeds follow whatever the current formats are):

- ``cmd``: ``read_cmd_file`` on ``npu_cmd.bin`` bytes;
- ``weights``: ``read_weight_file`` on ``quantized_network.bin`` bytes;
- ``program``: ``load_program`` + one executor run on an output folder whose ``npu_cmd.bin``
  is mutated (CRCs optionally repaired, the manifest CRC updated, so the executor sees hostile
  but well-formed command streams);
- ``fields``: like ``program``, but the mutated bytes are a script setting integer fields of
  the decoded commands, re-encoded by the real encoder (reaches deep into the executor);
- ``manifest``: ``load_program`` + one run with a mutated ``manifest.json``;
- ``ir``: ``load_ir`` on mutated ``quantized.tir`` text (valid ``.npz`` sidecar);
- ``npz``: ``load_ir`` with a mutated ``quantized.npz`` sidecar;
- ``npy``: ``load_inputs`` on a mutated calibration ``.npy`` array;
- ``calib``: ``read_table`` on a mutated ``calib_table.json`` (when tccc writes one).

A case passes when the decoder returns, or raises a :class:`~tcc_compiler.errors.TccError`
subclass, within ``TIME_LIMIT_S`` and with a tracemalloc peak within :func:`alloc_budget`
(a multiple of the input's own size, plus the memory a program declares when it is run;
programs declaring more than ``MEMORY_RUN_LIMIT`` are decoded but not run).
Anything else (another exception type, a slow case, a large allocation) is a failure; the
failing input is written to ``--crash-dir``.

Mutations are a small language (:data:`OPS`) shared with the hypothesis tests in
``tests/binfmt/test_fuzz_decoders.py``: truncation, bit flips, 8/32-bit overwrites with boundary
values (0, 2**31, 2**32-1, 2**30, ...), inserted/deleted/duplicated ranges, number and line
edits for text, structural JSON edits, and CRC repair so mutations reach past the checksums.

Usage::

    python3 tools/fuzz.py [--seconds 60] [--targets cmd,weights,...] [--seed 0]
                          [--crash-dir DIR] [--atheris]

``--atheris`` runs the same targets under atheris (libFuzzer, coverage-guided) when it is
installed (``pip install atheris``; not a tccc dependency). It instruments every loaded
function first (about 13,000; several minutes on a 2-core machine) and then runs ~35 cases/s;
the plain mode needs nothing but tccc and runs 50-1,000 cases/s depending on the target.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import random
import re
import shutil
import struct
import sys
import tempfile
import time
import tracemalloc
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TIME_LIMIT_S = 1.0
#: Programs declaring more DRAM + SRAM than this (bytes) are loaded but not executed.
MEMORY_RUN_LIMIT = 64 << 20
#: Interesting 32-bit values for field overwrites (sizes, counts, offsets, signs).
U32_VALUES = (0, 1, 2, 3, 4, 63, 64, 65, 255, 256, 0x7FFF, 0x8000, 0xFFFF, 0x10000,
              2**30 - 1, 2**30, 2**30 + 1, 2**31 - 1, 2**31, 2**32 - 64, 2**32 - 1)
#: Replacement tokens for numbers in text formats (IR text, manifest JSON).
NUM_TOKENS = (b"0", b"-1", b"1", b"-128", b"128", b"65536", b"1000000000", b"4294967296",
              b"99999999999999999999", b"1e308", b"-1e-320", b"nan", b"inf", b"-0", b"0.5")
#: Replacement values for structural JSON edits.
JSON_VALUES = (None, 0, -1, 1, 2**31, 2**64, -(2**63), 0.5, 1e308, "", "x", "../../etc/passwd",
               [], {}, [1, 2, 3], [0], {"a": 1}, True, False, "NaN", [[1]], [-1, 1, 1],
               [10**9, 10**9, 10**9])
#: Mutation operators; a mutation is (op, a, b) with a, b arbitrary non-negative ints.
OPS = ("truncate", "flip", "set_u8", "set_u32", "insert", "delete", "dup", "num", "line_del",
       "line_dup", "json", "fix_crc")


# ---- the seed corpus ---------------------------------------------------------------------------
def build_seed_model():
    """A small residual classifier (NCHW [1, 3, 16, 16]) with a host-side Softmax: conv+relu,
    maxpool, a residual block, global average pool, flatten, gemm, softmax."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    r = np.random.default_rng(7)
    inits = {
        "w1": r.standard_normal((8, 3, 3, 3)) * 0.3, "b1": r.standard_normal(8) * 0.1,
        "w2": r.standard_normal((8, 8, 3, 3)) * 0.15, "b2": r.standard_normal(8) * 0.1,
        "fc_w": r.standard_normal((10, 8)) * 0.5, "fc_b": r.standard_normal(10) * 0.1,
    }
    mk = helper.make_node
    nodes = [
        mk("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        mk("Relu", ["c1"], ["r1"], name="relu1"),
        mk("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2], name="pool1"),
        mk("Conv", ["p1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
        mk("Add", ["c2", "p1"], ["a2"], name="add2"),
        mk("Relu", ["a2"], ["r2"], name="relu2"),
        mk("GlobalAveragePool", ["r2"], ["gap"], name="gap"),
        mk("Flatten", ["gap"], ["flat"], name="flat"),
        mk("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], transB=1, name="fc"),
        mk("Softmax", ["logits"], ["prob"], axis=1, name="softmax"),
    ]
    graph = helper.make_graph(
        nodes, "fuzz_seed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, [1, 10])],
        [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def build_seeds(workdir: Path) -> Path:
    """Compile :func:`build_seed_model` with the CLI into ``workdir/seed``; return the folder.

    Also writes ``workdir/calib.npy`` (two float32 NCHW inputs), the calibration data used.

    Raises:
        RuntimeError: the compile failed (the message holds the CLI's stderr).
    """
    import onnx

    from tcc_compiler.cli.main import main

    workdir.mkdir(parents=True, exist_ok=True)
    onnx.save(build_seed_model(), str(workdir / "seed.onnx"))
    calib = np.random.default_rng(3).standard_normal((2, 3, 16, 16)).astype(np.float32)
    np.save(workdir / "calib.npy", calib)
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = main(["-q", "compile", str(workdir / "seed.onnx"), "--input", "16x16x3",
                     "-o", str(workdir / "seed"), "--calib", str(workdir / "calib.npy")])
    if code != 0:
        raise RuntimeError(f"seed compile failed ({code}): {err.getvalue().strip()}")
    return workdir / "seed"


# ---- mutations ---------------------------------------------------------------------------------
_NUM_RE = re.compile(rb"-?\d+(?:\.\d+)?(?:e-?\d+)?")


def _json_mutate(data: bytes, seed: int) -> bytes:
    """Replace or delete one random node of a JSON document (unchanged if it is not JSON)."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return data
    rng = random.Random(seed)
    paths: list[list] = []

    def walk(x, p):
        paths.append(p)
        if isinstance(x, dict):
            for k, v in x.items():
                walk(v, p + [k])
        elif isinstance(x, list):
            for i, v in enumerate(x):
                walk(v, p + [i])

    walk(doc, [])
    path = rng.choice(paths)
    junk = rng.choice(JSON_VALUES)
    if not path:
        return json.dumps(junk).encode()
    cur = doc
    for k in path[:-1]:
        cur = cur[k]
    if isinstance(cur, dict) and rng.random() < 0.25:
        del cur[path[-1]]
    else:
        cur[path[-1]] = junk
    return json.dumps(doc).encode()


def apply_mutation(data: bytes, op: str, a: int, b: int) -> bytes:
    """Apply one mutation ``(op, a, b)`` (see :data:`OPS`); ``a``/``b`` pick positions and
    values modulo the data size and value tables. ``fix_crc`` is a marker handled by the
    target and leaves the bytes unchanged."""
    n = len(data)
    d = bytearray(data)
    if op == "truncate":
        return bytes(d[:a % (n + 1)])
    if op == "json":
        return _json_mutate(data, a)
    if op == "fix_crc" or (n == 0 and op not in ("insert",)):
        return data
    if op == "flip":
        d[a % n] ^= 1 << (b % 8)
    elif op == "set_u8":
        d[a % n] = b & 0xFF
    elif op == "set_u32":
        pos = (a % max(1, n - 3)) & ~3
        value = U32_VALUES[b % len(U32_VALUES)] if b % 3 else b & 0xFFFFFFFF
        d[pos:pos + 4] = struct.pack("<I", value)[:len(d[pos:pos + 4])]
    elif op == "insert":
        pos = a % (n + 1)
        d[pos:pos] = bytes([(b >> 8) & 0xFF]) * (b % 64 + 1)
    elif op == "delete":
        pos = a % n
        del d[pos:pos + b % 64 + 1]
    elif op == "dup":
        pos = a % n
        chunk = d[pos:pos + b % 64 + 1]
        d[pos:pos] = chunk
    elif op == "num":
        spans = [m.span() for m in _NUM_RE.finditer(data)]
        if spans:
            s, e = spans[a % len(spans)]
            d[s:e] = NUM_TOKENS[b % len(NUM_TOKENS)]
    elif op in ("line_del", "line_dup"):
        lines = data.splitlines(keepends=True)
        k = a % len(lines)
        if op == "line_del":
            del lines[k]
        else:
            lines.insert(b % len(lines), lines[k])
        return b"".join(lines)
    return bytes(d)


def mutate(seed: bytes, muts: list[tuple[str, int, int]], fixup: Callable | None) -> bytes:
    """Apply ``muts`` in order, then ``fixup`` (CRC repair) when a ``fix_crc`` is among them."""
    data = seed
    for op, a, b in muts:
        data = apply_mutation(data, op, a, b)
    if fixup is not None and any(op == "fix_crc" for op, _, _ in muts):
        data = fixup(data)
    return data


def random_mutations(rng: random.Random) -> list[tuple[str, int, int]]:
    """1-4 random mutations (70 % of the time followed by a CRC repair)."""
    muts = [(rng.choice(OPS[:-1]), rng.getrandbits(32), rng.getrandbits(32))
            for _ in range(rng.randint(1, 4))]
    if rng.random() < 0.7:
        muts.append(("fix_crc", 0, 0))
    return muts


def _crc_fixup(fields, body: str) -> Callable[[bytes], bytes]:
    """Repair the body CRC (``stream_crc32`` or ``data_crc32``) and the header CRC of a
    container, reading field offsets from its header table (so it follows format changes)."""
    from tcc_compiler.binfmt.cmdfile import header_offsets

    off = {name: pos for name, pos, _, _ in header_offsets(fields)}

    def fix(data: bytes) -> bytes:
        d = bytearray(data)
        if len(d) < 64 or "header_crc32" not in off:
            return data
        start_field = "header_bytes" if body == "stream_crc32" else "data_offset"
        if body in off and start_field in off:
            (start,) = struct.unpack_from("<I", d, off[start_field])
            struct.pack_into("<I", d, off[body], zlib.crc32(bytes(d[start:])))
        hc = off["header_crc32"]
        struct.pack_into("<I", d, hc, zlib.crc32(bytes(d[:hc])))
        return bytes(d)

    return fix


# ---- targets -----------------------------------------------------------------------------------
@dataclass
class Target:
    """One decoder under test.

    Attributes:
        name: target name. seed: the valid input mutations start from.
        run: decodes one input (may raise TccError); returns extra bytes the case was allowed
            to allocate (DRAM regions of a program it ran), or 0.
        fixup: CRC repair applied after a ``fix_crc`` mutation, or None.
    """

    name: str
    seed: bytes
    run: Callable[[bytes], int]
    fixup: Callable[[bytes], bytes] | None = None


def make_targets(seed_dir: Path, workdir: Path) -> dict[str, Target]:
    """The targets of the module docstring, seeded from the compiled folder ``seed_dir``;
    ``workdir`` holds scratch copies the folder-level targets mutate."""
    from tcc_compiler.binfmt import read_cmd_file, read_weight_file
    from tcc_compiler.binfmt.cmdfile import CMD_HEADER_FIELDS
    from tcc_compiler.binfmt.weightfile import WEIGHT_HEADER_FIELDS
    from tcc_compiler.datasets.images import Preprocess, load_inputs
    from tcc_compiler.ir.text import load_ir
    from tcc_compiler.runtime.loaded import load_program

    seeds = {p.name: p.read_bytes() for p in seed_dir.iterdir() if p.is_file()}
    manifest = json.loads(seeds["manifest.json"])
    x = np.zeros(manifest["input"]["shape"], np.float32)

    def folder(name: str) -> Path:
        f = workdir / name
        shutil.rmtree(f, ignore_errors=True)
        shutil.copytree(seed_dir, f)
        return f

    prog_dir, man_dir, ir_dir, npz_dir = (folder(n) for n in ("program", "manifest", "ir",
                                                               "npz"))

    def run_loaded(path: Path) -> int:
        prog = load_program(path)
        # The executor allocates (and fills) every declared DRAM region and the target's SRAM
        # up front: up to 3 x 2**30 bytes for a tiny hostile file. That is the modelled
        # machine, not decoding, so programs declaring more than 64 MiB are decoded but not
        # run (counted as accepted); see MEMORY_RUN_LIMIT.
        memory = (prog.cmd.act_arena_bytes + prog.cmd.input_bytes + prog.cmd.output_bytes
                  + int(prog.manifest["target"]["sram_capacity_bytes"]))
        if memory > MEMORY_RUN_LIMIT:
            return 0
        prog.run(x)
        return 4 * memory

    def program(data: bytes) -> int:
        (prog_dir / "npu_cmd.bin").write_bytes(data)
        m = json.loads(seeds["manifest.json"])
        m["files"]["npu_cmd.bin"] = {"bytes": len(data), "crc32": zlib.crc32(data)}
        (prog_dir / "manifest.json").write_text(json.dumps(m))
        return run_loaded(prog_dir)

    def manifest_target(data: bytes) -> int:
        (man_dir / "manifest.json").write_bytes(data)
        return run_loaded(man_dir)

    def ir(data: bytes) -> int:
        (ir_dir / "quantized.tir").write_bytes(data)
        load_ir(ir_dir / "quantized.tir")
        return 0

    def npz(data: bytes) -> int:
        (npz_dir / "quantized.npz").write_bytes(data)
        load_ir(npz_dir / "quantized.tir")
        return 0

    npy_path = workdir / "calib_fuzz.npy"
    buf = io.BytesIO()
    np.save(buf, x)
    pre = Preprocess(width=x.shape[3], height=x.shape[2])

    def npy(data: bytes) -> int:
        npy_path.write_bytes(data)
        load_inputs([npy_path], pre, x.shape)
        return 0

    def cmd(data: bytes) -> int:
        read_cmd_file(data)
        return 0

    def weights(data: bytes) -> int:
        read_weight_file(data)
        return 0

    cmd_fix = _crc_fixup(CMD_HEADER_FIELDS, "stream_crc32")
    targets = [
        Target("cmd", seeds["npu_cmd.bin"], cmd, cmd_fix),
        Target("weights", seeds["quantized_network.bin"], weights,
               _crc_fixup(WEIGHT_HEADER_FIELDS, "data_crc32")),
        Target("program", seeds["npu_cmd.bin"], program, cmd_fix),
        Target("manifest", seeds["manifest.json"], manifest_target),
        Target("ir", seeds["quantized.tir"], ir),
        Target("npz", seeds["quantized.npz"], npz),
        Target("npy", buf.getvalue(), npy),
    ]
    seed_cmd = read_cmd_file(seeds["npu_cmd.bin"])

    def fields(data: bytes) -> int:
        """``data`` is a script of 8-byte records (command u16, field u16, value u32): each
        sets one integer field of one command of the seed program; the program is then
        re-encoded with the real encoder (which range-checks: InternalError) and run."""
        import dataclasses

        from tcc_compiler.binfmt.cmdfile import write_cmd_file

        cmds = list(seed_cmd.commands)
        for k in range(0, len(data) - 7, 8):
            ci, fi, raw = struct.unpack_from("<HHI", data, k)
            c = cmds[ci % len(cmds)]
            names = [f.name for f in dataclasses.fields(c) if f.init
                     and isinstance(getattr(c, f.name), int)]
            if not names:
                continue
            name = names[fi % len(names)]
            mode, v = raw & 3, raw >> 2
            value = (getattr(c, name) + v % 17 - 8 if mode == 0 else
                     U32_VALUES[v % len(U32_VALUES)] if mode == 1 else
                     v % 256 if mode == 2 else struct.unpack("<i", struct.pack("<I", raw))[0])
            cmds[ci % len(cmds)] = dataclasses.replace(c, **{name: value})
        blob = write_cmd_file(cmds, sram_peak_bytes=seed_cmd.sram_peak_bytes,
                              act_arena_bytes=seed_cmd.act_arena_bytes,
                              input_bytes=seed_cmd.input_bytes,
                              output_bytes=seed_cmd.output_bytes,
                              tool_version=seed_cmd.tool_version)
        return program(blob)

    # seed: four records that add 0 to a field (mode 0, v = 8): the unchanged program
    no_op = b"".join(struct.pack("<HHI", 7 * k, k, 8 << 2) for k in range(4))
    targets.append(Target("fields", no_op, fields))
    table_path = workdir / "calib_table_fuzz.json"
    try:
        from tcc_compiler.quant.calib_table import read_table
    except ImportError:  # older tccc without calibration tables: nothing to fuzz
        read_table = None
    if read_table is not None and "calib_table.json" in seeds:
        def calib_table(data: bytes) -> int:
            table_path.write_bytes(data)
            read_table(table_path)
            return 0

        targets.append(Target("calib", seeds["calib_table.json"], calib_table))
    return {t.name: t for t in targets}


class FuzzFailure(Exception):
    """A case broke the contract (wrong exception type, too slow, too much memory)."""


def alloc_budget(data: bytes, extra: int = 0) -> int:
    """Bytes a case may allocate (tracemalloc peak): 16 x its own size + 16 MiB of fixed
    overhead (parser tables, exception objects), plus ``extra`` (declared DRAM regions)."""
    return 16 * len(data) + (16 << 20) + extra


def check_case(target: Target, data: bytes, retries: int = 2) -> str:
    """Run one case; return ``"accepted"`` or the TccError class name.

    A case over the time limit is re-run up to ``retries`` times and fails only if every run
    is slow (a busy 2-core CI machine stalls a process now and then; a real hang does not go
    away on a re-run).

    Raises:
        FuzzFailure: another exception, more than :data:`TIME_LIMIT_S`, or a tracemalloc peak
            above :func:`alloc_budget`. The message names the target and the problem.
    """
    for attempt in range(retries + 1):
        try:
            return _check_once(target, data)
        except _TooSlow as exc:
            if attempt == retries:
                raise FuzzFailure(str(exc)) from None
    raise AssertionError("unreachable")


class _TooSlow(Exception):
    pass


def _check_once(target: Target, data: bytes) -> str:
    from tcc_compiler.errors import TccError

    tracemalloc.start()
    t0 = time.perf_counter()
    extra = 0
    try:
        extra = target.run(data)
        outcome = "accepted"
    except TccError as exc:
        outcome = type(exc).__name__
        if "\n" in str(exc):
            raise FuzzFailure(f"{target.name}: multi-line error message: {exc!r}") from None
    except Exception as exc:
        raise FuzzFailure(f"{target.name}: {type(exc).__name__}: {exc}") from exc
    finally:
        elapsed = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    if elapsed > TIME_LIMIT_S:
        raise _TooSlow(f"{target.name}: took {elapsed:.2f} s (limit {TIME_LIMIT_S} s)")
    if peak > alloc_budget(data, extra):
        raise FuzzFailure(f"{target.name}: allocated {peak} bytes for a {len(data)}-byte input")
    return outcome


# ---- drivers -----------------------------------------------------------------------------------
def fuzz_plain(targets: dict[str, Target], seconds: float, seed: int,
               crash_dir: Path) -> dict[str, dict]:
    """Random mutation loop, ``seconds`` per target; returns per-target counters."""
    stats = {}
    for name, t in targets.items():
        rng = random.Random(f"{seed}:{name}")
        counts: dict[str, int] = {}
        failures = 0
        t.run(t.seed)  # warm-up (imports, parser tables) outside the clock
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            data = mutate(t.seed, random_mutations(rng), t.fixup)
            try:
                outcome = check_case(t, data)
            except FuzzFailure as exc:
                failures += 1
                crash_dir.mkdir(parents=True, exist_ok=True)
                path = crash_dir / f"{name}-{zlib.crc32(data):08x}.bin"
                path.write_bytes(data)
                print(f"FAIL {exc} -> {path}", file=sys.stderr)
                outcome = "FAILURE"
            counts[outcome] = counts.get(outcome, 0) + 1
        stats[name] = {"cases": sum(counts.values()), "failures": failures,
                       "outcomes": dict(sorted(counts.items()))}
    return stats


def fuzz_atheris(targets: dict[str, Target]) -> None:
    """Run all targets under atheris (coverage-guided); the first input byte picks the
    target, the rest is a list of mutations applied to its seed."""
    import atheris

    names = sorted(targets)

    def one(raw: bytes) -> None:
        fdp = atheris.FuzzedDataProvider(raw)
        t = targets[names[fdp.ConsumeIntInRange(0, len(names) - 1)]]
        muts = [(OPS[fdp.ConsumeIntInRange(0, len(OPS) - 1)], fdp.ConsumeInt(4),
                 fdp.ConsumeInt(4)) for _ in range(fdp.ConsumeIntInRange(1, 4))]
        muts = [(op, abs(a), abs(b)) for op, a, b in muts]
        check_case(t, mutate(t.seed, muts, t.fixup))

    atheris.instrument_all()  # coverage feedback from every loaded Python function
    flags = [a for a in sys.argv[1:] if a.startswith(("-atheris", "-runs", "-max_total"))]
    atheris.Setup([sys.argv[0]] + flags, one)
    atheris.Fuzz()


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; prints one JSON line of per-target case counts."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="time per target (s)")
    ap.add_argument("--targets", default="", help="comma-separated subset (default: all)")
    ap.add_argument("--seed", type=int, default=0, help="random seed of the plain fuzzer")
    ap.add_argument("--crash-dir", default="fuzz-crashes", help="where failing inputs go")
    ap.add_argument("--atheris", action="store_true",
                    help="coverage-guided run under atheris (pass libFuzzer flags as "
                         "-runs=N / -max_total_time=S)")
    args, _ = ap.parse_known_args(argv)
    import logging

    logging.disable(logging.WARNING)
    np.seterr(all="ignore")
    with tempfile.TemporaryDirectory(prefix="tccc-fuzz-") as tmp:
        work = Path(tmp)
        targets = make_targets(build_seeds(work), work)
        if args.targets:
            targets = {k: targets[k] for k in args.targets.split(",")}
        if args.atheris:
            fuzz_atheris(targets)
            return 0
        stats = fuzz_plain(targets, args.seconds, args.seed, Path(args.crash_dir))
    print(json.dumps(stats, indent=1))
    return 1 if any(s["failures"] for s in stats.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
