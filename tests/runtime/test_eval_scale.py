"""``tccc eval`` at scale (issue #18): ``--jobs`` capped at the samples and the CPUs, progress
with an ETA on stderr, and ``--ray`` giving the local run's results (or one line without Ray)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from helpers.cli import one_line_error, run_cli
from test_eval import _tiny_impl

from tcc_compiler.runtime import batch
from tests.helpers.pools import record_pool_sizes


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, residual_net):
    """(dataset folder, eval argv without options): a compiled 16x16 net, 12 labelled images."""
    d = _tiny_impl(tmp_path_factory.mktemp("eval_scale"), residual_net)
    return d, ["eval", d / "out", "--images", d, "--labels", d / "labels.txt",
               "--check", d / "m.onnx", "--json"]


def test_eval_jobs_500_starts_at_most_one_worker_per_sample_and_cpu(tiny, capsys, monkeypatch):
    _, argv = tiny
    code, out, _ = run_cli(argv, capsys)
    assert code == 0
    local = json.loads(out)
    sizes = record_pool_sizes(monkeypatch)
    code, out, _ = run_cli(argv + ["--jobs", "500"], capsys)
    assert code == 0
    assert json.loads(out) == local
    assert sizes == ([min(12, batch.usable_cpus())] if batch.usable_cpus() > 1 else [])


def test_eval_progress_bar_with_eta_on_a_terminal_and_not_with_q(tiny, capsys, monkeypatch):
    _, argv = tiny
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    code, _, err = run_cli(argv, capsys)
    assert code == 0
    assert "/12 [" in err and "<" in err, err   # done/total [elapsed<remaining, rate]
    code, _, err = run_cli(["-q"] + argv, capsys)
    assert code == 0 and "/12" not in err


def test_ray_without_ray_installed_is_one_line_bad_input(tiny, capsys, monkeypatch):
    _, argv = tiny
    monkeypatch.setitem(sys.modules, "ray", None)   # import ray -> ImportError
    code, out, err = run_cli(argv + ["--ray", "auto"], capsys)
    assert code == 2 and out == ""
    assert "tccc[ray]" in one_line_error(err)


@pytest.mark.slow
def test_ray_results_equal_the_local_run(tiny, capsys):
    ray = pytest.importorskip("ray")
    _, argv = tiny
    code, out, _ = run_cli(argv, capsys)
    assert code == 0
    local = json.loads(out)
    try:   # Ray's local mode where the installed Ray still has it, else a local instance
        ray.init(local_mode=True, include_dashboard=False, log_to_driver=False)
    except RuntimeError:
        import tcc_compiler

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"py_modules": [str(Path(tcc_compiler.__file__).parent)]})
    try:
        code, out, err = run_cli(argv + ["--ray", "auto"], capsys)
        assert code == 0, err
        assert json.loads(out) == local
        code, out, err = run_cli(argv + ["--ray", "auto", "--jobs", "1", "--limit", "5"],
                                 capsys)
        assert code == 0, err
        assert json.loads(out)["samples"] == 5
    finally:
        ray.shutdown()
