"""The bias-correction gate prepares its layers' weights for the golden model on worker
threads (quant/bias_correction.py ``_prepare_all``): on one thread that relayout was the
gate's first 0.06 s of CPU on ResNet-50 with the other core idle."""

from __future__ import annotations

import threading

import numpy as np


def test_the_gate_prepares_every_layer_once_on_worker_threads(gap_fc_model,
                                                              monkeypatch):
    from tcc_compiler import api
    from tcc_compiler.quant import bias_correction as bc

    calls: list[tuple[str, str]] = []
    real = bc.prepare_conv

    def spy(node, *a, **k):
        calls.append((node.name, threading.current_thread().name))
        return real(node, *a, **k)

    monkeypatch.setattr(bc, "prepare_conv", spy)
    m = api.compile(gap_fc_model, "16x16x3", bias_correction="auto")
    assert m.report["bias_correction"]["mode"] == "auto"
    assert calls and all(t.startswith("tccc-prepare") for _, t in calls)
    assert np.unique([c[0] for c in calls]).size == len(calls)   # every layer once
