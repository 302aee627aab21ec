"""``tccc run --check``: simulator vs golden integer model vs float model (ONNX Runtime).

* ``bit_exact``: every byte of every NPU output of the reference executor equals the golden
  integer model computed from the quantized IR saved with the binaries; for a segmented
  model, of every NPU segment, each given the same input it was fed in the run; for a
  ``--cores 2`` folder, also every image of its stream program (npu_cmd_stream.bin, run on
  copies of the input) equals the main program's outputs.
* ``sqnr_db``: 10 log10(sum f^2 / sum (f - q)^2) of the dequantized final output q against
  ONNX Runtime's float output f; ``sqnr_db_outputs`` (models with several graph outputs, e.g.
  YOLO-seg's boxes and mask prototypes): the same per graph output, by name.
* ``top1_agree``: argmax of both final outputs agree.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnx.version_converter

from tcc_compiler.sim.blas import blas_threads
from tcc_compiler.errors import FormatError, InputError, first_line
from tcc_compiler.fsutil import file_sha256
from tcc_compiler.runtime.batch import usable_cpus
from tcc_compiler.runtime.loaded import LoadedProgram
from tcc_compiler.sim import conv_bands

log = logging.getLogger(__name__)
IR_FILE = "quantized.tir"


def sqnr_db(ref: np.ndarray, test: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio in dB; +inf when identical, -inf for a zero signal.
    Elements where ``ref`` or ``test`` is NaN or +-inf (a Log or Sqrt of a negative value, in
    the float model or in a host segment) are left out; NaN when none is finite in both."""
    ref = np.asarray(ref, np.float64).reshape(-1)
    test = np.asarray(test, np.float64).reshape(-1)
    finite = np.isfinite(ref) & np.isfinite(test)
    if not finite.all():
        if not finite.any():
            return float("nan")
        ref, test = ref[finite], test[finite]
    err = ref - test
    s, n = float((ref ** 2).sum()), float((err ** 2).sum())
    if n == 0.0:
        return float("inf")
    if s == 0.0:
        return float("-inf")
    return 10.0 * np.log10(s / n)


def _with_input_dims(model, inp: dict):
    """The float model with its image input fixed to the compiled size (as the compiler did for
    ``--input``), so a model exported at another resolution checks at the compiled one.

    Raises:
        InputError: the model cannot be read, or its input rank/channels differ from the
            compiled program's (not the model the folder was compiled from).
    """
    from tcc_compiler.frontend.loader import load_onnx, set_input_dims

    proto = load_onnx(model)
    inits = {i.name for i in proto.graph.initializer}
    ins = [i for i in proto.graph.input if i.name not in inits]
    shape = list(inp["shape"])
    if inp.get("onnx_layout") == "NHWC" and len(shape) == 4:
        shape = [shape[0], shape[2], shape[3], shape[1]]
    if len(ins) != 1 or len(ins[0].type.tensor_type.shape.dim) not in (0, len(shape)):
        raise InputError(f"{model}: its inputs do not match the compiled program's "
                         f"{inp['shape']} (is this the model the folder was compiled from?)")
    dims = ins[0].type.tensor_type.shape.dim
    ch_axis = 3 if inp.get("onnx_layout") == "NHWC" else 1
    if len(dims) == len(shape) and dims[ch_axis].HasField("dim_value") \
            and dims[ch_axis].dim_value != shape[ch_axis]:
        raise InputError(f"{model}: channel mismatch: the model's input takes "
                         f"{dims[ch_axis].dim_value}, the compiled program's {shape[ch_axis]} "
                         "channels (is this the model the folder was compiled from?)")
    set_input_dims(proto, ins[0], shape)
    return proto


