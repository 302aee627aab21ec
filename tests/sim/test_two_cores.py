"""Two NPU cores (``--cores 2``): container, semaphores, executor, hazards, schedules.

A small compute-bound network (3x3 convs of 128 channels at 28x28, a residual add, a max pool,
global average pool) compiles with ``cores=2`` into a spatial split that the cost model
prefers to one core; it runs bit-exactly against the golden integer model, in any legal
interleaving of the two cores' six queues, and deleting any cross-core wait (SEM_WAIT) is
reported as a race by the hazard checker. Hand-built streams check the decoder's refusals.
"""

from __future__ import annotations

import dataclasses

import networkx as nx
import numpy as np
import onnx
import pytest

from helpers.two_cores import conv_net, drop_wait as _drop, sizes as _sizes

from tcc_compiler import api
from tcc_compiler.binfmt import read_cmd_file, write_cmd_file
from tcc_compiler.binfmt.weightfile import read_weight_file
from tcc_compiler.emit.binaries import encode_binaries
from tcc_compiler.errors import ExecutionError, FormatError, InputError, InternalError
from tcc_compiler.isa import commands as C
from tcc_compiler.isa.spec import Queue, Region, dram_address
from tcc_compiler.runtime import load_program
from tcc_compiler.runtime.check import Checker
from tcc_compiler.schedule.batch import lower_batch
from tcc_compiler.schedule.corestream import stream_program
from tcc_compiler.schedule.search import search
from tcc_compiler.sim.cores import run_stream
from tcc_compiler.sim.executor import Executor
from tcc_compiler.sim.hazards import Ordering, check_stream
from tcc_compiler.target import load_target

QUEUES = (Queue.LOAD, Queue.COMPUTE, Queue.STORE)
#: 256 KiB per core: the hazard checker's shadow memory stays small (25 bytes per SRAM byte
#: per core), and the 28x28x128 maps take several tiles.
TARGET = load_target().with_sram(256 * 1024)


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    """(model path, compiled model, loaded 2-core program)."""
    d = tmp_path_factory.mktemp("two_cores")
    path = d / "m.onnx"
    onnx.save(conv_net(), path)
    rng = np.random.default_rng(1)
    calib = [rng.uniform(-2, 2, (1, 16, 28, 28)).astype(np.float32) for _ in range(2)]
    m = api.compile(path, "28x28x16", calibration=calib, cores=2, target=TARGET)
    m.save(d / "out")
    return path, m, load_program(d / "out")


def test_compiles_to_a_spatial_split_faster_than_one_core(two):
    _, m, prog = two
    rep = m.report["cores"]
    assert prog.cmd.cores == 2 and m.manifest["cores"] == 2
    assert rep["kept"] == "spatial split"
    assert rep["latency_cycles"] < rep["estimates"]["single_core_cycles"]
    assert m.report["estimated_cycles"] == rep["latency_cycles"]
    assert {p["core"] for p in rep["per_core"]} == {0, 1}
    assert all(0 < p["utilisation"] <= 1 for p in rep["per_core"])
    tiling = [li["tiling"] for li in m.report["layers"]]
    assert any("split by" in t for t in tiling)
    names = {c.name for c in prog.cmd.commands}
    assert {"SEM_SIGNAL", "SEM_WAIT"} <= names
    ranges = prog.cmd.core_ranges()
    assert len(ranges) == 2 and all(isinstance(prog.cmd.commands[b - 1], C.End)
                                    for _, b in ranges)
    tracks = {(e.get("pid"), e.get("tid")) for e in m.artifacts.trace["traceEvents"]
              if e.get("ph") == "X"}
    assert len({tid for _, tid in tracks}) == 6      # one track per queue of each core
    from tcc_compiler.report.timeline_view import chart_rows
    assert chart_rows(m.artifacts.trace) == [
        f"core {c} {q}" for c in (0, 1) for q in ("LOAD", "COMPUTE", "STORE")]


def test_bit_exact_and_hazard_free(two):
    path, _, prog = two
    checker = Checker(prog, path)
    rng = np.random.default_rng(5)
    for _ in range(2):
        x = rng.uniform(-2, 2, (1, 16, 28, 28)).astype(np.float32)
        r = checker.check(x, prog.run(x))
        assert r["bit_exact"] and r["sqnr_db"] > 20
    assert check_stream(list(prog.cmd.commands), _sizes(prog), prog.cmd.core_ranges()) == []


