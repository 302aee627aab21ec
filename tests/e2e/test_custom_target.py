"""A non-default target file end to end: the compiler, the cost model and the executor all use
the compiled target (recorded whole in manifest.json), the program is bit-exact on it, and a
program whose manifest target is edited below what the program needs is refused (exit 2)."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

import pytest

from tcc_compiler import api, zoo
from tcc_compiler.cli.main import main
from tcc_compiler.datasets.images import bundled_photos
from tcc_compiler.isa import commands as C
from tcc_compiler.isa import spec
from tcc_compiler.runtime import load_program
from tcc_compiler.schedule import replay
from tcc_compiler.target import Target, load_target

WHC = "64x48x3"
#: 16 input lanes (the 7x7x3 stem's 21 image-mode lanes no longer fit), 1 MiB SRAM, and other
#: clock, DRAM and vector numbers, so every cost term differs from tcc750x's.
TOML = """\
[target]
name = "test16"

[compute]
macs_per_cycle = 1024
array_in_channels = 16
array_out_channels = 64
clock_hz = 800_000_000
vector_lanes = 32
compute_setup_cycles = 48
image_mode = true

[memory]
sram_capacity_bytes = 1_048_576
sram_align_bytes = 64
dram_bandwidth_bytes_per_s = 6_400_000_000
dma_setup_cycles = 150
dram_align_bytes = 64
decompress_bytes_per_cycle = 8
"""


def _image_lanes(prog) -> list[int]:
    """kw * cin_g of every CONV_CFG that sets image mode."""
    return [c.kw * c.cin_g for c in prog.cmd.commands
            if isinstance(c, C.ConvCfg) and c.flags & spec.CONV_FLAG_IMAGE]


def _total_cycles(prog, tgt: Target) -> int:
    spans = replay(list(prog.cmd.commands), tgt)
    return spans[-1][1]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """ResNet-18 compiled with the CLI for the test16 file and with the API for tcc750x."""
    d = tmp_path_factory.mktemp("custom_target")
    model = d / "r18.onnx"
    w, h, c = (int(v) for v in WHC.split("x"))
    zoo.save("resnet18", model, width=w, height=h, channels=c)
    toml = d / "test16.toml"
    toml.write_text(TOML)
    calib = [str(p) for p in bundled_photos("calib")[:2]]
    assert main(["-q", "compile", str(model), "--input", WHC, "-o", str(d / "custom"),
                 "--target", str(toml), "--calib", *calib]) == 0
    api.compile(model, WHC, calibration=calib).save(d / "default")
    return d, model, toml


def test_custom_target_is_recorded_and_runs_bit_exact(built, capsys):
    d, model, toml = built
    tgt = load_target(str(toml))
    prog = load_program(d / "custom")
    assert prog.manifest["target"] == tgt.to_dict()
    assert prog.target == Target.from_dict(tgt.to_dict()) and prog.executor.target.name == "test16"
    assert 0 < prog.cmd.sram_peak_bytes <= 1 << 20
    assert all(n <= 16 for n in _image_lanes(prog))
    capsys.readouterr()
    photo = str(bundled_photos("eval")[0])
    assert main(["run", str(d / "custom"), photo, "--check", str(model), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["check"]["bit_exact"] is True


def test_cost_model_uses_the_compiled_target(built):
    d, _, toml = built
    tgt = load_target(str(toml))
    prog = load_program(d / "custom")
    report = json.loads((d / "custom" / "report.json").read_text())
    cycles = _total_cycles(prog, tgt)
    assert report["target"] == "test16"
    assert report["estimated_cycles"] == cycles != _total_cycles(prog, load_target())
    assert report["estimated_latency_ms"] == pytest.approx(cycles / 800e6 * 1e3)
    assert report["roofline"]["compute_cycles"] == round(report["macs"] / 1024)


def _edited(built, tmp_path: Path, **fields) -> Path:
    """A copy of the tcc750x output folder whose manifest target has ``fields`` changed (its
    sha256 recomputed, as a deliberate edit would)."""
    d = built[0]
    out = tmp_path / "edited"
    shutil.copytree(d / "default", out)
    m = json.loads((out / "manifest.json").read_text())
    tgt = Target.from_dict(m["target"])
    m["target"] = dataclasses.replace(tgt, **fields).to_dict()
    (out / "manifest.json").write_text(json.dumps(m))
    return out


@pytest.mark.parametrize("fields, message", [
    pytest.param({"sram_capacity_bytes": 64 * 1024},
     r"command \d+ \([A-Z_]+\): sram range 0x[0-9a-f]+-0x[0-9a-f]+ \(\w+\) outside the "
     r"target's SRAM \(tcc750x: sram_capacity_bytes = 65536\)", id="less-sram"),
    pytest.param({"array_in_channels": 16, "macs_per_cycle": 1024},
     r"command \d+ \(CONV_TILE\): image mode packs kw \* cin_g = 7 \* 3 = 21 values per "
     r"input vector, target tcc750x has array_in_channels = 16", id="fewer-lanes"),
    pytest.param({"image_mode": False}, r"command \d+ \(CONV_TILE\): image mode",
                 id="no-image-mode"),
])
def test_program_exceeding_its_edited_target_is_refused(built, tmp_path, capsys, fields,
                                                        message):
    out = _edited(built, tmp_path, **fields)
    assert _image_lanes(load_program(built[0] / "default")) == [21]   # the stem uses it
    capsys.readouterr()
    assert main(["run", str(out), str(bundled_photos("eval")[0])]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert re.match(rf"tccc: error: {re.escape(str(out / 'npu_cmd.bin'))}: {message}", err), err


@pytest.mark.parametrize("edit, message", [
    pytest.param(lambda m: m["target"].pop("vector_lanes"),
                 "target.vector_lanes: expected a positive integer, got None", id="missing"),
    pytest.param(lambda m: m["target"].update(clock_hz=1),
                 "target.sha256: .* does not match", id="stale-sha256"),
    pytest.param(lambda m: m.update(manifest_version=1),
                 "manifest_version 1 not supported .*recompile", id="version-1"),
])
def test_bad_manifest_target_is_a_clean_error(built, tmp_path, capsys, edit, message):
    out = tmp_path / "bad"
    shutil.copytree(built[0] / "default", out)
    m = json.loads((out / "manifest.json").read_text())
    edit(m)
    (out / "manifest.json").write_text(json.dumps(m))
    capsys.readouterr()
    assert main(["inspect", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert re.match(rf"tccc: error: {re.escape(str(out / 'manifest.json'))}: {message}", err), \
        err


def test_hopeless_sram_refused_before_calibrating(tmp_path, capsys):
    """A target whose SRAM cuts a layer into more tiles than an op may take is refused at
    once (before calibrating: the bundled photos are never read), one line naming the layer,
    exit 2, no output folder. MobileOne-S1 200x136 on a 4 KiB SRAM ran 9+ minutes (a new-user
    attack); here conv_net, whose 3x3 128-channel convs take ~25,000 tiles in 4 KiB."""
    import numpy as np
    import onnx

    from tests.helpers.cli import one_line_error, run_cli
    from tests.helpers.two_cores import conv_net

    model = tmp_path / "c.onnx"
    onnx.save(conv_net(), model)
    calib = tmp_path / "x.npy"
    np.save(calib, np.random.default_rng(0).uniform(-2, 2, (1, 16, 28, 28)).astype(np.float32))
    toml = tmp_path / "t4k.toml"
    toml.write_text(TOML.replace("1_048_576", "4096"))
    out = tmp_path / "out"
    code, _, err = run_cli(["compile", model, "-o", out, "--target", toml, "--calib", calib],
                           capsys)
    line = one_line_error(err)
    assert code == 2 and "layer '" in line and "in 4,096 bytes of SRAM" in line, line
    assert "tiles, more than the 4,096 an op may take" in line and not out.exists()
