"""``tccc run`` output options: ``--logits`` in text and JSON, ``--topk`` above the number of
classes prints them all with a note.
"""

from __future__ import annotations

import json

import numpy as np
from helpers.cli import run_cli


def test_run_logits_text_and_json_and_topk_note(small_folder, tmp_path, capsys, caplog):
    import onnxruntime as ort

    model, out = small_folder
    x = np.random.default_rng(1).standard_normal((1, 3, 16, 16)).astype(np.float32)
    xpath = tmp_path / "x_logits.npy"
    np.save(xpath, x)
    code, stdout, err = run_cli(["run", str(out), str(xpath), "--logits", "--json", "--topk",
                              "50"], capsys)
    assert code == 0, err
    res = json.loads(stdout)
    assert res["logits"] == res["output"] and len(res["logits"]) == 10
    assert len(res["topk"]) == 10
    assert "--topk 50" in caplog.text + err and "10 values" in caplog.text + err
    ref = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(
        None, {"x": x})[0].reshape(-1)
    assert np.corrcoef(ref, res["logits"])[0, 1] > 0.9   # int8 logits track the float model
    code, stdout, err = run_cli(["run", str(out), str(xpath), "--logits"], capsys)
    line = [ln for ln in stdout.splitlines() if ln.startswith("logits: ")]
    assert code == 0 and len(line) == 1 and len(line[0].split()) == 11
    np.testing.assert_allclose([float(v) for v in line[0].split()[1:]], res["logits"],
                               rtol=1e-5)