@pytest.mark.parametrize("seeds", [pytest.param(range(2), id="2"),
                                   pytest.param(range(20), id="20", marks=pytest.mark.slow)])
def test_random_interleavings_of_both_cores(two, seeds):
    _, _, prog = two
    q = prog.quantize(np.random.default_rng(2).uniform(-2, 2, (1, 16, 28, 28))
                      .astype(np.float32))
    ref = prog.executor.run(q, check=True)
    ordering = prog.executor._ordering()
    orders = set()
    for seed in seeds:
        orders.add(tuple(ordering.random_order(seed)))
        assert prog.executor.run(q, schedule="random", seed=seed) == ref, seed
    assert len(orders) == len(seeds)
    core_of = ordering.core_of
    # the cores really interleave: some core-1 command runs before some core-0 one
    assert all(any(core_of[a] > core_of[b] for a, b in zip(o, o[1:])) for o in orders)


def _oracle(cmds, ranges):
    """'a finishes before b starts' edges straight from specs/isa.md, over both cores."""
    g = nx.DiGraph()
    g.add_nodes_from(range(len(cmds)))
    signals: dict[int, list[int]] = {}
    waits = []
    for a, b in ranges:
        seen = {q: [] for q in QUEUES}
        for j in range(a, b):
            cmd = cmds[j]
            if cmd.queue not in seen:
                g.add_edges_from((i, j) for q in QUEUES for i in seen[q])
                continue
            if seen[cmd.queue]:
                g.add_edge(seen[cmd.queue][-1], j)
            for q, n in zip(QUEUES, cmd.waits):
                if n != 7 and len(seen[q]) > n:
                    g.add_edge(seen[q][len(seen[q]) - n - 1], j)
            if isinstance(cmd, C.SemSignal):
                signals.setdefault(cmd.sem, []).append(j)
            if isinstance(cmd, C.SemWait):
                waits.append((j, cmd.sem, cmd.count))
            seen[cmd.queue].append(j)
    for j, sem, count in waits:
        g.add_edge(signals[sem][count - 1], j)
    return g


def _conflicts(cmds, ranges, sram, cross_only=False):
    """Unordered pairs (a, b), a < b, touching a common byte (each core's SRAM its own), one
    writing; ``cross_only``: pairs on different cores only."""
    o = Ordering(cmds, ranges)
    o.set_sram(sram)
    accs = o.accesses()
    closure = nx.transitive_closure_dag(_oracle(cmds, ranges))
    out = set()
    for b in range(len(cmds)):
        for a in range(b):
            if not accs[a] or not accs[b] or (cross_only and o.core_of[a] == o.core_of[b]):
                continue
            if closure.has_edge(a, b) or closure.has_edge(b, a):
                continue
            if any((x.is_write or y.is_write) and x.overlaps(y)
                   for x in accs[a] for y in accs[b]):
                out.add((a, b))
    return out


@pytest.mark.parametrize("oracle", [pytest.param(False, id="checker"),
                                    pytest.param(True, id="oracle", marks=pytest.mark.slow)])
def test_deleting_any_cross_core_wait_is_a_race(two, oracle):
    """Every SEM_WAIT deleted: the checker reports a race between the two cores (with
    ``oracle``, also one the spec-derived oracle finds, and none in the intact program)."""
    _, _, prog = two
    cmds, ranges, sizes = list(prog.cmd.commands), prog.cmd.core_ranges(), _sizes(prog)
    if oracle:
        assert _conflicts(cmds, ranges, sizes[C.Space.SRAM]) == set()
    sem_waits = [j for j, c in enumerate(cmds) if isinstance(c, C.SemWait)]
    assert sem_waits
    for j in sem_waits:
        mod, mranges = _drop(cmds, ranges, j)
        found = check_stream(mod, sizes, mranges)
        assert len(found) == 1, j
        h = found[0]
        o = Ordering(mod, mranges)
        assert o.core_of[h.first] != o.core_of[h.second], (j, h.message())
        assert "of core" in h.message()
        if oracle:
            pair = (min(h.first, h.second), max(h.first, h.second))
            assert pair in _conflicts(mod, mranges, sizes[C.Space.SRAM], True)


