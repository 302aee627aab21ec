"""CLI user experience: ``--json`` on every command that prints results (parsed here), corrupted
output folders refused by ``report``/``export-onnx``, labelled multi-input ``run``, the
``--percentile`` guard, plain-text ``--help`` and executor errors naming the folder's file."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest

from tcc_compiler.cli.main import main
from tcc_compiler.datasets.images import bundled_photos
from tcc_compiler.errors import ExecutionError

HW = 32


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(folder, model path, tmp dir): the conftest residual net compiled at 32x32."""
    from conftest import residual_net_impl

    d = tmp_path_factory.mktemp("uxcli")
    model = d / "net.onnx"
    onnx.save(residual_net_impl(hw=HW, c=8), str(model))
    out = d / "out"
    assert main(["compile", str(model), "--input", f"{HW}x{HW}x3", "-o", str(out)]) == 0
    return out, model, d


def _refuse(token: str):
    raise ValueError(f"non-standard JSON token {token}")


def _json(capsys, argv: list[str]):
    """Run a command and parse its stdout with a strict parser (no Infinity/NaN tokens)."""
    capsys.readouterr()
    assert main(argv) == 0
    cap = capsys.readouterr()
    return json.loads(cap.out, parse_constant=_refuse)


def test_json_on_every_result_command(built, capsys, tmp_path):
    out, model, _ = built
    photo = str(bundled_photos("eval")[0])
    z = _json(capsys, ["zoo", "resnet18", "--input", "32x32x3", "-o",
                       str(tmp_path / "z.onnx"), "--json"])
    assert z["model"] == "resnet18" and z["input"] == [32, 32, 3]
    c = _json(capsys, ["compile", str(model), "--input", f"{HW}x{HW}x3", "-o",
                       str(tmp_path / "o2"), "--json"])
    n_conv = sum(n.op_type == "Conv" for n in onnx.load(str(model)).graph.node)
    assert c["npu_ops"]["conv"] == n_conv
    r = _json(capsys, ["run", str(out), photo, "--json"])
    assert r["input"] == photo and 0 <= r["top1"] < 10
    dis = _json(capsys, ["disasm", str(out), "--json"])
    assert dis[-1]["name"] == "END" and dis[0]["offset"] > 0
    assert all(set(e) == {"offset", "core", "name", "fields", "waits", "source"} for e in dis)
    assert {e["core"] for e in dis} == {0}   # a one-core program
    assert [e["offset"] for e in dis] == sorted(e["offset"] for e in dis)
    ins = _json(capsys, ["inspect", str(out), "--json"])
    raw = (out / "npu_cmd.bin").read_bytes()
    assert ins["npu_cmd.bin"]["bytes"] == len(raw)
    assert ins["npu_cmd.bin"]["commands"] == len(dis)
    assert len(ins["quantized_network.bin"]["layers"]) == n_conv + 1  # + the fc
    an = _json(capsys, ["analyze", str(out), str(model), photo, "--out",
                        str(tmp_path / "a.json"), "--json"])
    assert isinstance(an, dict) and an
    json.loads((tmp_path / "a.json").read_text(), parse_constant=_refuse)
    for name in ("report.json", "manifest.json", "calib_table.json"):
        json.loads((out / name).read_text(), parse_constant=_refuse)
    chk = _json(capsys, ["run", str(out), photo, "--check", str(model), "--json"])
    assert chk["check"]["bit_exact"] is True
    ev_dir = tmp_path / "ds" / "cat"
    ev_dir.mkdir(parents=True)
    shutil.copy(photo, ev_dir)
    ev = _json(capsys, ["eval", str(out), "--images", str(tmp_path / "ds"), "--json",
                        "--no-progress"])
    assert isinstance(ev, dict) and ev
    ops_m = _json(capsys, ["ops", str(model), "--input", f"{HW}x{HW}x3", "--json"])
    assert {p["device"] for p in ops_m} <= {"npu", "host"}
    v = _json(capsys, ["ir", "verify", str(out / "quantized.tir"), "--json"])
    assert v["files"][0]["ok"] is True and v["files"][0]["nodes"] > 0
    p = _json(capsys, ["ir", "print", str(model), "--input", f"{HW}x{HW}x3", "--json"])
    assert p["model"] == str(model) and "conv" in p["ir"].lower()
    ops = _json(capsys, ["ops", "--json"])
    assert ops
    rep = _json(capsys, ["report", str(out), "-o", str(tmp_path / "r.html"), "--json"])
    assert rep["bytes"] == (tmp_path / "r.html").stat().st_size
    ex = _json(capsys, ["export-onnx", str(out), "-o", str(tmp_path / "q.onnx"), "--json"])
    assert ex["nodes"]["Conv"] == n_conv


