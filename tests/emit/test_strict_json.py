"""Standard JSON everywhere (issue #16 item 2): a non-finite number is written as ``null`` (the
convention of emit/jsonfmt.py and the README), never ``Infinity``/``NaN`` tokens or ``"inf"``
strings. Every document is read back with a strict parser."""

from __future__ import annotations

import json
import math

import numpy as np
import onnx
import pytest

from tcc_compiler.cli.main import main
from tcc_compiler.datasets.images import bundled_photos
from tcc_compiler.emit.jsonfmt import json_ready, json_text
from tcc_compiler.quant.analyze import LayerError, LayerReport


def _refuse(token: str):
    raise ValueError(f"non-standard JSON token {token}")


def strict(text: str):
    """json.loads that refuses Infinity, -Infinity and NaN."""
    return json.loads(text, parse_constant=_refuse)


def test_json_text_writes_null_for_non_finite_numbers():
    doc = {"a": math.inf, "b": [-math.inf, math.nan, 1.5], "c": np.float32("inf"),
           "d": (np.int64(3), np.bool_(True)), "e": "inf"}
    out = strict(json_text(doc))
    assert out == {"a": None, "b": [None, None, 1.5], "c": None, "d": [3, True], "e": "inf"}
    assert json_ready(2.0) == 2.0


def test_analysis_layer_with_infinite_sqnr_is_null_not_a_string():
    r = LayerReport("conv1", "conv", "y", ["Conv_0"], LayerError(1.0, math.inf, 0.0),
                    LayerError(1.0, -math.inf, 0.5))
    d = strict(json_text(r.to_dict()))
    assert d["accumulated"]["sqnr_db"] is None and d["isolated"]["sqnr_db"] is None


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from conftest import residual_net_impl

    d = tmp_path_factory.mktemp("strictjson")
    model = d / "net.onnx"
    onnx.save(residual_net_impl(hw=16, c=4), str(model))
    out = d / "out"
    assert main(["-q", "compile", str(model), "--input", "16x16x3", "-o", str(out)]) == 0
    return out, model


def test_run_check_json_with_exact_outputs_is_standard_json(built, capsys, monkeypatch):
    """An exact match has an infinite SQNR: ``"sqnr_db": Infinity`` was printed (invalid)."""
    from tcc_compiler.runtime import check

    monkeypatch.setattr(check, "sqnr_db", lambda ref, test: math.inf)
    out, model = built
    capsys.readouterr()
    assert main(["run", str(out), str(bundled_photos("eval")[0]), "--check", str(model),
                 "--json"]) == 0
    doc = strict(capsys.readouterr().out)
    assert doc["check"]["sqnr_db"] is None
    assert main(["run", str(out), str(bundled_photos("eval")[0]), "--check", str(model)]) == 0
    assert "sqnr_db=inf" in capsys.readouterr().out  # the text output is unchanged


def test_analyze_json_and_analysis_file_are_standard_json(built, capsys, monkeypatch, tmp_path):
    """Layers with an exact int8 output (infinite SQNR) were written as the string "inf"."""
    from tcc_compiler.quant import analyze

    monkeypatch.setattr(analyze._Acc, "metrics",
                        lambda self: LayerError(1.0, math.inf, 0.0))
    out, model = built
    capsys.readouterr()
    dest = tmp_path / "a.json"
    assert main(["analyze", str(out), str(model), str(bundled_photos("eval")[0]), "--out",
                 str(dest), "--json"]) == 0
    printed = strict(capsys.readouterr().out)
    written = strict(dest.read_text())
    assert printed == written and "inf" not in dest.read_text()
    assert all(layer["isolated"]["sqnr_db"] is None for layer in written["layers"])