@pytest.mark.slow
def test_deleted_intra_core_waits_sample(two):
    """Within each core, a deleted wait is reported iff the oracle finds an unordered
    conflicting pair (the single-core test's rule, over both cores' streams)."""
    _, _, prog = two
    cmds, ranges, sizes = list(prog.cmd.commands), prog.cmd.core_ranges(), _sizes(prog)
    dels = [(j, f) for j, c in enumerate(cmds) if not isinstance(c, C.SemWait)
            for f in ("wait_load", "wait_compute", "wait_store") if getattr(c, f) != 7]
    rng = np.random.default_rng(4)
    caught = 0
    for k in rng.choice(len(dels), size=6, replace=False):
        j, f = dels[int(k)]
        mod = list(cmds)
        mod[j] = dataclasses.replace(cmds[j], **{f: 7})
        found = check_stream(mod, sizes, ranges)
        expected = _conflicts(mod, ranges, sizes[C.Space.SRAM])
        assert bool(found) == bool(expected), (j, f)
        if found:
            h = found[0]
            assert (min(h.first, h.second), max(h.first, h.second)) in expected
            caught += 1
    assert caught


def _stream_outputs(two, sp_cmd: bytes, sp_w: bytes, st: dict, seeds, n_check=None):
    """Each image's OUTPUT bytes of the stream program for every schedule in ``seeds``
    (None: in order), next to the one-image program's."""
    _, _, prog = two
    ex = Executor(read_cmd_file(sp_cmd), read_weight_file(sp_w), TARGET)
    rng = np.random.default_rng(11)
    qs = [prog.quantize(rng.uniform(-2, 2, (1, 16, 28, 28)).astype(np.float32))
          for _ in range(st["images"])]
    refs = [prog.executor.run(q) for q in qs]
    for seed in seeds:
        kw = dict(check=True) if seed is None else dict(schedule="random", seed=seed)
        got = run_stream(ex, qs, st["input_stride_bytes"], st["output_stride_bytes"],
                         len(refs[0]), **kw)
        assert got == refs, seed


def test_stream_program_emitted_and_bit_exact_per_image(two, tmp_path):
    """``--cores 2`` writes npu_cmd_stream.bin: each core runs whole images; every image of a
    run comes out as the one-image program gives it, in order and in random interleavings
    with the hazard checker on; the report's stream figure is its replay."""
    _, m, prog = two
    st = m.manifest["stream"]
    folder = prog.folder
    assert st["images"] == 2 * st["images_per_core"] and st["cores"] == 2
    rep = m.report["cores"]
    assert rep["estimates"]["stream_period_cycles"] == st["period_cycles"]
    assert rep["stream_period_cycles"] == min(st["period_cycles"], rep["latency_cycles"])
    cmd = (folder / st["commands"]).read_bytes()
    assert read_cmd_file(cmd).cores == 2
    _stream_outputs(two, cmd, (folder / st["weights"]).read_bytes(), st, [None, 0, 1])


def _weight_bytes(cmds) -> int:
    """Bytes of WEIGHTS the loads among ``cmds`` read."""
    return sum(c.src_bytes if isinstance(c, C.DmaLoadZ) else c.total_bytes for c in cmds
               if isinstance(c, C.DmaLoadZ) or (isinstance(c, C.DmaLoad)
                                                and c.dram >> 30 == Region.WEIGHTS))


def _batched(two):
    """The two-images-per-core stream program of the test network, encoded."""
    _, m, _ = two
    per_core, st = lower_batch(m.artifacts.graph, TARGET, 2)
    sp = stream_program(per_core, TARGET, 2, st)
    cmd_bin, w_bin = encode_binaries(sp.program, "test")
    meta = {"images": sp.images, "input_stride_bytes": sp.input_stride_bytes,
            "output_stride_bytes": sp.output_stride_bytes}
    return sp, cmd_bin, w_bin, meta


def test_two_images_per_core_share_weight_loads(two):
    """Two images per core, each conv's tiles for both images under each weight block: a
    core reads the weights once for its two images, and all four images are bit-exact,
    hazard-free in order and in random interleavings."""
    sp, cmd_bin, w_bin, st = _batched(two)
    _, m, _ = two
    assert sp.images == 4 and sp.batch == 2
    one = search(m.artifacts.graph, TARGET, (0.0,), False, cascade=False, prefetch=False)
    per_core = [_weight_bytes(sp.program.commands[a:b])
                for a, b in read_cmd_file(cmd_bin).core_ranges()]
    assert per_core[0] == per_core[1] == _weight_bytes(one.commands)
    _stream_outputs(two, cmd_bin, w_bin, st, [None, 3])


