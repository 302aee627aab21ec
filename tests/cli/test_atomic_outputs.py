"""Atomic outputs: a failing or killed compile leaves the previous output intact.

The compiles here run the real CLI (in-process or as a subprocess that is SIGKILLed while it
is writing its staging folder or at arbitrary moments); the checks read the output folder back
byte by byte and through the runtime loader, which verifies sizes and CRCs against the
manifest.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tcc_compiler import fsutil
from tcc_compiler.cli.main import main
from tcc_compiler.runtime.loaded import load_program

REPO = Path(__file__).resolve().parents[2]


def _model(seed: int) -> onnx.ModelProto:
    """Conv3x3(3->8)+Relu -> Conv3x3(8->8)+Relu -> GAP -> Flatten -> Gemm(10), NCHW 1x3x16x16."""
    r = np.random.default_rng(seed)
    inits = {"w1": r.standard_normal((8, 3, 3, 3)) * 0.3, "w2": r.standard_normal((8, 8, 3, 3))
             * 0.2, "fw": r.standard_normal((10, 8)), "fb": r.standard_normal(10) * 0.1}
    mk = helper.make_node
    nodes = [mk("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="c1"),
             mk("Relu", ["c1"], ["r1"], name="r1"),
             mk("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], name="c2"),
             mk("Relu", ["c2"], ["r2"], name="r2"),
             mk("GlobalAveragePool", ["r2"], ["g"], name="gap"),
             mk("Flatten", ["g"], ["f"], name="flat"),
             mk("Gemm", ["f", "fw", "fb"], ["y"], transB=1, name="fc")]
    g = helper.make_graph(nodes, "atomic",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
                          [numpy_helper.from_array(np.asarray(v, np.float32), k)
                           for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


@pytest.fixture
def setup(tmp_path):
    """Two different models (old, new), calibration data, and 'out' compiled from the old."""
    for seed, name in ((0, "old.onnx"), (1, "new.onnx")):
        onnx.save(_model(seed), str(tmp_path / name))
    np.save(tmp_path / "calib.npy",
            np.random.default_rng(5).standard_normal((2, 3, 16, 16)).astype(np.float32))
    assert _compile(tmp_path, "old.onnx") == 0
    return tmp_path


def _argv(tmp: Path, model: str) -> list[str]:
    return ["-q", "compile", str(tmp / model), "--input", "16x16x3", "-o", str(tmp / "out"),
            "--calib", str(tmp / "calib.npy")]


def _compile(tmp: Path, model: str) -> int:
    return main(_argv(tmp, model))


def _snapshot(folder: Path, timings: bool = True) -> dict[str, bytes]:
    """File name -> bytes; ``timings=False`` drops the reports (they hold compile times)."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())
            if timings or not p.name.startswith("report.")}


def _staging(tmp: Path) -> list[str]:
    return sorted(e for e in os.listdir(tmp) if e.startswith(".out."))


def test_failing_compile_keeps_previous_output(setup, monkeypatch, capsys):
    """A full disk while the staging folder is being written (after both binaries are in it):
    exit code 2 with one line, 'out' byte-identical, no staging folder left."""
    from tcc_compiler.ir import text

    before = _snapshot(setup / "out")

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(text, "save_ir", fail)
    assert _compile(setup, "new.onnx") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "No space left on device" in err[0] and "unchanged" in err[0]
    assert _snapshot(setup / "out") == before
    assert _staging(setup) == []


_KILL_SCRIPT = textwrap.dedent("""
    import sys, time
    import tcc_compiler.ir.text as text
    real = text.save_ir
    def staged(*args, **kwargs):
        real(*args, **kwargs)
        print("STAGED", flush=True)
        time.sleep(120)
    text.save_ir = staged
    from tcc_compiler.cli.main import main
    sys.exit(main(sys.argv[1:]))
""")