def float_threads(cpus: int | None = None) -> int:
    """ONNX Runtime's intra-op threads for the float model of ``--check``: the CPUs
    (``cpus``, default :func:`~tcc_compiler.runtime.batch.usable_cpus`) the executor (the
    calling thread) and the golden model (a worker thread) leave, at least 1.

    Why: ORT splits each op over its threads and waits for all of them; beside the two busy
    threads of a 2-CPU machine the split buys no time and costs CPU. Measured on this 2-CPU
    machine (shared: the benchmark's autogroup at nice -20), CPU ms per image: the float
    model alone, EfficientNet-Lite0 224 4.5-4.7 on one thread against 5.8-5.9 at ORT's
    default (0: a thread per core); ``run_checked`` per image (median of 24 / 60, one thread
    against the default): ResNet-50 224 39.6 against 46.1 ms, Lite0 13.6 against 13.2 ms
    (within the noise), its CPU 18.2 against 18.5 ms.
    """
    return max(1, int(usable_cpus() if cpus is None else cpus) - 2)


_beside_lock = threading.Lock()
_beside = [0, 2]   # [holders of executor_beside_checks, the band threads before the first]


def _beside_hold() -> None:
    with _beside_lock:
        if _beside[0] == 0:
            _beside[1] = conv_bands.set_threads(1)
        _beside[0] += 1


def _beside_release() -> None:
    with _beside_lock:
        _beside[0] -= 1
        if _beside[0] == 0:
            conv_bands.set_threads(_beside[1])


@contextmanager
def executor_beside_checks(checks: tuple = ()) -> Iterator[None]:
    """Executor runs inside the body compute each tile on their calling thread alone
    (:func:`~tcc_compiler.sim.conv_bands.set_threads` ``(1)``) until the futures ``checks``
    (the golden and float models of :meth:`Checker.start`; None entries ignored; none given:
    the whole body) have all finished, or the body ends; the setting from before is back
    when the last of several overlapping holders (other threads) lets go.

    Why: beside the golden model (a worker thread) and the float model (every CPU they leave,
    :func:`float_threads`) no CPU is free for the executor's band helper, so splitting a tile
    only adds the hand-off's CPU to a run whose time is set by the CPU of the three; once
    both checks are done, a CPU is free again and the rest of the run may split.
    Measured on this 2-CPU machine (loaded; process CPU per image, median of 60 alternating
    runs): EfficientNet-Lite0 224's executor alone 8.45 ms on two threads against 6.83 on
    one; ``run_checked`` 20.2 against 18.9 ms (150 alternating runs), ResNet-50 224 84.2
    against 82.5 ms (40). The bytes are the same either way (sim/conv_bands.py).
    """
    _beside_hold()
    state = {"held": True, "left": 0}
    flag = threading.Lock()

    def release() -> None:
        with flag:
            if not state["held"]:
                return
            state["held"] = False
        _beside_release()

    def one_done(_future) -> None:
        with flag:
            state["left"] -= 1
            last = state["left"] == 0
        if last:
            release()

    futures = [f for f in checks if f is not None]
    state["left"] = len(futures)
    for f in futures:   # called at once when already done
        f.add_done_callback(one_done)
    try:
        yield
    finally:
        release()


#: Opset an old model is converted to when ONNX Runtime has no kernel for its own (ORT dropped
#: e.g. AveragePool-1 and BatchNormalization-6; the pytorch-converted models of the onnx wheel
#: use them). 13: the oldest opset whose kernels ORT keeps for every op tccc converts.
REFERENCE_OPSET = 13


def _ort_session(proto, so, model):
    """An ONNX Runtime session of the float model; a model whose old opset ORT no longer runs
    is first converted to :data:`REFERENCE_OPSET` by onnx's version converter (the float
    reference must not decide whether a compiled model can be checked).

    Raises:
        InputError: ORT cannot load the model, even converted.
    """
    import onnxruntime as ort

    def session(p):
        return ort.InferenceSession(p.SerializeToString(), so,
                                    providers=["CPUExecutionProvider"])

    try:
        return session(proto)
    except Exception as exc:  # ORT raises its own exception types
        first = exc
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is not None and opset < REFERENCE_OPSET:
        try:
            converted = onnx.version_converter.convert_version(proto, REFERENCE_OPSET)
            sess = session(converted)
        except Exception as exc:  # the converter and ORT raise assorted errors
            log.debug("%s: opset %d -> %d conversion for ONNX Runtime failed: %s", model,
                      opset, REFERENCE_OPSET, exc)
        else:
            log.info("%s: ONNX Runtime runs it converted from opset %d to %d", model, opset,
                     REFERENCE_OPSET)
            return sess
    raise InputError(f"{model}: ONNX Runtime cannot load it "
                     f"({first_line(first)})") from None


