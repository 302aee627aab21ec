"""Decoders never trust their input: hypothesis-driven mutations of every file tccc reads.

The seeds come from compiling a small residual net with the CLI (``tools/fuzz.py``), so the
tests follow the current formats. Every mutated input must give a clean ``TccError`` subclass
(or be accepted) within 1 s, with a tracemalloc peak bounded by the input's size; the contract
is :func:`fuzz.check_case`. A long run is ``python3 tools/fuzz.py --seconds 600``.
"""

from __future__ import annotations

import importlib.util
import io
import json
import struct
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tcc_compiler.cli.main import main
from tcc_compiler.errors import FormatError, InputError
from tcc_compiler.ir.text import load_ir
from tcc_compiler.runtime.loaded import load_program

_spec = importlib.util.spec_from_file_location(
    "tccc_tools_fuzz", Path(__file__).resolve().parents[2] / "tools" / "fuzz.py")
fuzz = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = fuzz  # dataclasses look their module up there
_spec.loader.exec_module(fuzz)

#: hypothesis examples per target in the default (fast) run.
EXAMPLES = {"cmd": 250, "weights": 250, "program": 80, "manifest": 120, "ir": 80, "npz": 50,
            "npy": 120, "calib": 120, "fields": 40}

mutation = st.tuples(st.sampled_from(fuzz.OPS), st.integers(0, 2**32 - 1),
                     st.integers(0, 2**32 - 1))


@pytest.fixture(scope="module")
def seed_dir(tmp_path_factory) -> Path:
    """A freshly compiled output folder (the fuzz seeds)."""
    return fuzz.build_seeds(tmp_path_factory.mktemp("fuzzseed"))


@pytest.fixture(scope="module")
def targets(seed_dir, tmp_path_factory) -> dict:
    """The fuzz targets of tools/fuzz.py, warmed up (parser tables built) on their seeds."""
    ts = fuzz.make_targets(seed_dir, tmp_path_factory.mktemp("fuzzwork"))
    for t in ts.values():
        t.run(t.seed)  # first call builds parser tables / imports: outside the 1 s clock
        assert fuzz.check_case(t, t.seed) == "accepted", t.name
    return ts


def _fuzz(targets: dict, name: str, muts: list) -> None:
    t = targets[name]
    fuzz.check_case(t, fuzz.mutate(t.seed, muts, t.fixup))


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_fuzz_target(targets, name):
    """Each target survives EXAMPLES[name] hypothesis-chosen mutation lists."""
    if name not in targets:
        pytest.skip(f"no {name} decoder in this tccc")
    @settings(max_examples=EXAMPLES[name], deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(mutation, min_size=1, max_size=4))
    def run(muts):
        _fuzz(targets, name, muts)

    run()


def test_check_case_catches_contract_breaks():
    """The harness itself fails on a foreign exception, a slow case and a big allocation."""
    def boom(_):
        raise KeyError("x")

    def slow(_):
        import time

        time.sleep(fuzz.TIME_LIMIT_S + 0.1)
        return 0

    def greedy(data):
        blob = bytearray(64 << 20)
        return len(blob) * 0

    for fn in (boom, slow, greedy):
        with pytest.raises(fuzz.FuzzFailure):
            fuzz.check_case(fuzz.Target("t", b"", fn), b"1234", retries=0)
    assert fuzz.check_case(fuzz.Target("t", b"", lambda d: 0), b"") == "accepted"


@pytest.mark.parametrize("op", fuzz.OPS)
def test_every_mutation_op_changes_or_keeps_bytes(targets, op):
    """Every operator runs on every seed (including an empty input) without raising."""
    for t in targets.values():
        for data in (t.seed, b""):
            out = fuzz.apply_mutation(data, op, 12345, 678)
            assert isinstance(out, bytes)


def _copy(seed_dir: Path, tmp_path: Path) -> Path:
    import shutil

    out = tmp_path / "prog"
    shutil.copytree(seed_dir, out)
    return out


def _set_u16(data: bytes, pos: int, value: int) -> bytes:
    d = bytearray(data)
    struct.pack_into("<H", d, pos, value)
    struct.pack_into("<I", d, 60, zlib.crc32(bytes(d[:60])))  # keep the header CRC valid
    return bytes(d)


def _refresh_manifest(folder: Path, name: str) -> None:
    m = json.loads((folder / "manifest.json").read_text())
    data = (folder / name).read_bytes()
    m["files"][name] = {"bytes": len(data), "crc32": zlib.crc32(data)}
    (folder / "manifest.json").write_text(json.dumps(m))


