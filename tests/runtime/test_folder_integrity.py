"""What a damaged or mismatched folder is called (issue #16 item 11): a flipped byte is
corruption, not "files from different compilations?"; ``--check`` against another model is an
error (exit 2), not a warning; an eval interrupted before its first image prints no "0/0"."""

from __future__ import annotations

import json
import shutil

import onnx
import pytest

from tcc_compiler.cli.main import main
from tcc_compiler.datasets.images import bundled_photos
from tcc_compiler.errors import FormatError
from tcc_compiler.runtime import evaluate, load_program


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from conftest import residual_net_impl

    d = tmp_path_factory.mktemp("integrity")
    model = d / "net.onnx"
    onnx.save(residual_net_impl(hw=16, c=4), str(model))
    out = d / "out"
    assert main(["-q", "compile", str(model), "--input", "16x16x3", "-o", str(out)]) == 0
    return d, model, out


@pytest.mark.parametrize("name", ["npu_cmd.bin", "quantized_network.bin"])
@pytest.mark.parametrize("where", [0.1, 0.5, 0.97])
def test_flipped_byte_is_reported_as_corruption(built, tmp_path, name, where):
    _, _, out = built
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    data = bytearray((bad / name).read_bytes())
    data[int(where * (len(data) - 1))] ^= 0x10
    (bad / name).write_bytes(bytes(data))
    with pytest.raises(FormatError) as exc:
        load_program(bad)
    msg = str(exc.value)
    assert "corrupted" in msg and name in msg and "different compilations" not in msg


def test_file_of_another_size_is_another_compilation(built, tmp_path):
    _, _, out = built
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    man = json.loads((bad / "manifest.json").read_text())
    man["files"]["npu_cmd.bin"]["bytes"] += 16
    (bad / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(FormatError, match="another compilation"):
        load_program(bad)


def test_check_against_another_model_is_an_error(built, tmp_path, capsys):
    from conftest import residual_net_impl

    _, _, out = built
    other = tmp_path / "other.onnx"
    onnx.save(residual_net_impl(hw=16, c=4, seed=7), str(other))   # same output size
    capsys.readouterr()
    assert main(["run", str(out), str(bundled_photos("eval")[0]), "--check", str(other)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not the model this folder was compiled from" in err


def test_eval_interrupted_before_the_first_image(built, tmp_path, monkeypatch, capsys):
    _, _, out = built
    ds = tmp_path / "ds" / "cat"
    ds.mkdir(parents=True)
    shutil.copy(bundled_photos("eval")[0], ds)

    def interrupted(*a, **k):
        raise KeyboardInterrupt
        yield  # pragma: no cover - a generator that stops at once

    monkeypatch.setattr("tcc_compiler.runtime.batch.imap", interrupted)
    capsys.readouterr()
    assert main(["eval", str(out), "--images", str(tmp_path / "ds"), "--no-progress"]) == 130
    text = capsys.readouterr().out
    assert "0/0" not in text and "0.0%" not in text and "no sample finished" in text
    assert main(["eval", str(out), "--images", str(tmp_path / "ds"), "--no-progress",
                 "--json"]) == 130
    doc = json.loads(capsys.readouterr().out)
    assert doc["samples"] == 0 and doc["npu"]["top1"] is None
    assert evaluate.summarize([], 3, True)["npu"]["top5"] is None
