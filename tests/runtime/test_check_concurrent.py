"""``tccc run --check`` runs the executor, the golden integer model and ONNX Runtime side by
side (``Checker.start`` / ``run_checked``): the result is the serial one, a failing run
still waits for the worker threads, and the process-wide OpenBLAS thread count survives
concurrent ``blas_threads`` bodies."""

from __future__ import annotations

import threading

import numpy as np
import onnx
import pytest
from onnx import helper

from tcc_compiler import api
from tcc_compiler.numerics import blas
from tcc_compiler.quant.golden import run_golden
from tcc_compiler.runtime import load_program
from tcc_compiler.runtime.check import Checker, sqnr_db
from tests.conftest import make_model_impl

N = helper.make_node


@pytest.fixture(scope="module")
def checked(tmp_path_factory):
    """(program, checker, model proto, inputs) of a small conv-relu-conv-add network."""
    tmp = tmp_path_factory.mktemp("concurrent")
    r = np.random.default_rng(3)
    inits = {"w0": r.normal(0, 0.3, (8, 3, 3, 3)), "w1": r.normal(0, 0.3, (8, 8, 3, 3))}
    nodes = [N("Conv", ["x", "w0"], ["c"], pads=[1] * 4), N("Relu", ["c"], ["r"]),
             N("Conv", ["r", "w1"], ["d"], pads=[1] * 4), N("Add", ["d", "r"], ["y"])]
    model = make_model_impl(nodes, [1, 3, 16, 16], inits, opset=17)
    onnx.save(model, tmp / "m.onnx")
    xs = [r.normal(0, 1, (1, 3, 16, 16)).astype(np.float32) for _ in range(6)]
    prog = load_program(api.compile(model, "16x16x3", calibration=xs).save(tmp / "o"))
    chk = Checker(prog, tmp / "m.onnx")
    yield prog, chk, model, xs
    chk.close()


def test_side_by_side_equals_serial(checked):
    import onnxruntime as ort

    prog, chk, model, xs = checked
    sess = ort.InferenceSession(model.SerializeToString())
    for x in xs[:3]:
        res, got = chk.run_checked(x)
        # the serial figures, computed here without the checker's threads
        gold = run_golden(chk.graph, x)
        name = prog.manifest["outputs"][0]["name"]
        assert gold["int:" + name].tobytes() == res["int:" + name].tobytes()
        ref = sess.run(None, {"x": x})[0]
        q = prog.final_output(res)
        assert got == {"bit_exact": True, "sqnr_db": round(sqnr_db(ref, q), 3),
                       "top1_agree": int(np.argmax(ref)) == int(np.argmax(q))}
        assert chk.check(x, prog.run(x)) == got


def test_pending_of_another_input_is_not_used(checked):
    prog, chk, _, xs = checked
    stale = chk.start(xs[1])
    assert chk.check(xs[0], prog.run(xs[0]), stale) == chk.check(xs[0], prog.run(xs[0]))


def test_a_failing_run_waits_for_the_workers(checked):
    _, chk, _, xs = checked
    seen = []

    def run(x):
        raise RuntimeError("executor fault")

    real = chk.float_outputs

    def slow_float(x):
        out = real(x)
        seen.append("float done")
        return out

    chk.float_outputs = slow_float
    try:
        with pytest.raises(RuntimeError, match="executor fault"):
            chk.run_checked(xs[0], run)
    finally:
        del chk.float_outputs
    assert seen == ["float done"]   # waited for, not left running


def test_blas_threads_restored_after_overlapping_bodies():
    """This thread enters first and leaves while the other thread's body runs: the other
    keeps one thread (restoring the count saved on entry gave it the previous 2) and the
    count is restored when both have left."""
    api = blas._openblas()
    if api is None:
        pytest.skip("numpy does not use OpenBLAS here")
    setf, getf = api
    old = int(getf())
    setf(2)
    entered, left = threading.Event(), threading.Event()
    seen = []

    def other():
        with blas.blas_threads(1):
            entered.set()
            left.wait(10)
            seen.append(blas.get_blas_threads())

    try:
        with blas.blas_threads(1):
            t = threading.Thread(target=other)
            t.start()
            entered.wait(10)
        left.set()
        t.join()
        assert seen == [1]
        assert blas.get_blas_threads() == 2
    finally:
        setf(old)


def test_a_float_only_pending_is_not_taken_for_a_check(checked):
    """start(golden=False) (tccc eval's float model beside the executor) gives ORT's outputs;
    check() handed it starts the golden model itself."""
    prog, chk, model, xs = checked
    import onnxruntime as ort

    p = chk.start(xs[0], golden=False)
    ref = ort.InferenceSession(model.SerializeToString()).run(None, {"x": xs[0]})[0]
    assert p.golden is None and np.array_equal(p.floats.result()[0], ref)
    res = prog.run(xs[0])
    assert chk.check(xs[0], res, p) == chk.check(xs[0], res)


