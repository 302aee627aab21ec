"""``tccc run`` on raw uint8 sample files (``--raw-size WxHxC``, ``--raw-layout``, ``--pixels``),
read through the loader ``tccc eval`` and ``tccc compile --calib`` use (``datasets/raw.py``).
``tccc run OUT SAMPLE.bin`` used to refuse the CIFAR-10 files ("raw array file; give its size")
and took no option to give it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from helpers.cli import one_line_error, run_cli

CIFAR = Path(__file__).resolve().parents[3] / "shared" / "data" / "cifar10-resnet8"
SAMPLES = ("accentor_s_000166.bin", "airbus_s_002266.bin")


@pytest.fixture(scope="module")
def resnet8(tmp_path_factory):
    """(compiled folder, model path, scratch dir) of the CIFAR-10 ResNet-8, calibrated on 8
    of its raw samples as 0..255 arrays; its manifest keeps the default (not raw)
    preprocessing, so ``--pixels raw`` changes what a sample feeds."""
    model = CIFAR / "resnet8.onnx"
    if not model.is_file():
        pytest.skip(f"{CIFAR} not present")
    from tcc_compiler import api

    files = sorted((CIFAR / "images").glob("*.bin"))[:8]
    calib = [_pixels(f).transpose(2, 0, 1)[None].astype(np.float32) for f in files]
    d = tmp_path_factory.mktemp("r8run")
    api.compile(model, calibration=calib).save(d / "out")
    return d / "out", model, d


def _pixels(path: Path) -> np.ndarray:
    """A CIFAR-10 sample's HWC uint8 pixels."""
    return np.frombuffer(path.read_bytes(), np.uint8).reshape(32, 32, 3)


def _logits(capsys, out: Path, *argv) -> list[list[float]]:
    code, stdout, err = run_cli(["run", out, *argv, "--logits", "--json"], capsys)
    assert code == 0, err
    res = json.loads(stdout)
    return [r["logits"] for r in res.get("results", [res])]


def test_run_reads_raw_samples_as_their_pixel_arrays(resnet8, capsys):
    out, model, d = resnet8
    sample = CIFAR / "images" / SAMPLES[0]
    pix = _pixels(sample)
    man = json.loads((out / "manifest.json").read_text())["preprocess"]
    scale, mean, std = (man["scale"], np.array(man["mean"], np.float32),
                        np.array(man["std"], np.float32))
    assert (scale, list(mean)) != (1.0, [0.0] * 3)   # so --pixels raw is a different input
    normalised = ((pix.astype(np.float32) * np.float32(scale) - mean) / std)
    np.save(d / "norm.npy", normalised.transpose(2, 0, 1)[None].astype(np.float32))
    np.save(d / "raw.npy", pix.transpose(2, 0, 1)[None].astype(np.float32))
    # the manifest's preprocessing: as the normalised array
    assert _logits(capsys, out, sample, "--raw-size", "32x32x3") == \
        _logits(capsys, out, d / "norm.npy")
    # --pixels raw: the values 0..255 as they are
    assert _logits(capsys, out, sample, "--raw-size", "32x32x3", "--pixels", "raw") == \
        _logits(capsys, out, d / "raw.npy")
    # planar bytes of the same pixels, read with --raw-layout CHW: the same input
    (d / "planar.rgb").write_bytes(np.ascontiguousarray(pix.transpose(2, 0, 1)).tobytes())
    assert _logits(capsys, out, d / "planar.rgb", "--raw-size", "32x32x3", "--raw-layout",
                   "CHW", "--pixels", "raw") == _logits(capsys, out, d / "raw.npy")
    # bit-exact against the golden model, ONNX Runtime close on the raw pixels
    code, stdout, err = run_cli(["run", out, sample, "--raw-size", "32x32x3", "--pixels", "raw",
                                 "--check", model, "--json"], capsys)
    assert code == 0, err
    assert json.loads(stdout)["check"]["bit_exact"] is True


def test_run_reads_a_folder_of_raw_samples(resnet8, capsys, tmp_path):
    out, _, _ = resnet8
    for name in SAMPLES:
        (tmp_path / name).write_bytes((CIFAR / "images" / name).read_bytes())
    code, stdout, err = run_cli(["run", out, tmp_path, "--raw-size", "32x32x3", "--json"],
                                capsys)
    assert code == 0, err
    labels = [r["input"] for r in json.loads(stdout)["results"]]
    assert labels == [str(tmp_path / n) for n in SAMPLES]


@pytest.mark.parametrize("argv, message", [
    ((), r"accentor_s_000166.bin: raw array file; give its size \(--raw-size WxHxC\)"),
    (("--raw-size", "32x32"), r"--raw-size '32x32': expected WxHxC"),
    (("--raw-size", "0x32x3"), r"--raw-size '0x32x3': width and height must be 1\.\.8192"),
    (("--raw-size", "16x16x3"), r"raw size 16x16x3 differs from the model input 32x32x3"),
])
def test_run_refuses_bad_raw_sizes_in_one_line(resnet8, capsys, argv, message):
    out, _, _ = resnet8
    code, _, err = run_cli(["run", out, CIFAR / "images" / SAMPLES[0], *argv], capsys)
    assert code == 2
    assert re.search(message, one_line_error(err))


def test_run_refuses_a_raw_file_of_the_wrong_byte_count(resnet8, capsys, tmp_path):
    out, _, _ = resnet8
    short = tmp_path / "short.bin"
    short.write_bytes((CIFAR / "images" / SAMPLES[0]).read_bytes()[:3000])
    code, _, err = run_cli(["run", out, short, "--raw-size", "32x32x3"], capsys)
    assert code == 2
    assert f"{short}: 3000 bytes, a 32x32x3 uint8 array has 3072" in one_line_error(err)


def test_eval_names_raw_size_for_a_bad_size(resnet8, capsys):
    # eval parsed --raw-size with --input's parser and named the wrong option
    # ("input_whc/--input '32x32'"); run, eval and compile now share RawSpec.parse
    out, _, _ = resnet8
    code, _, err = run_cli(["eval", out, "--images", CIFAR / "images", "--labels",
                            CIFAR / "labels.csv", "--raw-size", "32x32"], capsys)
    assert code == 2
    line = one_line_error(err)
    assert "--raw-size '32x32': expected WxHxC" in line and "--input" not in line