@pytest.mark.slow
def test_stream_programs_survive_20_random_interleavings(two):
    """The acceptance figure: no hazard and bit-exact under 20 random interleavings of the
    two cores' six queues, for the emitted stream program and the two-images-per-core one."""
    _, m, prog = two
    st = m.manifest["stream"]
    _stream_outputs(two, (prog.folder / st["commands"]).read_bytes(),
                    (prog.folder / st["weights"]).read_bytes(), st, range(20))
    _, cmd_bin, w_bin, st2 = _batched(two)
    _stream_outputs(two, cmd_bin, w_bin, st2, range(20))


# -- hand-built two-core streams --------------------------------------------------------------

def _ld(region, off, sram, n, **w):
    return C.DmaLoad(dram_address(region, off), sram, n, 1, 1, 0, 0, 0, 0, **w)


def _st(region, off, sram, n, **w):
    return C.DmaStore(dram_address(region, off), sram, n, 1, 1, 0, 0, 0, 0, **w)


def _pair(wait=True, count=1, sem=0):
    """Core 0 copies INPUT to ACT and signals; core 1 waits, copies ACT to OUTPUT."""
    core0 = [_ld(Region.INPUT, 0, 0, 16), _st(Region.ACT, 0, 0, 16, wait_load=0),
             C.SemSignal(sem=0), C.End()]
    core1 = ([C.SemWait(sem=sem, count=count)] if wait else []) + [
        _ld(Region.ACT, 0, 64, 16), _st(Region.OUTPUT, 0, 64, 16, wait_load=0), C.End()]
    return core0 + core1


def _file(cmds, cores=2):
    return write_cmd_file(cmds, sram_peak_bytes=128, act_arena_bytes=64, input_bytes=16,
                          output_bytes=16, tool_version="test", cores=cores)


def test_container_round_trip_and_single_core_header_unchanged():
    cmds = _pair()
    f = read_cmd_file(_file(cmds))
    assert f.cores == 2 and list(f.commands) == cmds and f.version_minor == 1
    assert f.core_ranges() == [(0, 4), (4, 8)]
    one = read_cmd_file(_file(cmds[:2] + [C.End()], cores=1))
    assert one.cores == 1 and one.version_minor == 0
    ex = Executor(f, None, TARGET, fill=0xA5)
    data = bytes(range(16))
    assert ex.run(data, check=True) == data
    for seed in range(5):
        assert ex.run(data, schedule="random", seed=seed) == data


def test_missing_wait_is_a_cross_core_race():
    cmds = _pair(wait=False)
    sizes = {C.Space.SRAM: 256, C.Space.ACT: 64, C.Space.INPUT: 16, C.Space.OUTPUT: 16,
             C.Space.WEIGHTS: 0}
    [h] = check_stream(cmds, sizes, [(0, 4), (4, 7)])
    assert h.kind in ("RAW", "WAR") and {h.first, h.second} == {1, 4}
    assert "STORE of core 0" in h.message() or "LOAD of core 1" in h.message()


@pytest.mark.parametrize("mutate, match", [
    (lambda c: c[:4] + [C.SemWait(sem=0, count=2)] + c[5:], "never be released"),
    (lambda c: c[:4] + [C.SemWait(sem=9, count=1)] + c[5:], "semaphore 9 outside"),
    (lambda c: c[:7] + [C.SemSignal(sem=0), C.End()], "also signalled by core 0"),
])
def test_decoder_refuses_bad_semaphores(mutate, match):
    good = _file(_pair())
    bad = mutate(_pair())
    with pytest.raises(InternalError, match=match):
        _file(bad)
    # the same stream smuggled past the writer: the reader refuses it too
    from tcc_compiler.binfmt.cmdfile import CMD_HEADER_FIELDS
    import struct
    import zlib
    from tcc_compiler.isa.codec import encode_commands
    stream = b"".join(encode_commands(bad[a:b]) for a, b in ((0, 4), (4, len(bad))))
    data = bytearray(good[:64] + stream)
    offs = {}
    pos = 0
    for name, fmt, _ in CMD_HEADER_FIELDS:
        offs[name] = (pos, fmt)
        pos += struct.calcsize("<" + fmt)
    for name, v in (("stream_bytes", len(stream)), ("n_commands", len(bad)),
                    ("stream_crc32", zlib.crc32(stream))):
        o, fmt = offs[name]
        struct.pack_into("<" + fmt, data, o, v)
    struct.pack_into("<I", data, 60, zlib.crc32(bytes(data[:60])))
    with pytest.raises(FormatError, match=match):
        read_cmd_file(bytes(data))


