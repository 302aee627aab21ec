"""Ctrl-C during ``tccc run|eval --jobs N``: the worker processes ignore SIGINT and the parent
alone handles it (its KeyboardInterrupt terminates the pool, exit 130, one line).

Before, a terminal's Ctrl-C (SIGINT to the whole process group) raised KeyboardInterrupt in
every worker too: each printed ``Process ForkPoolWorker-N:`` and a traceback under the
parent's ``tccc: interrupted``, and a worker interrupted just after taking the task queue's
lock died holding it, so ``Pool.terminate()`` waited for it forever (Lite0 224, 720 photos,
``--jobs 2 --check``, SIGINT 15-18 s in: 2 hangs in 2 tries at ae74f5b; session 17 attack)."""

from __future__ import annotations

import multiprocessing as mp
import signal

import onnx
import pytest

from tcc_compiler.cli.main import main
from tcc_compiler.runtime import batch


def _job(prog, item):   # pragma: no cover - never called
    return item


def _child(folder: str, conn) -> None:
    batch._init_worker(folder, _job)
    conn.send(signal.getsignal(signal.SIGINT) == signal.SIG_IGN)
    conn.close()


@pytest.mark.skipif("fork" not in mp.get_all_start_methods(), reason="needs fork")
def test_pool_workers_ignore_sigint(tmp_path):
    from conftest import residual_net_impl

    model = tmp_path / "net.onnx"
    onnx.save(residual_net_impl(hw=16, c=4), str(model))
    out = tmp_path / "out"
    assert main(["-q", "compile", str(model), "--input", "16x16x3", "-o", str(out)]) == 0
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    # the child starts with this process's handler (pytest's: KeyboardInterrupt), as a pool
    # worker starts with the parent's
    assert signal.getsignal(signal.SIGINT) != signal.SIG_IGN
    p = ctx.Process(target=_child, args=(str(out), child))
    p.start()
    try:
        assert parent.poll(60), "worker initializer did not answer"
        assert parent.recv() is True, "a pool worker still takes SIGINT"
    finally:
        p.join(30)
        if p.is_alive():
            p.kill()
    assert p.exitcode == 0