def refuse_other_model(model: str | os.PathLike, manifest: dict, needs: str) -> None:
    """Refuse ``model`` when it is not the ONNX file the folder of ``manifest`` was compiled
    from (its sha256 differs from ``model.sha256``): comparing with another network means
    nothing. A folder compiled from a ``.tir`` dump records the dump's sha256, so it cannot be
    confirmed and is only logged. ``needs``: the command, for the message.

    Raises:
        InputError: another model.
    """
    rec = manifest.get("model", {}) if isinstance(manifest, dict) else {}
    want, source = rec.get("sha256"), str(rec.get("source", ""))
    if not want or file_sha256(model) == want:
        return
    if source.endswith(".tir"):
        log.info("%s: cannot confirm it is the source of this folder (compiled from the IR "
                 "file %s, whose sha256 the manifest records)", model, source)
        return
    raise InputError(f"{model}: not the model this folder was compiled from ({source or '?'}: "
                     f"its sha256 differs from manifest.json's model.sha256); {needs} needs "
                     "that same .onnx file")


def _check_input_quant(prog: LoadedProgram, graph) -> None:
    """Refuse a folder whose manifest.json quantizes the input (``input.scale`` /
    ``zero_point``, what the executor uses) otherwise than quantized.tir (what the golden
    model uses): an edited folder, which made ``run --check`` report bit_exact=false and exit
    1 with no error line.

    Raises:
        FormatError: the two differ (names both files and the values).
    """
    inp, q = prog.manifest["input"], graph.inputs[0].quant
    try:
        scale = np.asarray(inp["scale"], np.float64)
        zp = np.asarray(inp["zero_point"], np.int64)
        same = q is not None and all(np.array_equal(*np.broadcast_arrays(a, b))
                                     for a, b in ((scale, q.scale), (zp, q.zero_point)))
    except (KeyError, TypeError, ValueError):
        same = False
    if not same:
        tir = (f"scale {q.scale.tolist()}, zero_point {q.zero_point.tolist()}" if q is not None
               else "none")
        raise FormatError(f"{Path(prog.folder) / 'manifest.json'}: input scale "
                          f"{inp.get('scale')} / zero_point {inp.get('zero_point')} differ from "
                          f"{IR_FILE}'s input quantization ({tir}); the folder was edited: "
                          "compile again")


@dataclass(frozen=True)
class Pending:
    """The golden model's and the float model's work on one input, running on
    :class:`Checker`'s worker threads (:meth:`Checker.start`).

    Attributes:
        x: the float NCHW input. golden: future of the golden model's outputs (None for a
            segmented model, whose segments are checked from the run). floats: future of ONNX
            Runtime's outputs (graph order).
    """

    x: np.ndarray
    golden: Future | None
    floats: Future

    def wait(self) -> None:
        """Wait for both to finish (their errors dropped: used when the run itself failed)."""
        for f in (self.golden, self.floats):
            if f is not None:
                f.exception()