def test_killed_while_writing_keeps_previous_output(setup):
    """SIGKILL while the new output is half written (binaries staged, IR written, report not
    yet moved in): 'out' stays byte-identical; the hidden staging folder the kill leaves is
    removed by the next compile, which then succeeds."""
    before = _snapshot(setup / "out")
    proc = subprocess.Popen([sys.executable, "-c", _KILL_SCRIPT] + _argv(setup, "new.onnx"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        line = proc.stdout.readline()
        assert line.strip() == "STAGED", proc.stderr.read()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert _snapshot(setup / "out") == before
    left = _staging(setup)
    assert len(left) == 1 and left[0].startswith(f".out.tmp-{proc.pid}-"), left
    assert (setup / left[0] / "npu_cmd.bin").is_file()   # the kill really was midway
    assert _compile(setup, "new.onnx") == 0
    assert _staging(setup) == []
    assert _snapshot(setup / "out") != before
    load_program(setup / "out")


def test_killed_at_arbitrary_moments(setup):
    """SIGKILL a plain `tccc compile` subprocess after various delays: 'out' always loads
    (sizes and CRCs match its manifest) and is either the old or the new output."""
    names = sorted(p.name for p in (setup / "out").iterdir())
    old = _snapshot(setup / "out", timings=False)
    assert _compile(setup, "new.onnx") == 0
    new = _snapshot(setup / "out", timings=False)
    assert _compile(setup, "old.onnx") == 0
    seen = set()
    for delay in (0.3, 1.0, 1.6, 2.4):
        proc = subprocess.Popen([sys.executable, "-m", "tcc_compiler.cli.main"]
                                + _argv(setup, "new.onnx"),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
        time.sleep(delay)
        proc.kill()
        proc.wait(timeout=30)
        snap = _snapshot(setup / "out", timings=False)
        assert snap in (old, new), f"after {delay} s: a mixed or partial output"
        assert sorted(p.name for p in (setup / "out").iterdir()) == names
        seen.add("old" if snap == old else "new")
        load_program(setup / "out")
    assert seen  # at least one state observed; both are fine


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_recovers_from_kill_between_fallback_renames(setup):
    """A process killed after moving the old output aside but before moving the new one in
    (possible only on the rename fallback): the next atomic_dir, even a failing one, puts the
    previous output back and deletes the dead process's staging folders."""
    before = _snapshot(setup / "out")
    pid = _dead_pid()
    old = setup / f".out.old-{pid}-abc"
    old.mkdir()
    os.replace(setup / "out", old / "prev")
    (setup / f".out.tmp-{pid}-def").mkdir()
    with pytest.raises(RuntimeError), fsutil.atomic_dir(setup / "out"):
        raise RuntimeError("build failed")
    assert _snapshot(setup / "out") == before
    assert _staging(setup) == []


def test_live_process_staging_is_left_alone(tmp_path):
    """Staging folders of running processes (here: this one's parent) are not touched."""
    live = tmp_path / f".out.tmp-{os.getppid()}-xyz"
    live.mkdir()
    with fsutil.atomic_dir(tmp_path / "out") as d:
        (d / "f").write_text("x")
    assert live.is_dir() and (tmp_path / "out" / "f").read_text() == "x"


def test_rename_fallback_path(setup, monkeypatch):
    """Without RENAME_EXCHANGE the two-rename path publishes the new output, no leftovers."""
    monkeypatch.setattr(fsutil.folder, "_exchange", lambda a, b: False)
    before = _snapshot(setup / "out")
    assert _compile(setup, "new.onnx") == 0
    assert _snapshot(setup / "out") != before
    assert _staging(setup) == []
    load_program(setup / "out")


def test_output_path_is_a_file(tmp_path, capsys):
    """-o naming an existing file: exit 2, the file untouched."""
    onnx.save(_model(0), str(tmp_path / "m.onnx"))
    np.save(tmp_path / "calib.npy", np.zeros((1, 3, 16, 16), np.float32))
    (tmp_path / "out").write_bytes(b"keep me")
    assert _compile(tmp_path, "m.onnx") == 2
    assert "not a folder" in capsys.readouterr().err
    assert (tmp_path / "out").read_bytes() == b"keep me"