def test_float_model_threads_leave_two_cpus(checked):
    """ONNX Runtime's float model takes the CPUs the executor and golden model leave (at
    least one): its session is built with that many intra-op threads."""
    from tcc_compiler.runtime.batch import usable_cpus
    from tcc_compiler.runtime.check import float_threads

    assert [float_threads(n) for n in (1, 2, 3, 8)] == [1, 1, 1, 6]
    _, chk, _, _ = checked
    opts = chk.sess.get_session_options()
    assert opts.intra_op_num_threads == max(1, usable_cpus() - 2)


def _held_golden(chk, gate: threading.Event):
    """Make ``chk``'s golden model wait for ``gate`` (so the checks are still running while
    the executor's thread looks), each run for a set of its own (it clears the gate);
    returns the undo."""
    real = chk._golden_outputs

    def held(x):
        gate.wait(10)
        gate.clear()
        return real(x)

    chk._golden_outputs = held
    return lambda: delattr(chk, "_golden_outputs")


def _wait_for(cond) -> bool:
    """Whether ``cond()`` becomes true within a few seconds (a done-callback runs on the
    worker thread just after the future's waiters are woken)."""
    for _ in range(500):
        if cond():
            return True
        threading.Event().wait(0.01)
    return cond()


def test_executor_runs_on_one_thread_beside_the_checks(checked):
    """run_checked's executor computes every tile on its own thread while the golden and
    float models run (they take the other CPUs): the band split is off then, restored
    after, the result bit-exact."""
    from tcc_compiler.sim import conv_bands

    prog, chk, _, xs = checked
    seen, gate = [], threading.Event()

    def run(x):
        seen.append(conv_bands.threads())
        gate.set()
        return prog.run(x)

    old = conv_bands.set_threads(2)
    undo = _held_golden(chk, gate)
    try:
        assert chk.run_checked(xs[0], run)[1]["bit_exact"] is True
        assert seen == [1] and conv_bands.threads() == 2
    finally:
        undo()
        conv_bands.set_threads(old)


def test_the_split_comes_back_once_the_checks_are_done(checked):
    """When both checks have finished, the rest of the executor's run may split again
    (a CPU is free): the setting is restored before the body ends."""
    from tcc_compiler.runtime.check import executor_beside_checks
    from tcc_compiler.sim import conv_bands

    _, chk, _, xs = checked
    gate = threading.Event()
    old = conv_bands.set_threads(2)
    undo = _held_golden(chk, gate)
    try:
        p = chk.start(xs[0])
        with executor_beside_checks((p.golden, p.floats)):
            assert conv_bands.threads() == 1
            gate.set()
            p.golden.result()
            p.floats.result()
            assert _wait_for(lambda: conv_bands.threads() == 2)
        assert conv_bands.threads() == 2
        gate.set()
        done = chk.start(xs[1])
        done.golden.result()
        done.floats.result()
        with executor_beside_checks((done.golden, done.floats)):
            assert conv_bands.threads() == 2   # nothing left running: no change
    finally:
        undo()
        conv_bands.set_threads(old)


def test_overlapping_beside_bodies_restore_the_threads():
    """Two threads' bodies overlap: the split stays off until the last leaves, then the
    setting from before the first is back."""
    from tcc_compiler.runtime.check import executor_beside_checks
    from tcc_compiler.sim import conv_bands

    old = conv_bands.set_threads(2)
    entered, left = threading.Event(), threading.Event()
    seen = []

    def other():
        with executor_beside_checks():
            entered.set()
            left.wait(10)
            seen.append(conv_bands.threads())

    try:
        with executor_beside_checks():
            t = threading.Thread(target=other)
            t.start()
            entered.wait(10)
        seen.append(conv_bands.threads())   # the other body is still inside
        left.set()
        t.join()
        assert seen == [1, 1] and conv_bands.threads() == 2
    finally:
        conv_bands.set_threads(old)


def test_cli_checked_runs_take_one_thread(checked, monkeypatch):
    """tccc run --check (one job): each input's executor run starts with the split off
    while its checks run."""
    from types import SimpleNamespace

    from tcc_compiler.cli.commands.run import _runs
    from tcc_compiler.runtime import batch
    from tcc_compiler.sim import conv_bands

    prog, chk, _, xs = checked
    seen, gate = [], threading.Event()

    def run_input(p, x, schedule, seed):   # the executor run of each input
        seen.append(conv_bands.threads())
        gate.set()
        return prog.run(x)

    monkeypatch.setattr(batch, "run_input", run_input)
    args = SimpleNamespace(jobs=1, schedule="inorder", seed=0, dir=str(prog.folder))
    old = conv_bands.set_threads(2)
    undo = _held_golden(chk, gate)
    try:
        for x, res, pending in _runs(prog, xs[:2], args, chk):
            assert chk.check(x, res, pending)["bit_exact"] is True
        assert seen == [1, 1] and conv_bands.threads() == 2
    finally:
        undo()
        conv_bands.set_threads(old)


def test_the_checker_golden_model_is_made_for_repeat_runs(checked):
    """The checker's golden model runs on every input: it is made with ``repeat`` (its small
    GEMMs' weights packed once, quant/golden.py)."""
    _, chk, _, xs = checked
    chk.run_checked(xs[0])
    assert chk._golden._repeat is True
