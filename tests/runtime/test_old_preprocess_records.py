"""Folders written before the preprocessing record held a channel count (manifest_version 2
alike) keep loading: tccc then wrote a 3-channel record (no ``channels`` field, three ImageNet
means and stds, or the user's three) for every input of other than 1 or 3 channels, e.g. the
zoo's FlowNetS (6 channels) and the inner NPU segments of a segmented YOLO11n (2-channel
inputs). Such a record is read at the input's channel count, as a recompile now writes it;
a record that states another count is still refused (a record for another input)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from helpers.cli import run_cli

from tcc_compiler.datasets.preprocess import Preprocess
from tcc_compiler.errors import FormatError
from tcc_compiler.runtime.manifest_check import FieldChecker, check_preprocess

# what tccc 8ae91ad wrote for a 16x16 input of 4 channels (Preprocess(width, height).to_dict())
OLD_RECORD = {"channel_order": "RGB", "height": 16, "mean": [0.485, 0.456, 0.406],
              "resize": "bilinear", "scale": 1 / 255, "std": [0.229, 0.224, 0.225],
              "width": 16}


def test_an_old_record_reads_at_the_input_channel_count():
    ck = FieldChecker("out/manifest.json")
    got = Preprocess.from_dict(check_preprocess(ck, dict(OLD_RECORD), (4, 16, 16)))
    assert got == Preprocess(width=16, height=16, channels=4)   # what a recompile writes
    same = dict(OLD_RECORD, mean=[0.5] * 3, std=[0.25] * 3)      # one value for every channel
    got = Preprocess.from_dict(check_preprocess(ck, same, (6, 16, 16)))
    assert (got.channels, got.mean, got.std) == (6, (0.5,), (0.25,))   # exactly, not averaged
    rgb = Preprocess(width=16, height=16).to_dict()
    assert check_preprocess(ck, rgb, (3, 16, 16)) == rgb
    with pytest.raises(FormatError, match="preprocess.channels: 3, but the input has 4"):
        check_preprocess(ck, dict(OLD_RECORD, channels=3), (4, 16, 16))   # says another count


def test_a_folder_with_an_old_record_runs_as_before(channel_folders, tmp_path, capsys):
    ch = channel_folders[4]
    old = tmp_path / "old"
    shutil.copytree(ch["folder"], old)
    mpath = old / "manifest.json"
    m = json.loads(mpath.read_text())
    m["preprocess"] = OLD_RECORD
    mpath.write_text(json.dumps(m))
    x = tmp_path / "x.npy"
    np.save(x, np.load(ch["calib"])[:1])
    outs = []
    for folder in (ch["folder"], old):
        code, stdout, err = run_cli(["run", str(folder), str(x), "--logits", "--json"], capsys)
        assert code == 0, err
        outs.append(json.loads(stdout)["logits"])
    assert outs[0] == outs[1]