class Checker:
    """Holds the golden graph and the ONNX Runtime session for repeated checks.

    Args:
        prog: the loaded program. model: path to the float ONNX model.

    Raises:
        InputError: the model cannot be loaded by ONNX Runtime, the IR file is missing, or
            the model's sha256 differs from the one manifest.json records (another model;
            a folder compiled from a ``.tir`` dump cannot be confirmed and is only logged).
    """

    def __init__(self, prog: LoadedProgram, model: str | os.PathLike):
        import onnxruntime as ort

        from tcc_compiler.ir.text import load_ir

        self.prog = prog
        self.segmented = bool(getattr(prog, "segmented", False))
        # a segmented model: one golden graph per NPU segment (runtime/segmented.py)
        self.graph = None if self.segmented else load_ir(Path(prog.folder) / IR_FILE)
        if self.graph is not None:
            _check_input_quant(prog, self.graph)
        self._golden = None
        self._golden_lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None   # start()'s worker threads
        self._pool_pid = 0   # the process that started them
        self._stream_ex = None   # the stream program's executor (--cores 2), built once
        if not Path(model).is_file():
            what = "not a file" if Path(model).exists() else "no such file"
            raise InputError(f"{model}: {what} (--check needs the float ONNX model)")
        so = ort.SessionOptions()
        so.log_severity_level = 3
        # ORT's intra-op threads spin for a while after each run by default, taking a core
        # from the executor and golden model that run next in this process (measured on
        # ResNet-50, loaded: the executor's CPU time 2.5x); the float model itself is not
        # slowed by waking them
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.intra_op_num_threads = float_threads()
        # outside the try: its InputError (wrong channel count/rank) already says what is wrong
        proto = _with_input_dims(model, prog.manifest["input"])
        self.sess = _ort_session(proto, so, model)
        self.in_name = self.sess.get_inputs()[0].name
        refuse_other_model(model, prog.manifest, "--check")

    def float_output(self, x: np.ndarray) -> np.ndarray:
        """ONNX Runtime's first output for float NCHW input ``x``."""
        return self.float_outputs(x)[0]

    def float_outputs(self, x: np.ndarray) -> list[np.ndarray]:
        """ONNX Runtime's outputs (graph order) for float NCHW input ``x``."""
        feed = x
        if self.prog.manifest["input"].get("onnx_layout") == "NHWC":
            feed = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        return self.sess.run(None, {self.in_name: feed})

    def _stream_exact(self, x: np.ndarray, res: dict[str, np.ndarray]) -> bool:
        """Whether the folder's stream program gives each of its images the NPU outputs the
        main program gave ``x`` (:func:`~tcc_compiler.runtime.stream_check.stream_matches`)."""
        from tcc_compiler.runtime.stream_check import stream_matches
        from tcc_compiler.sim.executor import Executor

        sp = self.prog.stream
        if self._stream_ex is None:
            self._stream_ex = Executor(sp.cmd, sp.weights, self.prog.target)
        ints = {o["name"]: res["int:" + o["name"]] for o in self.prog.manifest["outputs"]}
        return stream_matches(sp, self._stream_ex, self.prog.quantize(x), ints)

    def _workers(self) -> ThreadPoolExecutor:
        """Two worker threads (built on first use): the golden model and ONNX Runtime, whose
        kernels (numba ``nogil``, ORT's MatMulInteger and float sessions) release the GIL."""
        if self._pool is None or self._pool_pid != os.getpid():
            # a forked child (eval --jobs N after an in-process eval) inherits the pool
            # object but not its threads: work queued there would never run
            self._pool = ThreadPoolExecutor(2, thread_name_prefix="tccc-check")
            self._pool_pid = os.getpid()
        return self._pool

    def _golden_outputs(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """The golden integer model's outputs for float NCHW ``x`` (weights prepared once)."""
        if self._golden is None:  # prepared once (weights, epilogue parameters)
            with self._golden_lock:
                if self._golden is None:
                    from tcc_compiler.quant.golden import GoldenModel

                    self._golden = GoldenModel(self.graph, repeat=True)
        with blas_threads(1):   # as the executor: BLAS threads only fight (sim/blas.py)
            return self._golden.run(x)

    def start(self, x: np.ndarray, golden: bool = True) -> Pending:
        """Start the golden model and ONNX Runtime's float model on ``x`` on worker threads,
        for :meth:`check` to collect: run the executor on this thread meanwhile (as
        :meth:`run_checked` does), so the three run side by side on a multi-core machine.
        Each computes exactly what it computes alone (its own arrays, no shared state), so
        the result is the serial one. ``golden`` False: the float model only (``tccc eval``;
        such a Pending cannot be handed to :meth:`check`)."""
        pool = self._workers()
        gold = None if self.segmented or not golden else pool.submit(self._golden_outputs, x)
        return Pending(x, gold, pool.submit(self.float_outputs, x))

    def run_checked(self, x: np.ndarray,
                    run: Callable[[np.ndarray], dict[str, np.ndarray]] | None = None
                    ) -> tuple[dict[str, np.ndarray], dict]:
        """``run(x)`` (default: the program's executor, :meth:`LoadedProgram.run`) on this
        thread while the golden model and ONNX Runtime run on worker threads; returns (the
        run's outputs, :meth:`check` of them), the same as ``check(x, run(x))``.

        Raises:
            What ``run`` or :meth:`check` raises (the worker threads are waited for first).
        """
        pending = self.start(x)
        try:
            with executor_beside_checks((pending.golden, pending.floats)):
                res = (run or self.prog.run)(x)
        except BaseException:
            pending.wait()
            raise
        return res, self.check(x, res, pending)

    def close(self) -> None:
        """Stop the worker threads (idle ones; a later :meth:`check` starts them again)."""
        if self._pool is not None and self._pool_pid == os.getpid():
            self._pool.shutdown(wait=True)
        self._pool = None

    def check(self, x: np.ndarray, res: dict[str, np.ndarray],
              pending: Pending | None = None) -> dict:
        """Compare one simulator result ``res`` (from LoadedProgram.run) for input ``x``.

        ``pending``: :meth:`start` of this same ``x`` (the golden model and float model
        already running); None starts them here, side by side.

        Raises:
            InputError: the float model's output size differs from the program's.
        """
        if pending is None or pending.x is not x or (pending.golden is None
                                                     and not self.segmented):
            pending = self.start(x)
        if self.segmented:
            from tcc_compiler.runtime.segmented import check_segments

            exact = check_segments(self.prog, res)
        else:
            gold = pending.golden.result()
            exact = True
            for o in self.prog.manifest["outputs"]:
                g = gold.get("int:" + o["name"])
                s = res["int:" + o["name"]]
                if g is None or g.reshape(-1).tobytes() != s.reshape(-1).tobytes():
                    exact = False
            if exact and self.prog.stream is not None:   # the --cores 2 stream binary too
                exact = self._stream_exact(x, res)
        fs = pending.floats.result()
        f = fs[0]
        q = self.prog.final_output(res)
        if f.size != q.size:
            raise InputError(f"the float model's output has {f.size} values, the compiled "
                             f"program's {q.size} (is this the model the folder was compiled "
                             "from?)")
        # sqnr_db is +inf when the outputs are equal: JSON writers turn it into null
        # (emit/jsonfmt.py), the text output prints "inf"
        out = {"bit_exact": exact, "sqnr_db": round(sqnr_db(f, q), 3),
               "top1_agree": bool(int(np.argmax(f)) == int(np.argmax(q)))}
        bad = {"float": sum(int(np.size(fo) - np.isfinite(fo).sum()) for fo in fs),
               "compiled": int(q.size - np.isfinite(q).sum())}
        if any(bad.values()):   # sqnr_db then covers the values finite in both only
            out["nonfinite_values"] = bad
            log.warning("NaN/inf output values (e.g. Log or Sqrt of a negative value): %d in the "
                        "float model's, %d in the compiled program's; sqnr_db compares the "
                        "values finite in both only", bad["float"], bad["compiled"])
        names = self.prog.manifest["graph_outputs"]
        if len(names) > 1:   # e.g. a segmentation head's boxes and mask prototypes
            out["sqnr_db_outputs"] = {
                name: round(sqnr_db(fo, res[name]), 3) if fo.size == res[name].size else None
                for name, fo in zip(names, fs) if name in res}
        return out