@pytest.mark.parametrize("name", ["npu_cmd.bin", "quantized_network.bin"])
def test_unknown_major_version_refused(seed_dir, tmp_path, capsys, name):
    """A binary of another major version (CRCs and manifest consistent) is refused by the
    loader and by `tccc run` with exit code 2 and a one-line message naming the version."""
    from tcc_compiler.binfmt.cmdfile import CMD_HEADER_FIELDS, header_offsets

    off = {n: p for n, p, _, _ in header_offsets(CMD_HEADER_FIELDS)}["version_major"]
    folder = _copy(seed_dir, tmp_path)
    data = (folder / name).read_bytes()
    (major,) = struct.unpack_from("<H", data, off)
    (folder / name).write_bytes(_set_u16(data, off, major + 1))
    _refresh_manifest(folder, name)
    with pytest.raises(FormatError, match=rf"{name}: unsupported format version {major + 1}\."):
        load_program(folder)
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 16, 16), np.float32))
    code = main(["run", str(folder), str(tmp_path / "x.npy")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("tccc: error: ") and "version" in err[0]


def test_binaries_record_format_and_tool_version(seed_dir):
    """Both binaries carry the format version and the writer's version (= tccc's)."""
    import tcc_compiler
    from tcc_compiler.binfmt import read_cmd_file, read_weight_file

    for f in (read_cmd_file((seed_dir / "npu_cmd.bin").read_bytes()),
              read_weight_file((seed_dir / "quantized_network.bin").read_bytes())):
        assert f.version_major >= 1
        assert f.tool_version == tcc_compiler.__version__


def _npy_with_header_shape(shape: tuple[int, ...]) -> bytes:
    """A float32 .npy whose header claims ``shape`` but whose body holds 768 values."""
    buf = io.BytesIO()
    np.save(buf, np.zeros((1, 3, 16, 16), np.float32))
    raw = buf.getvalue()
    hlen = struct.unpack_from("<H", raw, 8)[0]
    header = raw[10:10 + hlen].replace(b"(1, 3, 16, 16)", repr(shape).encode()).rstrip()
    header = header + b" " * (hlen - len(header) - 1) + b"\n"
    return raw[:10] + header + raw[10 + hlen:]


@pytest.mark.parametrize("n", [10, 10**9, 10**14])
def test_npy_claiming_huge_shape_is_cheap(targets, n):
    """A calibration .npy header claiming N x 3 x 16 x 16 floats over a 3 KB body: InputError,
    no allocation of the claimed size (found by the fuzzer: MemoryError / 3 TB malloc)."""
    assert fuzz.check_case(targets["npy"], _npy_with_header_shape((n, 3, 16, 16))) == \
        "InputError"


def test_npz_sidecar_bomb_refused(seed_dir, tmp_path):
    """A 64 MiB member deflated to ~64 KB in the IR sidecar is refused before it is inflated."""
    import shutil
    import tracemalloc

    shutil.copy(seed_dir / "quantized.tir", tmp_path / "q.tir")
    with zipfile.ZipFile(tmp_path / "q.npz", "w", zipfile.ZIP_DEFLATED) as z:
        with z.open("bomb.npy", "w") as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "|i1", "fortran_order": False,
                                                     "shape": (64 << 20,)})
            zeros = bytes(1 << 20)
            for _ in range(64):
                f.write(zeros)
        with np.load(seed_dir / "quantized.npz") as src:
            for k in src.files:
                buf = io.BytesIO()
                np.save(buf, src[k])
                z.writestr(k + ".npy", buf.getvalue())
    assert (tmp_path / "q.npz").stat().st_size < 1 << 20
    tracemalloc.start()
    with pytest.raises(FormatError, match="compressed or larger"):
        load_ir(tmp_path / "q.tir")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 16 << 20