def test_cores_beyond_the_target_and_deadlock_refused():
    f = read_cmd_file(_file(_pair()))
    with pytest.raises(ExecutionError, match="cores = 2 exceeds"):
        Executor(f, None, dataclasses.replace(load_target(), cores=1))
    # each core waits for the other's first signal before signalling: no order runs both
    dead = [C.SemWait(sem=1, count=1), C.SemSignal(sem=0), C.End(),
            C.SemWait(sem=0, count=1), C.SemSignal(sem=1), C.End()]
    with pytest.raises(ExecutionError, match="deadlock"):
        Executor(read_cmd_file(_file(dead)), None, load_target()).run(bytes(16))


def test_cores_option_checked():
    with pytest.raises(InputError, match="cores = 3"):
        api.compile(conv_net(), "28x28x16", cores=3)


@pytest.mark.slow
def test_cli_compile_with_two_cores(two, tmp_path, capsys):
    """``tccc compile --cores 2`` writes a two-core folder and says so."""
    from tests.helpers.cli import run_cli

    path, _, _ = two
    rng = np.random.default_rng(1)
    calib = tmp_path / "c.npy"
    np.save(calib, rng.uniform(-2, 2, (1, 16, 28, 28)).astype(np.float32))
    code, out, _ = run_cli(["compile", str(path), "--input", "28x28x16", "--calib", str(calib),
                            "-o", str(tmp_path / "out"), "--cores", "2"], capsys)
    assert code == 0 and "2 cores: kept spatial split" in out
    assert load_program(tmp_path / "out").cmd.cores == 2


def test_cli_cores_3_is_a_usage_error(tmp_path, capsys):
    from tcc_compiler.cli.main import main

    with pytest.raises(SystemExit) as e:
        main(["compile", str(tmp_path / "m.onnx"), "--input", "28x28x16", "-o",
              str(tmp_path / "o"), "--cores", "3"])
    assert e.value.code == 2 and "--cores" in capsys.readouterr().err


def test_disasm_marks_where_each_core_starts():
    text = read_cmd_file(_file(_pair())).disassemble().splitlines()
    marks = [i for i, line in enumerate(text) if line.startswith("; ---- core")]
    assert [text[i] for i in marks] == ["; ---- core 0 ----", "; ---- core 1 ----"]
    assert marks == [0, 5] and "SEM_WAIT" in text[6]   # core 1's first command
    one = read_cmd_file(_file(_pair()[:2] + [C.End()], cores=1)).disassemble()
    assert "; ----" not in one
    from tcc_compiler.cli.commands.disasm import commands_json

    class _Prog:   # what commands_json reads of a loaded program
        cmd = read_cmd_file(_file(_pair()))

    js = commands_json(_Prog(), None)
    assert [c["core"] for c in js] == [0] * 4 + [1] * (len(js) - 4)   # --json says it too
    assert js[4]["name"] == "SEM_WAIT"


def test_inspect_and_segmented_summary_print_the_cores_line(two, capsys):
    """``tccc inspect`` of a two-core folder, and the compile summary and inspect of a
    segmented model, print the cores line (for each NPU segment)."""
    from argparse import Namespace

    from tcc_compiler.cli.commands.compile import _print_segmented
    from tcc_compiler.cli.commands.inspect import _inspect_segmented
    from tests.helpers.cli import run_cli

    _, m, prog = two
    code, out, _ = run_cli(["inspect", str(prog.folder)], capsys)
    assert code == 0 and "2 cores: kept spatial split" in out
    seg = {"index": 0, "device": "npu", "folder": "npu_0", "nodes": 9, "command_bytes": 1,
           "weight_bytes": 2, "estimated_latency_ms": 0.1, "cores": m.report["cores"]}
    r = {"placement": {"npu_segments": 1, "npu_nodes": 9, "host_segments": 0,
                       "host_nodes": 0}, "segments": [seg], "command_bytes": 1,
         "weight_bytes": 2, "macs": 3, "estimated_latency_ms": 0.1, "estimated_host_ms": 0.0,
         "estimated_boundary_ms": 0.0, "boundary_bytes": 0, "target": "tcc750x"}
    _print_segmented(Namespace(json=False, output="out"), r)
    assert "npu_0: 2 cores: kept spatial split" in capsys.readouterr().out
    _inspect_segmented(Namespace(json=False, csv=None), prog, r)
    assert "npu_0: 2 cores: kept spatial split" in capsys.readouterr().out


