"""``tccc eval``: dataset layouts, raw arrays, metrics against ONNX Runtime, batched runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from helpers import PHOTO
from helpers.cli import one_line_error, run_cli
from PIL import Image

from tcc_compiler.cli.main import main as cli_main
from tcc_compiler.datasets.images import Preprocess
from tcc_compiler.errors import InputError
from tcc_compiler.runtime.evaluate import (
    RawSpec,
    find_samples,
    load_sample,
    preprocess_for,
    read_labels,
    summarize,
)

CIFAR = Path(__file__).resolve().parents[3] / "shared" / "data" / "cifar10-resnet8"


def test_class_subfolders(tmp_path):
    for c in ("b_cat", "a_dog"):
        (tmp_path / c).mkdir()
        for i in range(2):
            Image.new("RGB", (4, 4), (i, 0, 0)).save(tmp_path / c / f"{i}.png")
    (tmp_path / ".hidden").mkdir()
    samples, classes = find_samples(tmp_path)
    assert classes == ["a_dog", "b_cat"]
    assert [(s.path.parent.name, s.label) for s in samples] == [
        ("a_dog", 0), ("a_dog", 0), ("b_cat", 1), ("b_cat", 1)]


def test_labels_file_formats(tmp_path):
    for n in ("x.bin", "y.bin"):
        (tmp_path / n).write_bytes(b"\0")
    (tmp_path / "l.csv").write_text("file,count,label\ny.bin,10,3\n\n# note\nx.bin,10,7\n")
    s = read_labels(tmp_path / "l.csv", tmp_path)
    assert [(p.path.name, p.label) for p in s] == [("x.bin", 7), ("y.bin", 3)]
    (tmp_path / "val.txt").write_text("x.bin 5\ny.bin 0\n")
    assert [p.label for p in read_labels(tmp_path / "val.txt", tmp_path)] == [5, 0]
    (tmp_path / "bad.txt").write_text("x.bin 5\ny.bin cat\n")
    with pytest.raises(InputError, match=r"bad.txt:2: expected"):
        read_labels(tmp_path / "bad.txt", tmp_path)
    (tmp_path / "missing.txt").write_text("z.bin 1\n")
    with pytest.raises(InputError, match=r"missing.txt:1: .*z.bin not found"):
        read_labels(tmp_path / "missing.txt", tmp_path)
    with pytest.raises(InputError, match="no class sub-folders"):
        find_samples(tmp_path)


def test_labels_files_as_spreadsheets_and_scripts_write_them(tmp_path):
    """A UTF-8 byte-order mark (Excel's "CSV UTF-8"), a quoted CSV field (the csv module and
    pandas quote a name holding a comma) and a space in a whitespace-separated line's path
    were read as part of the file name: "ds/\\ufeffa.png not found"."""
    for n in ("a.png", "b, c.png", "d e.png"):
        (tmp_path / n).write_bytes(b"\0")
    (tmp_path / "bom.csv").write_bytes("\ufefffile,label\r\na.png,1\r\n".encode("utf-8"))
    assert [(p.path.name, p.label) for p in read_labels(tmp_path / "bom.csv", tmp_path)] == [
        ("a.png", 1)]
    (tmp_path / "q.csv").write_text('"b, c.png",2\na.png,3\n', encoding="utf-8")
    assert [(p.path.name, p.label) for p in read_labels(tmp_path / "q.csv", tmp_path)] == [
        ("a.png", 3), ("b, c.png", 2)]
    (tmp_path / "val.txt").write_text("d e.png 4\na.png 5\n", encoding="utf-8")
    assert [(p.path.name, p.label) for p in read_labels(tmp_path / "val.txt", tmp_path)] == [
        ("a.png", 5), ("d e.png", 4)]
    (tmp_path / "nope.txt").write_text("d f.png 4\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"nope.txt:1: .*d not found"):
        read_labels(tmp_path / "nope.txt", tmp_path)


def test_raw_layouts_and_scaling(tmp_path):
    pix = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)           # H=2, W=3, C=3
    (tmp_path / "hwc.bin").write_bytes(pix.tobytes())
    (tmp_path / "chw.bin").write_bytes(pix.transpose(2, 0, 1).tobytes())
    pre = preprocess_for(Preprocess(width=3, height=2).to_dict(), "raw")
    a = load_sample(tmp_path / "hwc.bin", pre, RawSpec(3, 2, 3, "HWC"))
    b = load_sample(tmp_path / "chw.bin", pre, RawSpec(3, 2, 3, "CHW"))
    want = pix.transpose(2, 0, 1)[None].astype(np.float32)                # raw: value = pixel
    np.testing.assert_array_equal(a, want)
    np.testing.assert_array_equal(b, want)
    pre2 = preprocess_for(Preprocess(width=3, height=2).to_dict(), scale=0.5,
                          mean=(1, 2, 3), std=(2, 2, 4))
    c = load_sample(tmp_path / "hwc.bin", pre2, RawSpec(3, 2, 3))
    # hand-computed: (p * 0.5 - mean[c]) / std[c] for pixel (0, 1), channel 2 = value 5
    assert c[0, 2, 0, 1] == pytest.approx((5 * 0.5 - 3) / 4)
    (tmp_path / "short.bin").write_bytes(pix.tobytes()[:-1])
    with pytest.raises(InputError, match="17 bytes, a 3x2x3 uint8 array has 18"):
        load_sample(tmp_path / "short.bin", pre, RawSpec(3, 2, 3))
    with pytest.raises(InputError, match="--raw-size"):
        load_sample(tmp_path / "hwc.bin", pre, None)


def test_summarize_hand_computed():
    rows = [{"label": 1, "npu": [1, 2, 3, 4, 5], "float": [1, 0, 2, 3, 4]},
            {"label": 2, "npu": [0, 2, 3, 4, 5], "float": [2, 0, 1, 3, 4]},
            {"label": 9, "npu": [0, 1, 2, 3, 4], "float": [0, 1, 2, 3, 4]}]
    s = summarize(rows, 4, True)
    assert s["npu"] == {"top1": 1 / 3, "top5": 2 / 3, "top1_correct": 1, "top5_correct": 2}
    assert s["float"]["top1_correct"] == 2 and s["flips"] == 1
    assert (s["samples"], s["total"], s["interrupted"]) == (3, 4, True)


def _tiny_impl(tmp: Path, residual_net) -> Path:
    """A compiled residual net (16x16) and a flat dataset labelled by ONNX Runtime's argmax."""
    import onnx

    from tcc_compiler import api

    model = residual_net(seed=3, hw=16)
    onnx.save(model, tmp / "m.onnx")
    rng = np.random.default_rng(5)
    imgs = [rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for _ in range(12)]
    calib = [(im.astype(np.float32) / 255 - 0.45).transpose(2, 0, 1)[None] / 0.225
             for im in imgs[:4]]
    api.compile(tmp / "m.onnx", "16x16x3", calibration=calib).save(tmp / "out")
    sess = ort.InferenceSession(str(tmp / "m.onnx"), providers=["CPUExecutionProvider"])
    from tcc_compiler.runtime import load_program

    pre = Preprocess.from_dict(load_program(tmp / "out").manifest["preprocess"])
    from tcc_compiler.datasets.images import load_image

    lines = []
    for i, im in enumerate(imgs):
        Image.fromarray(im).save(tmp / f"{i:02d}.png")
        x = load_image(tmp / f"{i:02d}.png", pre)
        lines.append(f"{i:02d}.png {int(np.argmax(sess.run(None, {'x': x})[0]))}")
    (tmp / "labels.txt").write_text("\n".join(lines) + "\n")
    return tmp