def test_ir_verify_json_failure_is_one_line_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.tir"
    bad.write_text("this is not IR\n")
    assert main(["ir", "verify", str(bad), "--json"]) == 2
    cap = capsys.readouterr()
    assert cap.out == "" and cap.err.count("\n") == 1 and str(bad) in cap.err


@pytest.mark.parametrize("fname", ["npu_cmd.bin", "quantized_network.bin", "manifest.json"])
@pytest.mark.parametrize("how", ["truncate", "flip"])
@pytest.mark.parametrize("cmd", ["report", "export-onnx"])
def test_corrupted_folder_refused(built, tmp_path, capsys, fname, how, cmd):
    out = tmp_path / "o"
    shutil.copytree(built[0], out)
    data = bytearray((out / fname).read_bytes())
    if how == "truncate":
        data = data[:len(data) // 2]
    else:  # in manifest.json a byte of a key the runtime needs (free text may take any byte)
        data[data.find(b'"outputs"') + 2 if fname == "manifest.json" else len(data) // 3] ^= 0x5A
    (out / fname).write_bytes(bytes(data))
    capsys.readouterr()
    assert main([cmd, str(out), "-o", str(tmp_path / "x.out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tccc: error: ") and err.count("\n") == 1
    assert fname in err
    assert not (tmp_path / "x.out").exists()


def test_multi_input_run_labels_files(built, capsys):
    out = built[0]
    photos = [str(p) for p in bundled_photos("eval")[:2]]
    capsys.readouterr()
    assert main(["run", str(out)] + photos) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"[0] {photos[0]}: top1: ")
    assert lines[1].startswith(f"[1] {photos[1]}: top1: ")
    res = _json(capsys, ["run", str(out)] + photos + ["--json"])["results"]
    assert [r["input"] for r in res] == photos


def test_run_labels_folder_entries_and_npy_rows(built, tmp_path, capsys):
    out = built[0]
    folder = tmp_path / "imgs"
    folder.mkdir()
    for p in bundled_photos("eval")[:2]:
        shutil.copy(p, folder)
    arr = np.zeros((2, 3, HW, HW), np.float32)
    np.save(tmp_path / "two.npy", arr)
    res = _json(capsys, ["run", str(out), str(folder), str(tmp_path / "two.npy"),
                         "--json"])["results"]
    names = sorted(p.name for p in folder.iterdir())
    assert [r["input"] for r in res] == [str(folder / n) for n in names] + [
        f"{tmp_path / 'two.npy'}[0]", f"{tmp_path / 'two.npy'}[1]"]


def test_percentile_without_percentile_method_is_an_error(built, tmp_path, capsys):
    model = built[1]
    argv = ["compile", str(model), "--input", f"{HW}x{HW}x3", "-o", str(tmp_path / "p"),
            "--percentile", "99.9"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--calib-method percentile" in err
    assert not (tmp_path / "p").exists()
    assert main(argv + ["--calib-method", "percentile"]) == 0
    table = json.loads((tmp_path / "p" / "calib_table.json").read_text())
    assert "99.9" in json.dumps(table)


@pytest.mark.parametrize("cmd", ["zoo", "compile", "run", "disasm", "inspect", "analyze", "eval",
                                 "ir", "ops", "report", "export-onnx"])
def test_help_is_plain_text(cmd, capsys):
    with pytest.raises(SystemExit):
        main([cmd, "--help"])
    text = capsys.readouterr().out
    assert "``" not in text and ":func:" not in text and ":mod:" not in text
    assert ":class:" not in text


def test_execution_error_names_the_folder_file(built, monkeypatch):
    from tcc_compiler.runtime import load_program
    from tcc_compiler.sim import Executor, executor

    prog = load_program(built[0])
    # an executor on a 16-byte SRAM, its up-front program check skipped: every tile now lies
    # outside, and the run itself must name the file (Executor.target is read-only)
    monkeypatch.setattr(executor, "check_program", lambda cmd, target: None)
    prog.executor = Executor(prog.cmd, prog.weights, prog.target.with_sram(16))
    x = np.zeros(prog.input_shape, np.float32)
    with pytest.raises(ExecutionError) as exc:
        prog.run(x)
    msg = str(exc.value)
    assert msg.startswith(f"{built[0] / 'npu_cmd.bin'}: command ")
    assert msg.count("npu_cmd.bin") == 1