@pytest.mark.parametrize("damage,match", [
    ("delete", "npu_cmd_stream.bin: missing"),
    ("truncate", "not the file manifest.json records"),
    ("flip", "not the file manifest.json records"),
    ("not_an_object", "stream: expected an object"),
    ("weights_path", "stream.weights: expected"),
    ("images", "stream.images: expected an integer >= 1"),
    ("offsets_list", "stream.output_offsets: expected an object"),
    ("offset_negative", "stream.output_offsets: expected an object"),
    ("offset_extra", "stream.output_offsets: 'no_such_output' names no output"),
    ("offset_missing", "stream.output_offsets: no offset for output"),
    ("input_offset_extra", "stream.input_offsets: 'x2' names no input"),
    ("files_path", "stream.files: '../x' is not a stream file"),
    ("tail_from_int", "stream.tail_from: expected a tensor name or null, got 5"),
    ("tail_from_empty", "stream.tail_from: expected a tensor name or null, got ''"),
    ("tail_from_one_image", "stream.tail_from: 'x' with images_per_core 1: a tail batch"),
    ("arena_negative", "stream.act_arena_bytes: expected an integer >= 0, got -1"),
    ("arena_other", "manifest.json's stream records 1 B"),
    ("output_stride", "exceed the program's"),
    ("input_stride_small", "stream.input_stride_bytes 1 is less than one image's INPUT"),
    ("output_stride_small", "stream.output_stride_bytes 1 is less than one image's OUTPUT"),
    ("run_cycles_text", "stream.run_cycles: expected an integer >= 1, got 'fast'"),
    ("run_cycles_missing", "stream.run_cycles: expected an integer >= 1, got None"),
    ("period_cycles_bool", "stream.period_cycles: expected an integer >= 1, got True"),
    ("period_cycles_zero", "stream.period_cycles: expected an integer >= 1, got 0"),
    ("period_above_run", "is not run_cycles"),
    ("period_cycles_other", "rounded up"),
    ("period_ms_text", "stream.period_ms: expected a number of milliseconds, got '1 ms'"),
    ("period_ms_nan", "stream.period_ms: expected a number of milliseconds, got nan"),
    ("period_ms_other", "Hz clock"),
    ("period_ms_huge_int", "stream.period_ms: expected a number of milliseconds, got 1000"),
    ("run_cycles_huge", "Hz clock"),
])
def test_damaged_stream_program_fails_the_load(two, tmp_path, capsys, damage, match):
    """The stream program is what a two-core device runs, so a folder whose stream files or
    ``stream`` record are missing, truncated, flipped or pointing elsewhere is refused by every
    command that loads it (one line, exit 2), as the main program's files are. Before, run,
    inspect and disasm exited 0 and inspect still described the missing file (found by a
    new-user attack)."""
    import json
    import shutil

    from tests.helpers.cli import one_line_error, run_cli

    out = tmp_path / "o"
    shutil.copytree(two[2].folder, out)
    man = json.loads((out / "manifest.json").read_text())
    st = man["stream"]
    cmd = out / st["commands"]
    if damage == "delete":
        cmd.unlink()
    elif damage == "truncate":
        cmd.write_bytes(cmd.read_bytes()[:-7])
    elif damage == "flip":
        data = bytearray(cmd.read_bytes())
        data[len(data) // 2] ^= 1
        cmd.write_bytes(bytes(data))
    else:
        if damage == "not_an_object":
            man["stream"] = "x"
        elif damage == "weights_path":
            st["weights"] = "../../etc/passwd"
        elif damage == "offsets_list":   # was an AttributeError in run --check (exit 1)
            st["output_offsets"] = []
        elif damage == "offset_negative":
            st["output_offsets"] = {k: -5 for k in st["output_offsets"]}
        elif damage == "offset_extra":   # was accepted (found by a new-user attack)
            st["output_offsets"]["no_such_output"] = 0
        elif damage == "offset_missing":   # was accepted; run --check said "not bit-exact"
            st["output_offsets"].popitem()
        elif damage == "input_offset_extra":
            st["input_offsets"]["x2"] = 0
        elif damage == "files_path":   # was accepted
            st["files"]["../x"] = {"bytes": 1, "crc32": 0}
        elif damage == "tail_from_int":   # was accepted
            st["tail_from"] = 5
        elif damage == "tail_from_empty":   # names no tensor: was accepted
            st["tail_from"] = ""
        elif damage == "tail_from_one_image":   # no tail batch at one image per core
            st["tail_from"], st["images_per_core"], st["images"] = "x", 1, st["cores"]
        elif damage == "arena_negative":   # was accepted
            st["act_arena_bytes"] = -1
        elif damage == "arena_other":   # was accepted: not the stream file header's ACT size
            st["act_arena_bytes"] = 1
        elif damage == "output_stride":   # images past the OUTPUT region
            st["output_stride_bytes"] = st["output_bytes"]
        elif damage.startswith(("run_cycles", "period")):   # were all accepted
            _damage_period(st, damage)
        elif damage.endswith("_stride_small"):   # images overlapping: was accepted, and
            # run --check of a segmented folder failed with a line naming no file
            st[damage.split("_")[0] + "_stride_bytes"] = 1
        else:
            st["images"] = -1
        (out / "manifest.json").write_text(json.dumps(man))
    for argv in (["inspect", str(out)], ["disasm", str(out)]):
        code, stdout, err = run_cli(argv, capsys)
        assert code == 2 and match in one_line_error(err), (argv, err)


def _damage_period(st: dict, damage: str) -> None:
    """Damage the stream record's estimated ``run_cycles``, ``period_cycles`` or
    ``period_ms`` (specs/manifest.md: period = ceil(run / images), period_ms at the target's
    clock)."""
    run, images = st["run_cycles"], st["images"]
    assert images > 1 and st["period_cycles"] == -(-run // images)
    if damage == "run_cycles_text":
        st["run_cycles"] = "fast"
    elif damage == "run_cycles_missing":
        del st["run_cycles"]
    elif damage == "period_cycles_bool":
        st["period_cycles"] = True
    elif damage == "period_cycles_zero":
        st["period_cycles"] = 0
    elif damage == "period_above_run":   # a period longer than the whole run of images
        st["period_cycles"] = run + 1
    elif damage == "period_cycles_other":
        st["period_cycles"] += 1
    elif damage == "period_ms_text":
        st["period_ms"] = "1 ms"
    elif damage == "period_ms_nan":
        st["period_ms"] = float("nan")
    elif damage == "period_ms_huge_int":   # no float holds it: was an OverflowError (exit 1)
        st["period_ms"] = 10 ** 400
    elif damage == "run_cycles_huge":   # its period at the clock overflowed a float (exit 1)
        st["run_cycles"] = 10 ** 400
        st["period_cycles"] = -(-st["run_cycles"] // images)
    else:   # twice the period_cycles at the target clock
        st["period_ms"] *= 2


def test_run_check_covers_the_stream_program(two, tmp_path):
    """``run --check`` of a ``--cores 2`` folder also runs the stream program (what the
    device runs for a stream of images) and counts it in ``bit_exact``: its images' outputs
    must be the main program's. A stream that puts an output elsewhere than the manifest
    says (here: an output offset moved by one byte) is not bit-exact."""
    import json
    import shutil

    path, _, prog = two
    assert prog.stream is not None
    x = np.random.default_rng(9).uniform(-2, 2, (1, 16, 28, 28)).astype(np.float32)
    assert Checker(prog, path).check(x, prog.run(x))["bit_exact"]
    out = tmp_path / "o"
    shutil.copytree(prog.folder, out)
    man = json.loads((out / "manifest.json").read_text())
    offs = man["stream"]["output_offsets"]
    name = next(iter(offs))
    offs[name] += 1
    (out / "manifest.json").write_text(json.dumps(man))
    bad = load_program(out)
    assert not Checker(bad, path).check(x, bad.run(x))["bit_exact"]
