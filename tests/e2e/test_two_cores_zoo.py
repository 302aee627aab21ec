"""Zoo models at the seed resolutions compiled with ``cores=2``: the kept program is bit-exact
with the golden integer model, and so are the two-core spatial split (forced, also without
a resident zone) and the emitted stream program (npu_cmd_stream.bin) for every image of its
run, byte for byte, and at 224x224 a stream program of two images per core too, with no hazard
(slow: whole networks at up to 960x520 on the reference executor)."""

from __future__ import annotations

import numpy as np
import pytest

from tcc_compiler import api, zoo
from tcc_compiler.binfmt import read_cmd_file
from tcc_compiler.binfmt.weightfile import read_weight_file
from tcc_compiler.emit.binaries import encode_binaries
from tcc_compiler.isa.wcodec import BlockCompressor
from tcc_compiler.runtime import load_program
from tcc_compiler.runtime.check import Checker
from tcc_compiler.schedule.batch import lower_batch
from tcc_compiler.schedule.cores import lower_spatial
from tcc_compiler.schedule.corestream import stream_program
from tcc_compiler.schedule.search import ZONE_FRACTIONS, search_parts
from tcc_compiler.sim.cores import run_stream
from tcc_compiler.sim.executor import Executor

CASES = [("resnet18", "224x224x3"), ("resnet18", "640x320x3"), ("resnet18", "960x520x3"),
         ("resnet50", "224x224x3"), ("resnet50", "640x320x3"), ("resnet50", "960x520x3"),
         ("resnet50-v2", "224x224x3"), ("mobilenet-v2", "224x224x3")]


def _run(prog, t, q, check):
    cmd_bin, w_bin = encode_binaries(prog, "test")
    ex = Executor(read_cmd_file(cmd_bin), read_weight_file(w_bin), t)
    return ex.run(q, check=check)


@pytest.mark.slow
@pytest.mark.parametrize("name, whc", CASES, ids=[f"{n}-{r}" for n, r in CASES])
def test_two_cores_bit_exact(tmp_path, name, whc):
    w, h, c = (int(v) for v in whc.split("x"))
    path = tmp_path / f"{name}.onnx"
    zoo.save(name, path, width=w, height=h, channels=c)
    rng = np.random.default_rng(0)
    calib = [rng.uniform(-2, 2, (1, c, h, w)).astype(np.float32)]
    m = api.compile(path, whc, calibration=calib, cores=2)
    m.save(tmp_path / "out")
    prog = load_program(tmp_path / "out")
    x = rng.uniform(-2, 2, (1, c, h, w)).astype(np.float32)
    assert Checker(prog, path).check(x, prog.run(x))["bit_exact"]
    q = prog.quantize(x)
    ref = prog.executor.run(q)
    graph, t = m.artifacts.graph, m.artifacts.target
    # the hazard check's shadow memory takes 48 bytes per ACT byte (no DRAM reuse with two
    # cores): checked at 224x224, bytes compared at the larger sizes
    check = w * h <= 224 * 224
    comp = BlockCompressor()
    lw, _, _ = search_parts(graph, t, ZONE_FRACTIONS, comp, {})
    for zone, casc in {(lw.zone_bytes, lw.cascade), (0, False)}:
        split = lower_spatial(graph, t, comp, zone, casc)
        assert split.cores == 2
        assert _run(split, t, q, check) == ref, (zone, casc)
    st = m.manifest["stream"]
    ex = Executor(read_cmd_file((tmp_path / "out" / st["commands"]).read_bytes()),
                  read_weight_file((tmp_path / "out" / st["weights"]).read_bytes()), t)
    qs = [q] + [prog.quantize(rng.uniform(-2, 2, (1, c, h, w)).astype(np.float32))
                for _ in range(st["images"] - 1)]
    outs = run_stream(ex, qs, st["input_stride_bytes"], st["output_stride_bytes"], len(ref),
                      check=check)
    refs = [prog.executor.run(x) for x in qs]
    assert outs == refs
    if check:   # two images per core, op by op, whichever stream the cost model kept
        per_core, strides = lower_batch(graph, t, 2, comp, t.sram_capacity_bytes // 4)
        sp = stream_program(per_core, t, 2, strides)
        cmd_bin, w_bin = encode_binaries(sp.program, "test")
        ex = Executor(read_cmd_file(cmd_bin), read_weight_file(w_bin), t)
        got = run_stream(ex, (qs * 4)[:4], sp.input_stride_bytes, sp.output_stride_bytes,
                         len(ref), check=True)
        assert got == (refs * 4)[:4]


@pytest.mark.slow
def test_yolov8n_two_core_split_of_every_op_kind_bit_exact(tmp_path, capsys):
    """YOLOv8n (one NPU segment, its adds, max pools, resizes and head copies split by rows
    over both cores where the cost model says so) compiled with ``--cores 2``: ``tccc run
    --check`` is bit-exact, the stream program included."""
    import json

    from helpers import PHOTO
    from helpers.cli import run_cli

    path = tmp_path / "yolov8n.onnx"
    zoo.save("yolov8n", path, width=256, height=256, channels=3)
    out = tmp_path / "out"
    code, _, err = run_cli(["-q", "compile", path, "--input", "256x256x3", "--cores", "2",
                            "-o", out, "--calib", PHOTO], capsys)
    assert code == 0, err
    rep = json.loads((out / "report.json").read_text())
    npu = next(s for s in rep["segments"] if s["device"] == "npu")
    tiling = [li["tiling"] for li in json.loads(
        (out / npu["folder"] / "report.json").read_text())["layers"]]
    assert any("split by rows over 2 cores at row" in t for t in tiling)
    code, stdout, err = run_cli(["run", out, PHOTO, "--check", path, "--json"], capsys)
    assert code == 0, err
    assert json.loads(stdout)["check"]["bit_exact"] is True
