"""``--jobs`` is capped at the number of inputs and of usable CPUs (issue #16 item 3): ``--jobs
500`` on 12 inputs started 104 processes and took 75 s."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from tcc_compiler.cli.main import main
from tcc_compiler.runtime import batch
from tests.helpers.pools import record_pool_sizes


def test_effective_jobs_caps_at_inputs_and_cpus():
    cpus = batch.usable_cpus()
    assert batch.effective_jobs(500, 12) == min(12, cpus)
    assert batch.effective_jobs(500, 1) == 1
    assert batch.effective_jobs(1, 100) == 1
    assert batch.effective_jobs(3, 0) == 1


def test_run_with_huge_jobs_starts_at_most_one_worker_per_input(tmp_path, monkeypatch, capsys):
    from conftest import residual_net_impl

    model = tmp_path / "net.onnx"
    onnx.save(residual_net_impl(hw=16, c=4), str(model))
    out = tmp_path / "out"
    assert main(["-q", "compile", str(model), "--input", "16x16x3", "-o", str(out)]) == 0
    xs = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", xs)
    sizes = record_pool_sizes(monkeypatch)
    capsys.readouterr()
    assert main(["run", str(out), str(tmp_path / "x.npy"), "--jobs", "500"]) == 0
    assert all(n <= 2 for n in sizes), sizes
    assert capsys.readouterr().out.count("top1") == 2


def test_jobs_below_one_is_bad_input():
    with pytest.raises(Exception, match="--jobs 0"):
        list(batch.imap(".", [1], lambda p, x: x, jobs=0))
