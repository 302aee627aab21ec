"""New-user try-out defects (issue 8, round 2): image modes, greyscale models, output folders
and files, exit codes, corrupt report.json, ignored options and misleading messages.

Expected pixel values are hand-computed (round(x / 257) for 16-bit samples, ITU-R 601 luma for
greyscale); nothing is compared with tccc's own earlier output.
"""

from __future__ import annotations

import errno
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import conv_gap_fc_net_impl, residual_net_impl
from PIL import Image

from tcc_compiler.cli import main
from tcc_compiler.datasets.images import Preprocess, load_image, load_inputs
from tcc_compiler.errors import InputError

PHOTO = str(Path(__file__).resolve().parent.parent / "tcc_compiler/data/photos/eval/camera_man.jpg")


def _run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _one_line_error(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("tccc: error: ")
    return lines[0]


def _identity_pre(w: int, h: int, channels: int = 3) -> Preprocess:
    """Preprocessing that passes 8-bit pixel values through unchanged (scale 1, mean 0)."""
    return Preprocess(width=w, height=h, mean=(0.0,) * channels, std=(1.0,) * channels,
                      scale=1.0, channels=channels)


def _grey_net(channels: int = 1, hw: int = 16) -> onnx.ModelProto:
    """conv3x3 (C -> 4) + Relu -> GlobalAveragePool -> Flatten -> Gemm (5 logits)."""
    return conv_gap_fc_net_impl(channels, hw, seed=3, name="grey")


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """A small 3-channel model compiled with the bundled photos: (model path, output folder)."""
    import tcc_compiler as tc

    d = tmp_path_factory.mktemp("ux")
    model = d / "m.onnx"
    onnx.save(residual_net_impl(hw=16), model)
    out = d / "out"
    tc.compile(str(model), "16x16x3").save(out)
    return model, out


# --- 1. 16-bit images are scaled to 8 bits, not clipped -------------------------------------

def test_16bit_png_is_scaled_not_clipped(tmp_path):
    a = np.array([[0, 128, 257, 1000], [30000, 40000, 65000, 65535]], np.uint16)
    Image.fromarray(a).save(tmp_path / "g16.png")
    with Image.open(tmp_path / "g16.png") as im:
        assert im.mode in ("I;16", "I")  # what Pillow makes of a 16-bit greyscale PNG
    x = load_image(tmp_path / "g16.png", _identity_pre(4, 2))
    want = np.floor(a.astype(np.float64) / 257.0 + 0.5)  # round half up: 128/257 -> 0
    assert x.shape == (1, 3, 2, 4)
    for c in range(3):
        np.testing.assert_array_equal(x[0, c], want)


@pytest.mark.parametrize("mode", ["I;16B", "I;16", "I"])
def test_16bit_modes_scaled_in_tiff(tmp_path, mode):
    a = np.array([[0, 514, 1285, 65535]], np.uint16)
    if mode == "I":
        img = Image.fromarray(a.astype(np.int32), "I")
    elif mode == "I;16B":
        img = Image.frombytes("I;16B", (4, 1), a.astype(">u2").tobytes())
    else:
        img = Image.fromarray(a)
    assert img.mode == mode
    img.save(tmp_path / "x.tif")
    x = load_image(tmp_path / "x.tif", _identity_pre(4, 1, channels=1))
    np.testing.assert_array_equal(x[0, 0], [[0, 2, 5, 255]])


def test_float_tiff_still_loads(tmp_path):
    a = np.array([[0.0, 10.0, 200.0, 255.0]], np.float32)
    Image.fromarray(a, "F").save(tmp_path / "f.tif")
    x = load_image(tmp_path / "f.tif", _identity_pre(4, 1))
    np.testing.assert_allclose(x[0, 0], a, atol=1.0)


def test_32bit_integer_image_out_of_16bit_range_is_refused(tmp_path):
    Image.fromarray(np.array([[0, 70000]], np.int32), "I").save(tmp_path / "big.tif")
    with pytest.raises(InputError, match="32-bit integer image"):
        load_image(tmp_path / "big.tif", _identity_pre(2, 1))


# --- 7. greyscale models take images ---------------------------------------------------------

def test_greyscale_preprocess_uses_luma(tmp_path):
    Image.new("RGB", (3, 2), (200, 100, 50)).save(tmp_path / "c.png")
    x = load_image(tmp_path / "c.png", _identity_pre(3, 2, channels=1))
    luma = round((200 * 299 + 100 * 587 + 50 * 114) / 1000)  # ITU-R 601-2, Pillow's "L"
    assert x.shape == (1, 1, 2, 3)
    assert np.all(np.abs(x - luma) <= 1)
    pre = Preprocess(width=3, height=2, channels=1)   # ImageNet mean/std averaged
    assert pre.mean == pytest.approx(((0.485 + 0.456 + 0.406) / 3,))
    assert Preprocess.from_dict(pre.to_dict()) == pre
    assert "channels" not in Preprocess(width=3, height=2).to_dict()  # old manifests unchanged


def test_preprocess_refuses_other_channel_counts():
    with pytest.raises(InputError, match="channels must be 1"):
        Preprocess(width=4, height=4, channels=2)


def test_four_channel_model_refuses_images_with_the_real_reason(tmp_path):
    with pytest.raises(InputError, match="model input has 4 channels.*npy"):
        load_inputs([PHOTO], Preprocess(width=8, height=8), (1, 4, 8, 8))


def test_one_channel_model_compiles_and_runs_on_photos(tmp_path, capsys):
    model = tmp_path / "g.onnx"
    onnx.save(_grey_net(), model)
    Image.open(PHOTO).convert("L").save(tmp_path / "gray.png")
    for calib in ([], ["--calib", str(tmp_path / "gray.png")]):  # bundled photos, a grey PNG
        out = tmp_path / f"o{len(calib)}"
        code, _, err = _run(["compile", str(model), "--input", "16x16x1", "-o", str(out)]
                            + calib, capsys)
        assert code == 0, err
        assert json.loads((out / "manifest.json").read_text())["preprocess"]["channels"] == 1
    for img in (str(tmp_path / "gray.png"), PHOTO):  # grey and colour inputs both load
        code, stdout, err = _run(["run", str(out), img, "--check", str(model), "--json"], capsys)
        assert code == 0, err
        assert json.loads(stdout)["check"]["bit_exact"] is True


# --- 3. recompiling never deletes the user's files -------------------------------------------

def test_recompile_refuses_foreign_files_and_replaces_own(compiled, tmp_path, capsys):
    import shutil

    model, src = compiled
    out = tmp_path / "out"
    shutil.copytree(src, out)
    (out / "notes.txt").write_text("mine\n")
    (out / "keep").mkdir()
    code, _, err = _run(["compile", str(model), "--input", "16x16x3", "-o", str(out)], capsys)
    assert code == 2
    line = _one_line_error(err)
    assert "keep/" in line and "notes.txt" in line and "move them out" in line
    assert (out / "notes.txt").read_text() == "mine\n" and (out / "keep").is_dir()
    (out / "notes.txt").unlink()
    (out / "keep").rmdir()
    (out / "report.html").write_text("old")   # files tccc writes are replaced
    (out / "analysis.json").write_text("{}")
    code, _, err = _run(["compile", str(model), "--input", "16x16x3", "-o", str(out)], capsys)
    assert code == 0, err
    assert not (out / "report.html").exists() and (out / "manifest.json").is_file()


def test_api_save_refuses_foreign_files(compiled, tmp_path):
    import tcc_compiler as tc

    _, src = compiled
    dest = tmp_path / "d"
    dest.mkdir()
    (dest / "data.csv").write_text("x\n")
    with pytest.raises(InputError, match="data.csv"):
        tc.load(src).save(dest)
    assert (dest / "data.csv").is_file()


# --- 4. -vv keeps the exit code ----------------------------------------------------------------

def test_vv_adds_traceback_but_keeps_exit_code(compiled, tmp_path, capsys):
    _, out = compiled
    code, _, err = _run(["-vv", "run", str(out), str(tmp_path / "nonexist.jpg")], capsys)
    assert code == 2
    assert "Traceback" in err and err.rstrip().splitlines()[-1].startswith("tccc: error: ")


# --- 5. bad output paths: exit 2, one line, nothing printed first ----------------------------

@pytest.mark.parametrize("argv", [
    ["inspect", "{out}", "--csv", "{tmp}"],
    ["inspect", "{out}", "--csv", "{afile}/x.csv"],
    ["inspect", "{out}", "--csv", "{tmp}/nodir/x.csv"],
    ["analyze", "{out}", "{model}", PHOTO, "--out", "{tmp}"],
    ["report", "{out}", "-o", "{tmp}"],
    ["export-onnx", "{out}", "-o", "{afile}/m.onnx"],
    ["zoo", "resnet18", "-o", "{tmp}"],
    ["compile", "{model}", "--input", "16x16x3", "-o", "{afile}/sub"],
])
def test_bad_output_paths_are_one_line_errors(compiled, tmp_path, capsys, argv):
    model, out = compiled
    (tmp_path / "afile").write_text("x")
    argv = [a.format(out=out, tmp=tmp_path, afile=tmp_path / "afile", model=model)
            for a in argv]
    code, stdout, err = _run(argv, capsys)
    assert code == 2, err
    line = _one_line_error(err)
    assert "is a folder" in line or "is a file, not a folder" in line or "does not exist" in line
    assert stdout == ""


def test_output_write_failure_says_what_failed(tmp_path, monkeypatch):
    from tcc_compiler import fsutil

    def refuse(path, data):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(fsutil, "atomic_write_bytes", refuse)
    with pytest.raises(InputError, match="read-only or not writable"):
        fsutil.write_output_file(tmp_path / "x.csv", "a", "--csv")


def test_csv_is_written_whole_with_normal_mode(compiled, tmp_path, capsys):
    _, out = compiled
    code, _, err = _run(["inspect", str(out), "--csv", str(tmp_path / "t.csv")], capsys)
    assert code == 0, err
    assert (tmp_path / "t.csv").read_text().splitlines()[0].startswith("name") or \
        (tmp_path / "t.csv").stat().st_size > 0
    assert (tmp_path / "t.csv").stat().st_mode & 0o044  # readable by others (umask 022)
    assert [p.name for p in tmp_path.iterdir()] == ["t.csv"]  # no temporary left


# --- 6. corrupt report.json ------------------------------------------------------------------

@pytest.mark.parametrize("content", [b"\xff\xfe{", b"{not json", b"[1, 2]"])
def test_corrupt_report_json(compiled, tmp_path, capsys, caplog, content):
    import shutil

    _, src = compiled
    out = tmp_path / "o"
    shutil.copytree(src, out)
    (out / "report.json").write_bytes(content)
    code, stdout, err = _run(["disasm", str(out)], capsys)
    assert code == 0, err
    warned = caplog.text + err  # the warning goes to stderr via logging
    assert "report.json" in warned and "without source names" in warned and "CONV" in stdout
    code, stdout, err = _run(["inspect", str(out)], capsys)
    assert code == 2
    assert "report.json" in _one_line_error(err) and stdout == ""


# --- 2. the HTML report shows every histogram --------------------------------------------------

def test_html_report_draws_every_histogram(compiled):
    from tcc_compiler.report.html import FULL_SIZE_HISTOGRAMS, render_html

    _, out = compiled
    n = FULL_SIZE_HISTOGRAMS + 2
    edges = [float(v) for v in np.linspace(-1.0, 1.0, 9)]
    table = {f"t{i}": {"hist": [1, 2, 3, 4, 4, 3, 2, 1], "edges": edges, "lo": -0.9, "hi": 0.9}
             for i in range(n)}
    page = render_html(out, table)
    assert page.count("<figure><img alt=\"histogram t") == n
    assert f"all {n} quantized tensors" in page


# --- 8. options that used to be ignored or mis-handled ---------------------------------------

def test_run_logits_text_and_json_and_topk_note(compiled, capsys, caplog):
    import onnxruntime as ort

    model, out = compiled
    x = np.random.default_rng(1).standard_normal((1, 3, 16, 16)).astype(np.float32)
    xpath = out.parent / "x_logits.npy"
    np.save(xpath, x)
    code, stdout, err = _run(["run", str(out), str(xpath), "--logits", "--json", "--topk",
                              "50"], capsys)
    assert code == 0, err
    res = json.loads(stdout)
    assert res["logits"] == res["output"] and len(res["logits"]) == 10
    assert len(res["topk"]) == 10
    assert "--topk 50" in caplog.text + err and "10 values" in caplog.text + err
    ref = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(
        None, {"x": x})[0].reshape(-1)
    assert np.corrcoef(ref, res["logits"])[0, 1] > 0.9   # int8 logits track the float model
    code, stdout, err = _run(["run", str(out), str(xpath), "--logits"], capsys)
    line = [ln for ln in stdout.splitlines() if ln.startswith("logits: ")]
    assert code == 0 and len(line) == 1 and len(line[0].split()) == 11
    np.testing.assert_allclose([float(v) for v in line[0].split()[1:]], res["logits"],
                               rtol=1e-5)


def test_analyze_top_zero_is_a_usage_error(compiled, capsys):
    model, out = compiled
    with pytest.raises(SystemExit) as exc:   # argparse usage error
        main(["analyze", str(out), str(model), PHOTO, "--top", "0"])
    assert exc.value.code == 2 and "positive integer" in capsys.readouterr().err


def _dataset(tmp_path, lines: list[str]):
    imgs = tmp_path / "imgs"
    (imgs / "a").mkdir(parents=True)
    Image.open(PHOTO).resize((16, 16)).save(imgs / "a" / "brick.jpg")
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    return imgs, tmp_path / "labels.csv"


def test_eval_names_a_non_integer_label_line(compiled, tmp_path, capsys):
    _, out = compiled
    imgs, labels = _dataset(tmp_path, ["a/brick.jpg,cat"])
    code, _, err = _run(["eval", str(out), "--images", str(imgs), "--labels", str(labels)],
                        capsys)
    assert code == 2
    assert "labels.csv:1" in _one_line_error(err) and "'a/brick.jpg,cat'" in err


def test_eval_refuses_a_label_the_model_cannot_output(compiled, tmp_path, capsys):
    _, out = compiled
    imgs, labels = _dataset(tmp_path, ["file,label", "a/brick.jpg,3", "a/brick.jpg,10"])
    code, _, err = _run(["eval", str(out), "--images", str(imgs), "--labels", str(labels)],
                        capsys)
    assert code == 2
    line = _one_line_error(err)
    assert "labels.csv:3" in line and "label 10" in line and "10 classes (0..9)" in line


def test_compile_quantized_dump_warns_calibration_options_are_ignored(compiled, tmp_path,
                                                                      capsys, caplog):
    _, out = compiled
    code, _, err = _run(["compile", str(out / "quantized.tir"), "-o", str(tmp_path / "o"),
                         "--calib-method", "minmax"], capsys)
    assert code == 0, err
    assert "already quantized" in caplog.text and "--calib-method" in caplog.text


# --- 9. misleading warnings -------------------------------------------------------------------

def test_check_against_source_of_a_dump_does_not_warn_differs(tmp_path, capsys, caplog):
    model = tmp_path / "m.onnx"
    onnx.save(residual_net_impl(hw=16), model)
    dump = tmp_path / "dump"
    code, _, err = _run(["compile", str(model), "--input", "16x16x3", "-o", str(tmp_path / "a"),
                         "--dump-ir", str(dump)], capsys)
    assert code == 0, err
    first = min(dump.glob("*.tir"))
    code, _, err = _run(["compile", str(first), "-o", str(tmp_path / "b")], capsys)
    assert code == 0, err
    x = np.zeros((1, 3, 16, 16), np.float32)
    np.save(tmp_path / "x.npy", x)
    caplog.clear()
    code, _, err = _run(["run", str(tmp_path / "b"), str(tmp_path / "x.npy"), "--check",
                         str(model)], capsys)
    assert code == 0, err
    assert "differs" not in caplog.text + err


def test_analyze_of_another_model_warns_it_differs(compiled, tmp_path, capsys, caplog):
    _, out = compiled
    other = tmp_path / "other.onnx"
    onnx.save(residual_net_impl(seed=5, hw=16), other)
    code, _, err = _run(["analyze", str(out), str(other), PHOTO, "--out",
                         str(tmp_path / "a.json")], capsys)
    assert code == 0, err
    assert "other.onnx differs from the model" in caplog.text + err
    assert "--input says" not in caplog.text + err


# --- 10. -v shows what each stage did ---------------------------------------------------------

def test_verbose_logs_each_stage(tmp_path, caplog):
    import logging

    import tcc_compiler as tc

    with caplog.at_level(logging.INFO, logger="tcc_compiler"):
        tc.compile(residual_net_impl(hw=16), "16x16x3")
    text = caplog.text
    for stage in ("import: ", "passes: ", "quantize: method mse", "schedule: ", "emit: "):
        assert stage in text, stage


# --- 11. API wording, backend paths, ops notes -------------------------------------------------

def test_loaded_model_ir_missing_stage_lists_available(compiled):
    import tcc_compiler as tc

    _, out = compiled
    m = tc.load(out)
    assert "graph" in m.ir["quantize"]
    with pytest.raises(KeyError, match="available: quantize"):
        m.ir["fuse-activation"]


def test_backend_prepare_accepts_a_path_and_refuses_junk(tmp_path):
    from tcc_compiler import onnx_backend as backend

    model = residual_net_impl(hw=16)
    onnx.save(model, tmp_path / "m.onnx")
    rep = backend.prepare(str(tmp_path / "m.onnx"), "CPU")
    x = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)
    (y,) = rep.run([x])
    assert y.shape == (1, 10)
    with pytest.raises(TypeError, match="ModelProto or a path"):
        backend.prepare(42, "CPU")
    with pytest.raises(InputError, match="no such model file"):
        backend.prepare(str(tmp_path / "nope.onnx"), "CPU")


def test_api_errors_name_the_argument_and_the_flag():
    import tcc_compiler as tc

    with pytest.raises(InputError, match="input_whc/--input"):
        tc.compile(residual_net_impl(hw=16), "16x16")


def test_ops_notes_come_from_the_support_records(capsys):
    from tcc_compiler.frontend.support import SUPPORT

    code, stdout, _ = _run(["ops", "--json"], capsys)
    assert code == 0
    rows = {r["op_type"]: r for r in json.loads(stdout)}
    for op in ("Add", "AveragePool", "MaxPool", "Mul", "Sum"):
        assert rows[op]["notes"] and SUPPORT[op].accepts in rows[op]["notes"]
