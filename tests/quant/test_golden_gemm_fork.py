"""A process forked while another thread of its parent holds ``golden_gemm``'s session lock
(a checker warming its golden model on a worker thread, say) still builds its own session:
``_forget`` gives the child a fresh lock with the fresh state. Before, the child's copy of
the lock stayed held by a thread that does not exist there, and its first golden conv
waited forever (session 17 attack, found reading ``register_at_fork``)."""

from __future__ import annotations

import multiprocessing as mp

import numpy as np
import pytest

from tcc_compiler.quant import golden_gemm


def _child(conn) -> None:
    golden_gemm._session()   # builds this process's session (or None): must not block
    gw = golden_gemm.prepare_weights(np.ones((2, 1, 1, 3), np.int8))
    acc = golden_gemm.accumulator((1, 1, 3), np.int8, -128, gw)
    conn.send(np.asarray(acc(np.full((1, 1, 3), 5, np.int8))).tolist())
    conn.close()


@pytest.mark.skipif("fork" not in mp.get_all_start_methods(), reason="needs fork")
def test_child_forked_under_the_session_lock_builds_its_session():
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    with golden_gemm._lock:   # held across the fork, as by another thread
        p = ctx.Process(target=_child, args=(child,))
        p.start()
    try:
        assert parent.poll(60), "the forked child blocked on the inherited session lock"
        # unshifted sums of x + 128 = 133 over 3 taps of weight 1
        assert parent.recv() == [[[399, 399]]]
    finally:
        if p.is_alive():
            p.kill()
        p.join(30)