def test_eval_cli_against_ort(tmp_path, residual_net, capsys):
    d = _tiny_impl(tmp_path, residual_net)
    argv = ["eval", str(d / "out"), "--images", str(d), "--labels", str(d / "labels.txt"),
            "--check", str(d / "m.onnx"), "--json"]
    assert cli_main(argv) == 0
    r1 = json.loads(capsys.readouterr().out)
    assert r1["samples"] == 12 and not r1["interrupted"]
    assert r1["float"]["top1"] == 1.0 and r1["float"]["top5"] == 1.0   # labels are ORT's
    assert r1["flips"] == 12 - r1["npu"]["top1_correct"]
    assert cli_main(argv + ["--jobs", "2", "--limit", "5"]) == 0
    r2 = json.loads(capsys.readouterr().out)
    assert r2["samples"] == 5 and r2["float"]["top1"] == 1.0
    assert cli_main(["run", str(d / "out"), str(d / "00.png"), str(d / "01.png"), "--json",
                     "--jobs", "2", "--schedule", "random", "--seed", "4"]) == 0
    runs = json.loads(capsys.readouterr().out)["results"]
    assert cli_main(["run", str(d / "out"), str(d / "00.png"), str(d / "01.png"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["results"] == runs


@pytest.fixture(scope="module")
def resnet8_eval(tmp_path_factory):
    """ResNet-8 compiled with the first 50 images (sorted) as calibration, then evaluated on
    all 200 with the float model beside it."""
    if not (CIFAR / "resnet8.onnx").is_file():
        pytest.skip(f"{CIFAR} not present")
    from tcc_compiler import api
    from tcc_compiler.runtime.evaluate import evaluate

    d = tmp_path_factory.mktemp("r8")
    samples, _ = find_samples(CIFAR / "images", CIFAR / "labels.csv")
    calib = [np.frombuffer(s.path.read_bytes(), np.uint8).reshape(32, 32, 3)
             .transpose(2, 0, 1)[None].astype(np.float32) for s in samples[:50]]
    api.compile(CIFAR / "resnet8.onnx", calibration=calib).save(d / "out")
    from tcc_compiler.runtime import load_program

    prog = load_program(d / "out")
    pre = preprocess_for(prog.manifest["preprocess"], "raw")
    return evaluate(d / "out", samples, pre, RawSpec(32, 32, 3), str(CIFAR / "resnet8.onnx"),
                    prog=prog)


def test_resnet8_float_matches_ort(resnet8_eval):
    # The README's ONNX Runtime figure: 85.5 % top-1 on the 200 images.
    assert resnet8_eval["samples"] == 200
    assert resnet8_eval["float"]["top1_correct"] == 171


def test_resnet8_int8_close_to_float(resnet8_eval):
    assert resnet8_eval["npu"]["top1"] >= 0.83
    assert resnet8_eval["flips"] <= 10


def _dataset(tmp_path, lines: list[str]):
    imgs = tmp_path / "imgs"
    (imgs / "a").mkdir(parents=True)
    Image.open(PHOTO).resize((16, 16)).save(imgs / "a" / "brick.jpg")
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    return imgs, tmp_path / "labels.csv"


def test_eval_names_a_non_integer_label_line(small_folder, tmp_path, capsys):
    _, out = small_folder
    imgs, labels = _dataset(tmp_path, ["a/brick.jpg,cat"])
    code, _, err = run_cli(["eval", str(out), "--images", str(imgs), "--labels", str(labels)],
                        capsys)
    assert code == 2
    assert "labels.csv:1" in one_line_error(err) and "'a/brick.jpg,cat'" in err


def test_eval_refuses_a_label_the_model_cannot_output(small_folder, tmp_path, capsys):
    _, out = small_folder
    imgs, labels = _dataset(tmp_path, ["file,label", "a/brick.jpg,3", "a/brick.jpg,10"])
    code, _, err = run_cli(["eval", str(out), "--images", str(imgs), "--labels", str(labels)],
                        capsys)
    assert code == 2
    line = one_line_error(err)
    assert "labels.csv:3" in line and "label 10" in line and "10 classes (0..9)" in line



def test_eval_warns_when_class_folders_do_not_match_the_model_classes(small_folder, tmp_path,
                                                                     capsys, caplog):
    """A subset of a model's classes as sub-folders (e.g. 12 of ImageNet's 1000 synsets) is
    labelled by sorted position, not by class index: scored, but with a warning naming the
    counts; one folder per class (10 here) is not warned about."""
    _, out = small_folder
    imgs, _ = _dataset(tmp_path, [])
    with caplog.at_level("WARNING"):
        code, _, _ = run_cli(["eval", str(out), "--images", str(imgs)], capsys)
    assert code == 0
    assert "1 class sub-folders but the model outputs 10 classes" in caplog.text
    assert "--labels FILE" in caplog.text
    caplog.clear()
    for c in range(1, 10):
        (imgs / f"c{c}").mkdir()
        Image.open(PHOTO).resize((16, 16)).save(imgs / f"c{c}" / "brick.jpg")
    with caplog.at_level("WARNING"):
        code, _, _ = run_cli(["eval", str(out), "--images", str(imgs)], capsys)
    assert code == 0 and "class sub-folders but" not in caplog.text


def test_mean_std_overrides_take_one_or_per_channel_values(tmp_path, capsys):
    """eval's --mean/--std take 1 value or one per channel, as compile's do: a greyscale
    model's single MNIST mean/std works, 1 value fills 3 channels, and 2 values are a one-line
    error (argparse used to demand exactly 3, so a greyscale model could not be overridden)."""
    grey = Preprocess(width=2, height=2, channels=1).to_dict()
    pre = preprocess_for(grey, scale=1 / 255, mean=[0.1307], std=[0.3081])
    assert pre.mean == (0.1307,) and pre.std == (0.3081,)
    assert preprocess_for(grey, mean=[0.3, 0.6, 0.9]).mean == pytest.approx((0.6,))
    colour = preprocess_for(Preprocess(width=2, height=2).to_dict(), mean=[0.5], std=[0.25])
    assert colour.mean == (0.5, 0.5, 0.5) and colour.std == (0.25, 0.25, 0.25)
    with pytest.raises(InputError, match="--mean: give 1 or 3 values, got 2"):
        preprocess_for(Preprocess(width=2, height=2).to_dict(), mean=[0.5, 0.5])
    from tcc_compiler.cli.commands import eval as eval_cmd
    import argparse

    p = argparse.ArgumentParser()
    eval_cmd.add_arguments(p)
    args = p.parse_args(["d", "--images", "i", "--mean", "0.1307", "--std", "0.3081"])
    assert args.mean == [0.1307] and args.std == [0.3081]
