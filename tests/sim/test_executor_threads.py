"""One executor (one loaded folder, one ``tc.load`` model) run from several threads: each
run's SRAM, DRAM regions, layer registers and provenance are the executor's own attributes,
so two runs at once must not interleave. A run that starts while another is inside the
command loop waits for it (``Executor.run_with_stats`` holds the executor's lock); both give
the bytes they give alone."""

from __future__ import annotations

import threading

import numpy as np

from tcc_compiler.isa import commands as C
from tcc_compiler.runtime import load_program


def test_a_second_thread_does_not_run_inside_a_run(small_folder):
    _, out = small_folder
    prog = load_program(out)
    ex = prog.executor
    n = ex.cmd.input_bytes
    a, b = bytes(range(256)) * (n // 256) + bytes(n % 256), bytes([7]) * n
    ref_a, ref_b = ex.run(a), ex.run(b)
    assert ref_a != ref_b
    k = next(i for i, c in enumerate(ex.cmd.commands) if isinstance(c, C.ConvTile))
    step = ex._steps[k]
    got_b: list[bytes] = []
    other = threading.Thread(target=lambda: got_b.append(ex.run(b)))
    started = []

    def hooked(i, cmd, stats):
        # the first conv tile of run A starts run B on another thread; B may not execute a
        # command of its own before A ends. Without the lock B runs to the end here, over
        # A's SRAM and ACT region; with it, B waits and the join below times out.
        if not started:
            started.append(True)
            other.start()
            other.join(timeout=2.0)
        step(i, cmd, stats)

    ex._steps[k] = hooked
    ex._replay = None   # run A takes the general loop, whose steps the hook replaces
    try:
        got_a = ex.run(a)
        other.join()
    finally:
        ex._steps[k] = step
    assert got_a == ref_a
    assert got_b == [ref_b]


def test_the_api_model_from_four_threads(small_folder):
    import tcc_compiler as tc

    _, out = small_folder
    m = tc.load(out)
    rng = np.random.default_rng(3)
    xs = [rng.standard_normal((1, 3, 16, 16)).astype(np.float32) for _ in range(4)]
    ref = [m.run(x) for x in xs]
    bad: list[tuple[int, int]] = []

    def work(k: int) -> None:
        for r in range(8):
            j = (k + r) % 4
            if not np.array_equal(m.run(xs[j]), ref[j]):
                bad.append((k, j))

    ts = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert bad == []
