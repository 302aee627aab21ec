"""Models whose channel count is not the photos' 3: a 1-channel model compiles and runs on
colour and grey photos; a 4-channel one gets messages naming the file and the channel counts
(``report --histograms``, ``eval``, ``run --check``).

Expected messages are stated from the inputs given (which file, how many channels).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
from conftest import conv_gap_fc_net_impl
from helpers import PHOTO
from helpers.cli import one_line_error, run_cli
from helpers.compiled import CHANNEL_HW as HW
from PIL import Image

from tcc_compiler.cli.main import main
from tcc_compiler.datasets.images import bundled_photos


def _grey_net(channels: int = 1, hw: int = 16) -> onnx.ModelProto:
    """conv3x3 (C -> 4) + Relu -> GlobalAveragePool -> Flatten -> Gemm (5 logits)."""
    return conv_gap_fc_net_impl(channels, hw, seed=3, name="grey")


def test_one_channel_model_compiles_and_runs_on_photos(tmp_path, capsys):
    model = tmp_path / "g.onnx"
    onnx.save(_grey_net(), model)
    Image.open(PHOTO).convert("L").save(tmp_path / "gray.png")
    for calib in ([], ["--calib", str(tmp_path / "gray.png")]):  # bundled photos, a grey PNG
        out = tmp_path / f"o{len(calib)}"
        code, _, err = run_cli(["compile", str(model), "--input", "16x16x1", "-o", str(out)]
                            + calib, capsys)
        assert code == 0, err
        assert json.loads((out / "manifest.json").read_text())["preprocess"]["channels"] == 1
    for img in (str(tmp_path / "gray.png"), PHOTO):  # grey and colour inputs both load
        code, stdout, err = run_cli(["run", str(out), img, "--check", str(model), "--json"], capsys)
        assert code == 0, err
        assert json.loads(stdout)["check"]["bit_exact"] is True


def test_report_histograms_default_photos_cannot_feed_4_channels(channel_folders, tmp_path, capsys):
    capsys.readouterr()
    code = main(["report", str(channel_folders[4]["folder"]), "-o", str(tmp_path / "r.html"),
                 "--histograms"])
    line = one_line_error(capsys.readouterr().err)
    assert code != 0
    assert "4 channels" in line and "bundled photos" in line and ".npy" in line
    # the user passed no photo: none is named as if it were theirs
    assert not any(p.name in line for p in bundled_photos("calib"))
    assert not (tmp_path / "r.html").exists()


def test_report_histograms_npy_on_4_channels_works(channel_folders, tmp_path, capsys):
    out = tmp_path / "r.html"
    assert main(["report", str(channel_folders[4]["folder"]), "-o", str(out), "--histograms",
                 str(channel_folders[4]["calib"])]) == 0
    assert "Activation histograms" in out.read_text()


def test_eval_shape_mismatch_names_the_file(channel_folders, tmp_path, capsys):
    photo = bundled_photos("eval")[0]
    (tmp_path / "cls0").mkdir()
    shutil.copy(photo, tmp_path / "cls0" / photo.name)
    capsys.readouterr()
    code = main(["eval", str(channel_folders[4]["folder"]), "--images", str(tmp_path)])
    line = one_line_error(capsys.readouterr().err)
    assert code != 0
    assert photo.name in line
    assert "model input has 4 channels" in line and "1 (greyscale) or 3 (colour)" in line


def test_run_check_channel_mismatch_says_so(channel_folders, tmp_path, capsys):
    x = tmp_path / "x4.npy"
    np.save(x, np.zeros((1, 4, HW, HW), np.float32))
    capsys.readouterr()
    code = main(["run", str(channel_folders[4]["folder"]), str(x), "--check",
                 str(channel_folders[1]["model"])])
    line = one_line_error(capsys.readouterr().err)
    assert code != 0
    assert "channel mismatch" in line
    assert "takes 1, the compiled program's 4 channels" in line
    assert "cannot load" not in line
    assert channel_folders[1]["model"].name in line



def test_ops_says_a_2_or_4_channel_model_needs_calibration_arrays(tmp_path, capsys, caplog):
    """``tccc ops`` placed every node on the NPU and said nothing, then ``tccc compile`` of
    the same model refused it for want of ``--calib`` arrays: ops now warns (exit 0: with
    them it compiles), and its warning names the remedy compile accepts."""
    for c in (2, 4):
        model = tmp_path / f"c{c}.onnx"
        onnx.save(_grey_net(c), model)
        for extra in ([], ["--json"], ["--input", f"16x16x{c}"]):
            caplog.clear()
            code, out, err = run_cli(["ops", model] + extra, capsys)
            assert code == 0, err
            assert f"the input takes {c} channels" in caplog.text, caplog.text
            assert "--calib .npy" in caplog.text
        code, _, err = run_cli(["compile", model, "-o", tmp_path / "o"], capsys)
        assert code == 2 and "--calib .npy" in one_line_error(err)
        np.save(tmp_path / "cal.npy", np.random.default_rng(0).standard_normal(
            (2, c, 16, 16)).astype(np.float32))
        code, _, err = run_cli(["compile", model, "-o", tmp_path / "o", "--calib",
                                tmp_path / "cal.npy"], capsys)
        assert code == 0, err
    for c in (1, 3):   # images load for these: no warning
        model = tmp_path / f"c{c}.onnx"
        onnx.save(_grey_net(c), model)
        caplog.clear()
        code, _, err = run_cli(["ops", model], capsys)
        assert code == 0 and "channels" not in caplog.text, caplog.text


def _raw4(tmp_path, n: int = 2) -> list:
    """``n`` random HxWx4 uint8 raw files (HWC) for the 4-channel model."""
    files = []
    for i in range(n):
        f = tmp_path / f"s{i}.bin"
        f.write_bytes(np.random.default_rng(i).integers(0, 256, HW * HW * 4, np.uint8).tobytes())
        files.append(f)
    return files


def test_4_channel_raw_files_run_eval_and_calibrate(channel_folders, tmp_path, capsys):
    # raw files of the model's 4 channels were refused as "differs from the model input
    # 16x16x3": the preprocessing record's 3 channels stood for the model's
    c4 = channel_folders[4]
    files = _raw4(tmp_path)
    size = f"{HW}x{HW}x4"
    code, stdout, err = run_cli(["run", c4["folder"], files[0], "--raw-size", size, "--pixels",
                                 "raw", "--check", c4["model"], "--json"], capsys)
    assert code == 0, err
    assert json.loads(stdout)["check"]["bit_exact"] is True
    (tmp_path / "ev" / "cls0").mkdir(parents=True)
    shutil.copy(files[0], tmp_path / "ev" / "cls0" / "a.bin")
    code, stdout, err = run_cli(["eval", c4["folder"], "--images", tmp_path / "ev", "--raw-size",
                                 size, "--pixels", "raw", "--json"], capsys)
    assert code == 0, err
    assert json.loads(stdout)["samples"] == 1
    # calibration on them, one mean and std for all 4 channels
    out = tmp_path / "out"
    code, _, err = run_cli(["compile", c4["model"], "--calib", *files, "--raw-size", size,
                            "--mean", "127", "--std", "128", "--scale", "1", "-o", out], capsys)
    assert code == 0, err
    code, stdout, err = run_cli(["run", out, files[1], "--raw-size", size, "--check", c4["model"],
                                 "--json"], capsys)
    assert code == 0, err
    assert json.loads(stdout)["check"]["bit_exact"] is True


def test_4_channel_package_records_a_4_channel_preprocessing(channel_folders, tmp_path,
                                                             capsys):
    """The manifest of a 4-channel model held a 3-value (RGB) preprocessing record, so its
    default mean/std did not apply to its own raw files ("give one value per colour
    channel"); the record now has the model's 4 channels, the ImageNet defaults averaged to
    one value for every channel, and raw files run with it."""
    rec = json.loads((channel_folders[4]["folder"] / "manifest.json").read_text())["preprocess"]
    assert rec["channels"] == 4
    assert rec["mean"] == [pytest.approx((0.485 + 0.456 + 0.406) / 3)]
    assert rec["std"] == [pytest.approx((0.229 + 0.224 + 0.225) / 3)]
    f = _raw4(tmp_path, 1)[0]
    code, stdout, err = run_cli(["run", channel_folders[4]["folder"], f, "--raw-size",
                                 f"{HW}x{HW}x4", "--check", channel_folders[4]["model"],
                                 "--json"], capsys)
    assert code == 0, err
    assert json.loads(stdout)["check"]["bit_exact"] is True
    code, _, err = run_cli(["run", channel_folders[4]["folder"], f, "--raw-size",
                            f"{HW}x{HW}x3"], capsys)
    assert code == 2
    assert f"differs from the model input {HW}x{HW}x4" in one_line_error(err)


def test_a_3_channel_record_on_a_4_channel_package_is_refused(channel_folders, tmp_path, capsys):
    """A manifest is not trusted: a preprocessing record stating another channel count is one
    error line naming the field, exit 2, for every command that loads the folder. (One with no
    ``channels``, as tccc wrote for a 4-channel model before its record had the model's
    channels, is read at the input's count: tests/runtime/test_old_preprocess_records.py.)"""
    bad = tmp_path / "bad"
    shutil.copytree(channel_folders[4]["folder"], bad)
    m = json.loads((bad / "manifest.json").read_text())
    m["preprocess"]["channels"] = 3
    m["preprocess"]["mean"], m["preprocess"]["std"] = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    (bad / "manifest.json").write_text(json.dumps(m))
    for argv in (["run", bad, channel_folders[4]["calib"]], ["inspect", bad]):
        code, _, err = run_cli(argv, capsys)
        assert code == 2, err
        assert "manifest.json: preprocess.channels: 3, but the input has 4" in \
            one_line_error(err), err