@pytest.mark.parametrize("edit, field", [
    (lambda m: m["outputs"][0].update(offset=1 << 20), "outputs[0].offset"),
    (lambda m: m["outputs"][0].update(npu_hwc=[1, 1, 0]), "outputs[0].npu_hwc"),
    (lambda m: m["outputs"][0].update(scale=[1.0, 2.0]), "outputs[0].scale"),
    (lambda m: m["outputs"][0].update(dtype="float16"), "outputs[0].dtype"),
    (lambda m: m["input"].update(zero_point=[300]), "input.zero_point"),
    (lambda m: m["input"].update(scale=[float("inf")]), "input.scale"),
    (lambda m: m["input"].update(shape=[1, 3, 16]), "input.shape"),
    (lambda m: m["host_ops"].append({"op": "softmax", "input": "nope", "output": "z",
                                     "axis": 1}), "host_ops[1].input"),
    (lambda m: m["host_ops"][0].update(axis=7), "host_ops[0].axis"),
    (lambda m: m.update(graph_outputs=["ghost"]), "graph_outputs[0]"),
    (lambda m: m.update(files=[]), "files"),
    (lambda m: m["target"].update(sram_capacity_bytes="big"), "target.sram_capacity_bytes"),
    (lambda m: m["preprocess"].update(resize=["x"]), "preprocess"),
])
def test_manifest_fields_validated(seed_dir, tmp_path, edit, field):
    """Hand-picked manifest corruptions (each once crashed the runtime with a KeyError,
    TypeError or numpy error) give a FormatError naming the field."""
    folder = _copy(seed_dir, tmp_path)
    m = json.loads((folder / "manifest.json").read_text())
    edit(m)
    (folder / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(FormatError) as exc:
        load_program(folder)
    assert field in str(exc.value)
    assert "\n" not in str(exc.value)


def test_missing_folder_and_files(tmp_path, seed_dir):
    """A missing folder or binary is an InputError naming it."""
    with pytest.raises(InputError, match="nope: does not exist"):
        load_program(tmp_path / "nope")
    folder = _copy(seed_dir, tmp_path)
    (folder / "quantized_network.bin").unlink()
    with pytest.raises(InputError, match="quantized_network.bin: missing"):
        load_program(folder)


@pytest.mark.parametrize("fname", ["npu_cmd.bin", "quantized_network.bin", "manifest.json"])
def test_cli_run_on_corrupt_folder(seed_dir, tmp_path, capsys, fname):
    """`tccc run` on a folder with one corrupted file: exit 0 (harmless change) or 2 with one
    `tccc: error:` line; never 1 (internal error) or a traceback. 15 seeded cases per file."""
    import random
    import shutil

    np.save(tmp_path / "x.npy", np.zeros((1, 3, 16, 16), np.float32))
    rng = random.Random(f"cli:{fname}")
    seed = (seed_dir / fname).read_bytes()
    codes = []
    for k in range(15):
        folder = tmp_path / f"f{k}"
        shutil.copytree(seed_dir, folder)
        (folder / fname).write_bytes(fuzz.mutate(seed, fuzz.random_mutations(rng), None))
        if fname != "manifest.json" and k % 2:
            _refresh_manifest(folder, fname)   # get past the manifest's size/CRC check
        code = main(["run", str(folder), str(tmp_path / "x.npy")])
        err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
        assert code in (0, 2), err
        if code == 2:
            assert len(err) == 1 and err[0].startswith("tccc: error: "), err
        codes.append(code)
    assert 2 in codes


@pytest.mark.parametrize("version, length_field", [(1, b"\xff\xff"), (3, b"\x00\x76\x7b\x27")])
def test_npy_header_length_past_end_is_cheap(targets, version, length_field):
    """A .npy whose header-length field points past the end of the file (found by the long
    fuzz run: numpy allocated 662 MB to read a 3 KB file's header): InputError, no allocation."""
    raw = _npy_with_header_shape((1, 3, 16, 16))
    data = raw[:6] + bytes([version, 0]) + length_field + raw[10:]
    assert fuzz.check_case(targets["npy"], data) == "InputError"


def test_fuzzed_compressed_weight_blocks(targets):
    """Mutations aimed at the compressed blobs of the (compressed by default) seed weight file,
    data CRC fixed up so they reach the block decoder: a FormatError or acceptance, within the
    time and memory contract of :func:`fuzz.check_case`."""
    from tcc_compiler.binfmt import read_weight_file

    t = targets["weights"]
    wf = read_weight_file(t.seed)
    d_off = struct.unpack_from("<I", t.seed, 24)[0]
    spans = [(d_off + e.weights_offset, e.weights_bytes) for e in wf.layers
             if e.weights_compressed]
    spans += [(d_off + e.params_offset, e.params_bytes) for e in wf.layers
              if e.params_compressed and not e.merged]   # merged: params in the first blob
    assert spans, "the seed compiled with default options should have compressed blobs"

    @settings(max_examples=120, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.integers(0, 255),
           st.integers(1, 4))
    def run(which, pos, value, n):
        start, size = spans[which % len(spans)]
        data = bytearray(t.seed)
        for k in range(n):
            data[start + (pos + 17 * k) % size] = (value + 29 * k) & 0xFF
        fuzz.check_case(t, t.fixup(bytes(data)))

    run()
