"""The manifest's ``model.sha256`` of a model file is hashed on a thread of its own while the
compile goes on (driver/pipeline.py ``_model_sha_in_background``): done in ``emit`` it was
nearly all the CPU of the compile's last, single-threaded stage (ResNet-50: 0.06 s of 0.07)."""

from __future__ import annotations

import hashlib
import threading

import pytest


def test_model_file_is_hashed_off_the_main_thread_with_the_same_digest(gap_fc_model,
                                                                       monkeypatch):
    from tcc_compiler import api
    from tcc_compiler.driver import pipeline

    threads: list[str] = []
    real = pipeline.file_sha256

    def spy(path):
        threads.append(threading.current_thread().name)
        return real(path)

    monkeypatch.setattr(pipeline, "file_sha256", spy)
    m = api.compile(gap_fc_model, "16x16x3")
    assert threads == ["tccc-model-sha"]
    assert m.manifest["model"]["sha256"] == hashlib.sha256(gap_fc_model.read_bytes()).hexdigest()


def test_a_model_file_that_cannot_be_hashed_fails_the_compile(gap_fc_model, monkeypatch):
    """The thread's error reaches the caller (not lost with the thread)."""
    from tcc_compiler import api
    from tcc_compiler.driver import pipeline

    def gone(path):
        raise PermissionError(f"{path}: unreadable now")

    monkeypatch.setattr(pipeline, "file_sha256", gone)
    with pytest.raises(PermissionError, match="unreadable now"):
        api.compile(gap_fc_model, "16x16x3")
